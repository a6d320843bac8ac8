"""Document cache: a second question about the same ~16k-token document, against the first one's prefill.

    python benchmarks/doccache.py               # a few minutes on 2 CPU cores
    python benchmarks/doccache.py --tokens 8000 --max-new-tokens 8
    python benchmarks/doccache.py --then summarize   # the second run is `summarize`: one entry per document
    python benchmarks/doccache.py --small        # short documents: load an entry vs prefill (the minimum size)

Builds a document of about --tokens tokens by repeating samples/harbour-report.md under numbered section
headers, then on the embedded model (longlm_cli.runtime.models.load_model("default")):
  1. `ask` question 1: a cache miss; wall time and its prefill time (document + question);
  2. `ask` question 2 (a different question): a cache hit; wall time.
Prints ratio = second wall time / first prefill time (target <= 5%). The cache lives in a temporary directory,
so the user's cache is never touched and the first run always misses. Model loading is excluded from both.
--small instead times, for documents of 32 to 2,048 tokens, the prefill of the whole prompt without the cache,
with a miss (prefill and save) and with a hit (load), side by side: below the size where a hit stops paying,
longlm does not cache (DEFAULT_DOC_CACHE_MIN_TOKENS).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from longlm_cli.answer import answer_documents  # noqa: E402
from longlm_cli.doccache import DocCacheSettings  # noqa: E402
from longlm_cli.pipeline import ModelSettings  # noqa: E402
from longlm_cli.runtime.generate import SamplingSettings  # noqa: E402
from longlm_cli.runtime.models import load_model  # noqa: E402

SAMPLE = Path(__file__).resolve().parent.parent / "samples" / "harbour-report.md"
QUESTIONS = (
    "Which ships arrived at the harbour, and what did they carry?",
    "What does section 3 say about the lighthouse?",
)


def build_document(tokenizer, target: int) -> str:
    """Numbered copies of the sample report until the text has about ``target`` tokens."""
    sample = SAMPLE.read_text(encoding="utf-8")
    per_copy = len(tokenizer(sample)["input_ids"])
    parts = [f"## Section {i + 1}\n\n{sample}" for i in range(max(1, round(target / per_copy)))]
    return "\n\n".join(parts)


def _answer(loaded, task, doc, question, *, cache, device, max_new_tokens):
    return answer_documents(
        task,
        [str(doc)],
        question=question if task == "ask" else None,
        loaded=loaded,
        cache=cache,
        model=ModelSettings(model="default", device=device),
        sampling=SamplingSettings(max_new_tokens=max_new_tokens),
    )


def small_documents(loaded, device: str) -> None:
    """Prefill without the cache, with a miss and with a hit, for short documents, side by side."""
    print(f"{'document':>9} {'prompt':>7} {'no cache':>9} {'miss':>7} {'hit':>7}  (prefill seconds, {loaded.name})")
    for target in (32, 64, 128, 256, 512, 1024, 2048):
        with tempfile.TemporaryDirectory(prefix="longlm-doccache-small-") as work:
            doc = Path(work) / "report.md"
            doc.write_text(build_document(loaded.tokenizer, target)[: target * 4], encoding="utf-8")
            times = {}
            for name, cache in (
                ("off", DocCacheSettings(enabled=False)),
                ("miss", DocCacheSettings(directory=Path(work) / "kv", min_tokens=0)),
                ("hit", DocCacheSettings(directory=Path(work) / "kv", min_tokens=0)),
            ):
                answer = _answer(loaded, "ask", doc, QUESTIONS[0], cache=cache, device=device, max_new_tokens=1)
                assert answer.cache == name, (name, answer.cache)
                times[name] = answer.timings["prefill"]
            tokens = len(loaded.tokenizer(doc.read_text(encoding="utf-8"))["input_ids"])
            print(
                f"{tokens:>9,} {answer.prompt_tokens:>7,} {times['off']:>9.3f} {times['miss']:>7.3f} "
                f"{times['hit']:>7.3f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=16000, help="document length in tokens (about)")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--then", choices=("ask", "summarize"), default="ask", help="the second run")
    parser.add_argument("--small", action="store_true", help="short documents: load vs prefill")
    args = parser.parse_args()

    loaded = load_model("default", device=args.device)
    if args.small:
        small_documents(loaded, args.device)
        return
    with tempfile.TemporaryDirectory(prefix="longlm-doccache-bench-") as work:
        doc = Path(work) / "report.md"
        doc.write_text(build_document(loaded.tokenizer, args.tokens), encoding="utf-8")
        settings = DocCacheSettings(directory=Path(work) / "kv")
        runs = []
        for task, question in (("ask", QUESTIONS[0]), (args.then, QUESTIONS[1])):
            start = time.perf_counter()
            answer = _answer(
                loaded, task, doc, question, cache=settings, device=args.device, max_new_tokens=args.max_new_tokens
            )
            runs.append(
                dict(
                    task=task,
                    cache=answer.cache,
                    wall_s=time.perf_counter() - start,
                    prefill_s=answer.timings["prefill"],
                    decode_s=answer.timings["decode"],
                    prompt_tokens=answer.prompt_tokens,
                    W=answer.plan.W,
                    G=answer.plan.G,
                )
            )
        entry_bytes = sum(p.stat().st_size for p in (Path(work) / "kv").glob("*.safetensors"))
    first, second = runs
    ratio = second["wall_s"] / first["prefill_s"]
    result = dict(
        model=loaded.name,
        device=loaded.device,
        dtype=loaded.dtype,
        first=first,
        second=second,
        entry_bytes=entry_bytes,
        ratio_second_wall_to_first_prefill=round(ratio, 4),
        target=0.05,
    )
    print(json.dumps(result, indent=2))
    print(
        f"first ask ({first['cache']}): wall {first['wall_s']:.1f}s, prefill {first['prefill_s']:.1f}s for "
        f"{first['prompt_tokens']:,} tokens; then {second['task']} ({second['cache']}): wall {second['wall_s']:.2f}s; "
        f"ratio {ratio:.1%} (target <= 5%)"
    )
    if first["cache"] != "miss" or second["cache"] != "hit":
        sys.exit("unexpected cache status: the second ask should hit the entry the first one saved")


if __name__ == "__main__":
    main()
