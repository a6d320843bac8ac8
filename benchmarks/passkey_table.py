"""Print one combined accuracy table per method from `longlm passkey --results` files.

    python benchmarks/passkey_table.py benchmarks/results/passkey-table.jsonl benchmarks/results/passkey-16k.jsonl
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from longlm_cli.evaluate import METHODS, format_tables, load_results  # noqa: E402


def main(paths: list[str]) -> None:
    records = [r for p in paths for r in load_results(Path(p))]
    if not records:
        sys.exit("Error: no results in " + ", ".join(paths))
    methods = [m for m in METHODS if any(r["method"] == m for r in records)]
    print(format_tables(records, L=8192, lengths=sorted({r["length"] for r in records}),
                        depths=sorted({r["depth"] for r in records}), methods=methods,
                        task=records[0]["task"], model="SmolLM2-135M-Instruct (embedded)"))
    print(f"\n{len(records)} cases, {sum(r['seconds'] for r in records) / 60:.0f} min of wall time in all (cases run one after another)")


if __name__ == "__main__":
    main(sys.argv[1:])
