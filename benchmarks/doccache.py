"""Document cache: a second question about the same ~16k-token document, against the first one's prefill.

    python benchmarks/doccache.py               # a few minutes on 2 CPU cores
    python benchmarks/doccache.py --tokens 8000 --max-new-tokens 8
    python benchmarks/doccache.py --then summarize   # the second run is `summarize`: one entry per document
    python benchmarks/doccache.py --small        # short documents: load an entry vs prefill (the minimum size)
    python benchmarks/doccache.py --memory --tokens 32768   # peak memory of saving and loading an entry

Builds a document of about --tokens tokens by repeating samples/harbour-report.md under numbered section
headers, then on the embedded model (longlm_cli.runtime.loader.load_model("default")):
  1. `ask` question 1: a cache miss; wall time and its prefill time (document + question);
  2. `ask` question 2 (a different question): a cache hit; wall time.
Prints ratio = second wall time / first prefill time (target <= 5%). The cache lives in a temporary directory,
so the user's cache is never touched and the first run always misses. Model loading is excluded from both.
--small instead times, for documents of 32 to 2,048 tokens, the prefill of the whole prompt without the cache,
with a miss (prefill and save) and with a hit (load), side by side: below the size where a hit stops paying,
longlm does not cache (DEFAULT_DOC_CACHE_MIN_TOKENS).
--memory instead measures, each in a fresh process, the peak resident memory of saving the entry of a
--tokens-token cache shaped as Llama-3.2-1B's (16 layers, 8 key heads of 64, float32; a session's buffers with
room for an answer after it) and of loading it into a new session's cache, over the cache itself: what a
document entry costs at the end of a long prefill, when memory is tightest.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from longlm_cli.answering.answer import answer_documents  # noqa: E402
from longlm_cli.answering.pipeline import ModelSettings, Reading  # noqa: E402
from longlm_cli.doccache.store import DocCacheSettings  # noqa: E402
from longlm_cli.runtime.generate import SamplingSettings  # noqa: E402
from longlm_cli.runtime.loader import load_model  # noqa: E402

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
        reading=Reading(model=ModelSettings(model="default", device=device), loaded=loaded),
        cache=cache,
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


MEMORY_SHAPE = (16, 8, 64)  # Llama-3.2-1B: layers, key heads, head size


def _memory_step(step: str, directory: Path, tokens: int) -> dict:
    """One step of --memory in this (fresh) process: build a session-like cache and save it, or load it."""
    import torch
    from transformers import LlamaConfig

    from longlm_cli.doccache import store as doccache
    from longlm_cli.runtime.kvcache import growing_cache

    layers, heads, dim = MEMORY_SHAPE
    config = LlamaConfig(
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads, hidden_size=heads * dim
    )
    cache = growing_cache(config, reserve=tokens + 512)
    ids = list(range(tokens))
    key = "0" * 64
    if step == "save":
        for i in range(layers):
            block = torch.empty(1, heads, tokens, dim).fill_(0.5 + i)
            cache.update(block, block, i)
            del block
        before = resident_gib()
        start = time.perf_counter()
        doccache.save_entry(directory, key, cache, ids, ["doc"])
    else:
        before = resident_gib()
        start = time.perf_counter()
        assert doccache.load_entry(directory, key, ids, cache, config=config, dtype=torch.float32, device="cpu")
    seconds = time.perf_counter() - start
    held = doccache.entry_size(cache, 0) / 2**30
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    base = before if step == "save" else before + held  # save: over the built cache; load: over the filled one
    return {"step": step, "seconds": seconds, "cache_gib": held, "peak_over_gib": peak - base}


def resident_gib() -> float:
    import os

    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30


def memory(tokens: int) -> None:
    """Save, then load, each in a fresh process: peak RSS over the cache."""
    with tempfile.TemporaryDirectory(prefix="longlm-doccache-memory-") as work:
        for step in ("save", "load"):
            out = subprocess.run(
                [sys.executable, __file__, "--memory-step", step, "--memory-dir", work, "--tokens", str(tokens)],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            r = json.loads(out.stdout.splitlines()[-1])
            print(
                f"{step} an entry of {tokens:,} tokens ({r['cache_gib']:.2f} GiB of keys and values):"
                f" peak {r['peak_over_gib']:+.2f} GiB over the cache, {r['seconds']:.2f} s",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=16000, help="document length in tokens (about)")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--then", choices=("ask", "summarize"), default="ask", help="the second run")
    parser.add_argument("--small", action="store_true", help="short documents: load vs prefill")
    parser.add_argument("--memory", action="store_true", help="peak memory of saving and loading an entry")
    parser.add_argument("--memory-step", choices=("save", "load"), help=argparse.SUPPRESS)
    parser.add_argument("--memory-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_step:
        print(json.dumps(_memory_step(args.memory_step, args.memory_dir, args.tokens)))
        return
    if args.memory:
        memory(args.tokens)
        return

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
