#!/usr/bin/env python
"""Report of benchmarks/method_choice.sh (issue 33, the default method beyond L): per task, each setting's score
over the samples every setting has finished (paired), and over all its own samples.

Settings: SelfExtend as planned (W = L/8, G planned for the length), SelfExtend 512x8, Dual Chunk Attention.
Cases: float32 weights and KV cache, the embedded model's 16-bit weights (--quantize none), RULER's chat prompt,
greedy. RULER tasks at 16k from benchmarks/results/ruler-smollm2.jsonl; the fact task at 14k from
benchmarks/results/fact-essays.jsonl (a sample there is a depth and a trial).

Usage: python benchmarks/method_choice.py [--markdown]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
RULER_TASKS = ("niah_single_2", "niah_multikey_1")


def setting(record: dict) -> str | None:
    """'selfextend WxG', 'dca', or None for a case outside the comparison."""
    if record.get("method") == "dca":
        return "dca"
    if record.get("method") == "selfextend" and record.get("scale_base") is None:
        given = record.get("W") is not None
        return f"selfextend {record['W']}x{record['G']}" if given else "selfextend as planned"
    return None


def _pinned(record: dict) -> bool:
    return (
        (record.get("dtype") or "float32") == "float32"
        and record.get("weights") in (None, "none")
        and record.get("kv_dtype") is None
    )


def ruler_cases() -> dict:
    """task -> setting -> sample -> score (0..1)."""
    found: dict = defaultdict(lambda: defaultdict(dict))
    for line in (RESULTS / "ruler-smollm2.jsonl").read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        if r.get("length") != 16384 or r.get("task") not in RULER_TASKS or not _pinned(r):
            continue
        if r.get("template") not in (None, "chat") or r.get("decoding") is not None or setting(r) is None:
            continue
        found[r["task"]][setting(r)][r["sample"]] = float(r["score"])
    return found


def fact_cases() -> dict:
    """'fact' -> setting -> (depth, trial) -> 1.0 or 0.0."""
    found: dict = defaultdict(lambda: defaultdict(dict))
    path = RESULTS / "fact-essays.jsonl"
    if not path.exists():
        return found
    for line in path.read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        if r.get("task") == "fact" and _pinned(r) and setting(r) is not None:
            found[f"fact {r['length']}"][setting(r)][(r["depth"], r["trial"])] = 1.0 if r["correct"] else 0.0
    return found


def table(cases: dict) -> list[tuple[str, str, int, float, int, float]]:
    """(task, setting, paired samples, paired score %, own samples, own score %) rows."""
    rows = []
    for task, by_setting in cases.items():
        paired = set.intersection(*(set(s) for s in by_setting.values())) if by_setting else set()
        for name, scores in sorted(by_setting.items()):
            own = 100 * sum(scores.values()) / len(scores)
            both = 100 * sum(scores[k] for k in paired) / len(paired) if paired else float("nan")
            rows.append((task, name, len(paired), both, len(scores), own))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    rows = table({**ruler_cases(), **fact_cases()})
    if args.markdown:
        print("| task | setting | paired samples | score on them | all its samples | score on all |")
        print("|---|---|---:|---:|---:|---:|")
        for task, name, n, both, m, own in rows:
            print(f"| {task} | {name} | {n} | {both:.0f}% | {m} | {own:.0f}% |")
        return
    for task, name, n, both, m, own in rows:
        print(f"{task:16} {name:20} paired {n:3} {both:5.0f}%   all {m:3} {own:5.0f}%")


if __name__ == "__main__":
    main()
