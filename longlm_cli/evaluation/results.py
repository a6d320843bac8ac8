"""The resumable results file: one JSON line per finished case, read back to skip cases already run."""

from __future__ import annotations

import json
from pathlib import Path

CASE_FIELDS = ("model", "task", "haystack", "method", "length", "depth", "trial", "seed", "W", "G", "factor")


def case_key(record: dict) -> tuple:
    """What identifies a case: two records with the same key are the same case."""
    return tuple(record.get(k) for k in CASE_FIELDS)


def load_results(path: Path) -> list[dict]:
    """The cases in a results file; unreadable lines (a run killed mid-write) are skipped."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def prepare_results(path: Path) -> None:
    """Create the file's directory; after a run killed mid-line, start the next record on a new line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.stat().st_size:
        with path.open("rb+") as out:
            out.seek(-1, 2)
            if out.read(1) != b"\n":
                out.write(b"\n")


def append_result(path: Path, record: dict) -> None:
    with path.open("a", encoding="utf-8") as out:
        out.write(json.dumps(record) + "\n")
