"""Document cache: a second question about the same ~16k-token document, against the first one's prefill.

    python benchmarks/doccache.py               # a few minutes on 2 CPU cores
    python benchmarks/doccache.py --tokens 8000 --max-new-tokens 8

Builds a document of about --tokens tokens by repeating samples/harbour-report.md under numbered section
headers, then on the embedded model (longlm_cli.runtime.models.load_model("default")):
  1. `ask` question 1: a cache miss; wall time and its prefill time (document + question);
  2. `ask` question 2 (a different question): a cache hit; wall time.
Prints ratio = second wall time / first prefill time (target <= 5%). The cache lives in a temporary directory,
so the user's cache is never touched and the first run always misses. Model loading is excluded from both.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=16000, help="document length in tokens (about)")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    loaded = load_model("default", device=args.device)
    with tempfile.TemporaryDirectory(prefix="longlm-doccache-bench-") as work:
        doc = Path(work) / "report.md"
        doc.write_text(build_document(loaded.tokenizer, args.tokens), encoding="utf-8")
        settings = DocCacheSettings(directory=Path(work) / "kv")
        runs = []
        for question in QUESTIONS:
            start = time.perf_counter()
            answer = answer_documents(
                "ask",
                [str(doc)],
                question=question,
                loaded=loaded,
                cache=settings,
                model=ModelSettings(model="default", device=args.device),
                sampling=SamplingSettings(max_new_tokens=args.max_new_tokens),
            )
            runs.append(
                dict(
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
        f"{first['prompt_tokens']:,} tokens; second ask ({second['cache']}): wall {second['wall_s']:.2f}s; "
        f"ratio {ratio:.1%} (target <= 5%)"
    )
    if first["cache"] != "miss" or second["cache"] != "hit":
        sys.exit("unexpected cache status: the second ask should hit the entry the first one saved")


if __name__ == "__main__":
    main()
