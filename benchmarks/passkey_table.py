"""Print one combined accuracy table per method from `longlm passkey --results` files.

python benchmarks/passkey_table.py benchmarks/results/passkey-table.jsonl
python benchmarks/passkey_table.py --cases benchmarks/results/passkey-32k-probe.jsonl   # one line per case
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from longlm_cli.evaluation.methods import METHODS  # noqa: E402
from longlm_cli.evaluation.results import load_results  # noqa: E402
from longlm_cli.evaluation.tables import format_tables  # noqa: E402


def case_lines(records: list[dict]) -> str:
    """Every case on its own line: settings, key, answer, verdict and time."""
    lines = []
    for r in records:
        setting = f"W={r['W']} G={r['G']}" if r.get("G") else (f"factor={r['factor']:g}" if r.get("factor") else "")
        lines.append(
            f"{r['method']:<10} {setting:<13} length={r['length']:,} depth={r['depth']:g} "
            f"trial={r['trial']} expected={r['expected']} {'correct' if r['correct'] else 'wrong  '} "
            f"{r['answer']!r} ({r['seconds']:.0f} s)"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+")
    parser.add_argument("--cases", action="store_true", help="one line per case instead of the tables")
    args = parser.parse_args()
    records = [r for p in args.files for r in load_results(Path(p))]
    if not records:
        sys.exit("Error: no results in " + ", ".join(args.files))
    if args.cases:
        print(case_lines(records))
        return
    methods = [m for m in METHODS if any(r["method"] == m for r in records)]
    print(
        format_tables(
            records,
            L=8192,
            lengths=sorted({r["length"] for r in records}),
            depths=sorted({r["depth"] for r in records}),
            methods=methods,
            task=records[0]["task"],
            model="SmolLM2-135M-Instruct (embedded)",
        )
    )
    print(
        f"\n{len(records)} cases, {sum(r['seconds'] for r in records) / 60:.0f} min of wall time in all "
        f"(cases run one after another)"
    )


if __name__ == "__main__":
    main()
