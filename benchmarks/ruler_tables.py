"""Print the tables of a `longlm eval` results file (what the README's RULER tables come from), running nothing.

    python benchmarks/ruler_tables.py [benchmarks/results/ruler-smollm2.jsonl] [--L 8192] [--model smollm2]
    python benchmarks/ruler_tables.py --plot benchmarks/results/ruler-smollm2.png
    python benchmarks/ruler_tables.py --prompts     # the prompt styles side by side (longlm eval --prompt)
    python benchmarks/ruler_tables.py --summaries   # the summary task per decoding (--repetition-penalty ...)
    python benchmarks/ruler_tables.py --agreement   # answers that stay the plain model's answer at L/2

Cells are the mean score x 100 over the samples finished so far, with their count: a cell with fewer samples
than the others is still running (benchmarks/ruler_grid.sh resumes it).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from longlm_cli.defaults import PROMPT_STYLES  # noqa: E402
from longlm_cli.evaluation.grid import GRID_RESULT_FIELDS  # noqa: E402
from longlm_cli.evaluation.plots import plot_grid  # noqa: E402
from longlm_cli.evaluation.results import FIELD_DEFAULTS, load_results  # noqa: E402
from longlm_cli.evaluation.tables import aligned, format_grid  # noqa: E402

ORDER = ("none", "truncate", "selfextend", "selfextend+log", "dca", "dynamic", "yarn")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="?", default="benchmarks/results/ruler-smollm2.jsonl")
    parser.add_argument("--L", type=int, default=8192)
    parser.add_argument("--model", default="SmolLM2-135M-Instruct (embedded)")
    parser.add_argument("--decoding", default=None, help="only cases with this decoding (default: greedy)")
    parser.add_argument("--prompt", default="chat", help="only cases with this prompt style (default: chat)")
    parser.add_argument("--dtype", default="float32", help="only cases run in this dtype (default: float32)")
    parser.add_argument("--prompts", action="store_true", help="instead: each prompt style side by side")
    parser.add_argument("--summaries", action="store_true", help="instead: the summary task per decoding")
    parser.add_argument("--agreement", action="store_true", help="instead: answers that stay the plain model's at L/2")
    parser.add_argument("--plot", type=Path, help="also draw the results into this PNG")
    args = parser.parse_args()
    loaded = [
        r
        for r in load_results(Path(args.results), GRID_RESULT_FIELDS)
        if r.get("dtype", FIELD_DEFAULTS["dtype"]) == args.dtype
    ]
    if args.summaries:
        return print(summary_table([r for r in loaded if r["task"] == "summary"]))
    everything = [r for r in loaded if r.get("decoding") == args.decoding]
    if args.prompts:
        return print(prompt_table(everything))
    records = [r for r in everything if r.get("template", "chat") == args.prompt]
    if args.agreement:
        return print(agreement_table(records, args.L // 2))
    tasks = tuple(dict.fromkeys(r["task"] for r in records))
    lengths = tuple(sorted({r["length"] for r in records}))
    seen = {r["method"] for r in records}
    methods = tuple(m for m in ORDER if m in seen) + tuple(sorted(seen - set(ORDER)))
    print(format_grid(records, tasks=tasks, lengths=lengths, methods=methods, L=args.L, model=args.model))
    if args.plot:
        title = f"RULER on {args.model}, L={args.L:,}"
        plot_grid(records, args.plot, tasks=tasks, lengths=lengths, methods=methods, title=title)
    return None


def prompt_table(records: list[dict]) -> str:
    """Score x 100 (n) per task, length and method, one column per prompt style, where more than one ran."""
    styles = [s for s in PROMPT_STYLES if any(r.get("template", "chat") == s for r in records)]
    cells = {}
    for r in records:
        key = (r["task"], r["length"], r["method"])
        cells.setdefault(key, {}).setdefault(r.get("template", "chat"), []).append(r["score"])
    rows = [["task", "length", "method", *styles]]
    for (task, length, method), by_style in sorted(cells.items()):
        if len(by_style) > 1:
            shown = [f"{100 * sum(v) / len(v):.1f} ({len(v)})" if (v := by_style.get(s)) else "-" for s in styles]
            rows.append([task, f"{length:,}", method, *shown])
    return "\n".join(aligned(rows))


def agreement_table(records: list[dict], reference: int) -> str:
    """Per task, length and method: the samples whose answer begins with the same sentence as the plain model's
    answer to the same sample (same question, same expected answer) at ``reference`` tokens. Where the model
    itself scores low inside its window, this says how much of its own behaviour a method keeps beyond it,
    right or wrong, which a score of a few right answers cannot."""
    plain = {
        (r["task"], r["sample"]): r for r in records if r["length"] == reference and r["method"] == "none"
    }  # fmt: skip
    cells = {}
    for r in records:
        ref = plain.get((r["task"], r["sample"]))
        if r["length"] != reference and r["task"] != "summary" and ref and ref["answers"] == r["answers"]:
            same = _first_sentence(r["answer"]) == _first_sentence(ref["answer"])
            cells.setdefault((r["task"], r["length"]), {}).setdefault(r["method"], []).append(same)
    seen = {m for by_method in cells.values() for m in by_method}
    methods = [m for m in ORDER if m in seen] + sorted(seen - set(ORDER))
    rows = [["task", "length", *methods]]
    for (task, length), by_method in sorted(cells.items()):
        shown = [f"{sum(v)}/{len(v)}" if (v := by_method.get(m)) else "-" for m in methods]
        rows.append([task, f"{length:,}", *shown])
    title = f"answers whose first sentence is the plain model's at {reference:,} tokens on the same sample"
    return "\n".join([title, *aligned(rows)])


def _first_sentence(answer: str) -> str:
    """The answer up to its first sentence end or line break, case and spacing folded."""
    first = re.split(r"(?<=[.!?])\s|\n", answer.strip(), maxsplit=1)[0]
    return " ".join(first.split()).casefold()


def summary_table(records: list[dict]) -> str:
    """Facts kept and repetition x 100 (n) per length, method and decoding (greedy, or the repetition settings)."""
    cells = {}
    for r in records:
        cells.setdefault((r["length"], r["method"], r.get("decoding") or "greedy"), []).append(r)
    rows = [["length", "method", "decoding", "facts kept", "repeated 4-grams"]]
    for (length, method, decoding), rs in sorted(cells.items()):
        facts = 100 * sum(r["score"] for r in rs) / len(rs)
        loops = 100 * sum(r.get("repetition") or 0 for r in rs) / len(rs)
        rows.append([f"{length:,}", method, decoding, f"{facts:.1f} ({len(rs)})", f"{loops:.1f}"])
    return "\n".join(aligned(rows))


if __name__ == "__main__":
    main()
