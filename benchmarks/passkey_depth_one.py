"""Why the passkey at depth 1 fails for every method: a check on the plain model, well inside its window.

At depth 1 the paper's prompt ends "... The pass key is 26422. Remember it. 26422 is the pass key. What is the
pass key? The pass key is". This runs the plain embedded model (no extension; the prompt fits in L) on that
prompt and on three small variants with the same key:

  paper        the prompt as `longlm passkey` builds it at depth 1
  newline      the same, with a newline instead of a space before the question
  one filler   one filler sentence between the key line and the question
  depth 0.95   the key line at depth 0.95 instead of 1

    python benchmarks/passkey_depth_one.py [--length 2048] [--keys 26422,51929,65586]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from longlm_cli.defaults import DEFAULT_EVAL_NEW_TOKENS
from longlm_cli.evaluation.methods import greedy_answer
from longlm_cli.evaluation.passkey import FILLER_SENTENCES, QUESTION, found_key, passkey_prompt
from longlm_cli.runtime.loader import load_model


def variants(count, length: int, key: str) -> dict[str, str]:
    paper = passkey_prompt(count, length, depth=1.0, key=key).text
    assert paper.endswith(" " + QUESTION)
    return {
        "paper": paper,
        "newline": paper.replace(" " + QUESTION, "\n" + QUESTION),
        "one filler": paper.replace(" " + QUESTION, f" {FILLER_SENTENCES[0]} {QUESTION}"),
        "depth 0.95": passkey_prompt(count, length, depth=0.95, key=key).text,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--length", type=int, default=2048)
    parser.add_argument("--keys", default="26422,51929,65586")
    args = parser.parse_args()
    loaded = load_model("smollm2", device="cpu")
    tokenizer, model = loaded.tokenizer, loaded.model
    count = lambda text: len(tokenizer(text)["input_ids"])
    print(
        f"plain SmolLM2-135M-Instruct (L={loaded.context_window:,}), {args.length:,}-token prompts, greedy, "
        f"{DEFAULT_EVAL_NEW_TOKENS} new tokens, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    hits: dict[str, int] = {}
    keys = args.keys.split(",")
    start = time.perf_counter()
    for key in keys:
        for name, text in variants(count, args.length, key).items():
            answer = greedy_answer(model, tokenizer, torch.tensor([tokenizer(text)["input_ids"]]))
            ok = found_key(answer, key)
            hits[name] = hits.get(name, 0) + ok
            print(f"{name:<11} key {key}: {'correct' if ok else 'wrong  '} {answer!r}")
    print("\n" + "  ".join(f"{name}: {n}/{len(keys)}" for name, n in hits.items()))
    print(f"{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
