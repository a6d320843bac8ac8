"""The resumable results file: one JSON line per finished case, read back to skip cases already run.

The file is untrusted on the way back in: a line cut off by a killed run, a line that is not UTF-8 or not
JSON, or a record that lacks a field is not a finished case (the case runs again, with one warning). A file
that holds no result at all but is not empty is someone else's file: it is refused, never appended to.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TypeGuard

from ..errors import InputError
from ..report import warn

CASE_FIELDS = (
    "model",
    "task",
    "haystack",
    "method",
    "length",
    "depth",
    "trial",
    "seed",
    "W",
    "G",
    "factor",
    "scale_base",
    "dtype",
    "weights",
    "kv_dtype",
)
# Records written before cases carried their dtype were all float32 runs (benchmarks/results holds their
# files), so a record without one is keyed as float32: those runs resume, and a bfloat16 run never takes them.
# Likewise records without the weights' form ran with float weights ("none"), never with --quantize int4/int8.
# And records without a KV cache type kept it in their dtype, as every record whose kv_dtype is None does.
FIELD_DEFAULTS = {"dtype": "float32", "weights": "none", "kv_dtype": None}
# What a finished case must hold to be reported again: name -> accepted types.
RESULT_FIELDS = {
    "correct": (bool,),
    "answer": (str,),
    "expected": (str,),
    "tokens": (int,),
    "seconds": (int, float),
    "extended": (bool,),
}


def kv_dtype_field(loaded) -> str | None:
    """What a record says of ``loaded``'s KV cache type: None when it is the model's dtype (as before the cache
    could be kept narrower), else the type."""
    kv = getattr(loaded, "kv_dtype", None)
    return None if kv in (None, loaded.dtype) else kv


def case_key(record: dict, fields: tuple[str, ...] = CASE_FIELDS) -> tuple:
    """What identifies a case: two records with the same key are the same case."""
    return tuple(record.get(k, FIELD_DEFAULTS.get(k)) for k in fields)


def is_finished(record: object, required: dict = RESULT_FIELDS) -> TypeGuard[dict]:
    """Whether ``record`` is a complete finished case (every ``required`` field present with its type)."""
    if not isinstance(record, dict):
        return False
    return all(isinstance(record.get(k), types) for k, types in required.items())


def load_results(path: Path, required: dict = RESULT_FIELDS) -> list[dict]:
    """The finished cases in a results file; lines that are not a finished case are skipped."""
    if path.exists() and not path.is_file():  # a device such as /dev/full reads forever; a fifo blocks
        raise InputError(f"the results file {path} is not a regular file; give a file path")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise InputError(f"cannot read the results file {path}: {exc.strerror or exc}") from None
    lines = [line for line in data.splitlines() if line.strip()]
    records = [r for r in map(_parse, lines) if is_finished(r, required)]
    if lines and not records and not all(line.lstrip().startswith(b"{") for line in lines):
        raise InputError(
            f"{path} is not a longlm results file (no line is a finished case); give another --results path "
            "or remove it"
        )
    skipped = len(lines) - len(records)
    if skipped and not data.endswith(b"\n") and not is_finished(_parse(lines[-1]), required):
        skipped -= 1  # the last line of a run killed mid-write: expected, not worth a warning
    if skipped:
        warn(f"{skipped} line(s) of {path} are not finished cases; those cases run again")
    return records


def _parse(line: bytes) -> object:
    try:
        return json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None


def check_writable(path: Path, *, option: str) -> None:
    """Refuse, before any work, an output path that could not be written at the end of a long run."""
    if path.is_dir():
        raise InputError(f"{option} {path} is a directory; give a file path")
    parent = path.parent
    if not parent.is_dir():
        raise InputError(f"{option} {path}: the directory {parent} does not exist")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise InputError(f"{option} {path} is not writable")


def prepare_results(path: Path) -> None:
    """Create the file's directory; after a run killed mid-line, start the next record on a new line."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() and path.stat().st_size:
            with path.open("rb+") as out:
                out.seek(-1, 2)
                if out.read(1) != b"\n":
                    out.write(b"\n")
    except OSError as exc:
        raise InputError(f"cannot write the results file {path}: {exc.strerror or exc}") from None


def append_result(path: Path, record: dict) -> None:
    try:
        with path.open("a", encoding="utf-8") as out:
            out.write(json.dumps(record) + "\n")
    except OSError as exc:  # a full disk: the cases so far are kept, the run stops with one line
        raise InputError(f"cannot write the results file {path}: {exc.strerror or exc}") from None
