"""Passkey retrieval on the embedded SmolLM2-135M-Instruct (L=8192), with and without SelfExtend.

    python benchmarks/passkey.py                       # 14k tokens, depth 0.5, W=1024 G=4 (about 6 minutes)
    python benchmarks/passkey.py --length 14000 --depths 0.25,0.5,0.75 --keys 2

The prompt is the paper's: a task line, the key line hidden at a depth inside repeated filler, then
"What is the pass key? The pass key is" (plain completion, no chat template). Greedy decoding of a few
tokens; a hit is an exact match of the first number in the answer.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from longlm_cli.generate import SamplingSettings, Session, decode, prefill  # noqa: E402
from longlm_cli.models import load_model  # noqa: E402
from longlm_cli.passkey import build_prompt, found_key, random_key  # noqa: E402
from longlm_cli.selfextend import apply_selfextend, remove_selfextend  # noqa: E402


def run_one(loaded, ids, extended: bool, window: int, group: int) -> tuple[str, float]:
    if extended:
        apply_selfextend(loaded.model, group_size=group, window=window)
    else:
        remove_selfextend(loaded.model)
    start = time.perf_counter()
    session = Session.start(loaded.model)
    logits = prefill(session, ids)
    answer = decode(session, loaded.tokenizer, logits, settings=SamplingSettings(max_new_tokens=8)).text
    return answer, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--length", type=int, default=14000)
    parser.add_argument("--depths", default="0.5")
    parser.add_argument("--keys", type=int, default=1, help="random keys per depth")
    parser.add_argument("--window", type=int, default=1024)
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", default="selfextend,none")
    args = parser.parse_args()

    loaded = load_model("default", device="cpu", dtype="float32")
    tokenizer = loaded.tokenizer
    rng = random.Random(args.seed)
    print(f"model {loaded.name}, L={loaded.context_window}, W={args.window}, G={args.group_size}", flush=True)
    for depth in [float(d) for d in args.depths.split(",")]:
        for _ in range(args.keys):
            key = random_key(rng)
            prompt = build_prompt(lambda t: len(tokenizer(t)["input_ids"]), args.length, depth=depth, key=key)
            ids = torch.tensor([tokenizer(prompt.text)["input_ids"]])
            for method in args.methods.split(","):
                answer, seconds = run_one(loaded, ids, method == "selfextend", args.window, args.group_size)
                verdict = "correct" if found_key(answer, key) else "wrong"
                print(f"{method:>10}  tokens={ids.shape[1]}  depth={depth:.2f}  key={key}  answer={answer.strip()!r}"
                      f"  {verdict}  ({seconds:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
