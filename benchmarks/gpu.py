"""GPU figures for the CUDA path (FlexAttention), bf16, embedded SmolLM2-135M-Instruct. Needs a CUDA device.

    python benchmarks/gpu.py                 # prefill ratios at 16k/32k/64k, decode at 64k, memory, passkey

Prints, side by side in one run: prefill time of SelfExtend (W=1024, G=4 unless the plan needs more) over
plain SDPA at 16k, 32k and 64k tokens (target <= 1.2), decode ms/token at 64k both ways, peak GPU memory of
each prefill, and passkey retrieval at 32k and 64k tokens at 5 depths.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from longlm_cli.engine.selfextend import apply_selfextend, remove_selfextend  # noqa: E402
from longlm_cli.evaluation.methods import greedy_answer  # noqa: E402
from longlm_cli.evaluation.passkey import (  # noqa: E402
    found_key,
    passkey_prompt,  # noqa: E402
    random_key,
)
from longlm_cli.planning.plan import make_plan  # noqa: E402
from longlm_cli.runtime.loader import load_model  # noqa: E402

import engine  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", default="16384,32768,65536")
    parser.add_argument("--decode-context", type=int, default=65536)
    parser.add_argument("--passkey-lengths", default="32768,65536")
    parser.add_argument("--depths", default="0,0.25,0.5,0.75,1")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("Error: benchmarks/gpu.py needs a CUDA device")
    loaded = load_model("default", device="cuda", dtype="bfloat16")
    model = loaded.model
    print(f"GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}, bf16", flush=True)
    for n in [int(x) for x in args.lengths.split(",")]:
        plan = make_plan(context_window=loaded.context_window, length=n)
        engine.G, engine.W = max(engine.G, plan.G), engine.W
        torch.cuda.reset_peak_memory_stats()
        r = engine.bench_prefill(model, n, repeats=3)
        peak = torch.cuda.max_memory_allocated() / 2**30
        print(
            f"prefill {n}: plain SDPA {r['plain_s'] * 1e3:.0f} ms, SelfExtend (W={engine.W}, G={engine.G})"
            f" {r['selfextend_s'] * 1e3:.0f} ms, ratio {r['ratio']:.3f} (target <= 1.2); peak {peak:.2f} GiB",
            flush=True,
        )
    r = engine.bench_decode(model, args.decode_context)
    print(
        f"decode at {r['context']}: plain {r['plain_ms']:.2f} ms/token, SelfExtend {r['selfextend_ms']:.2f}"
        f" ms/token, ratio {r['ratio']:.3f}",
        flush=True,
    )
    rng = random.Random(0)
    count = lambda text: len(loaded.tokenizer(text)["input_ids"])  # noqa: E731
    for n in [int(x) for x in args.passkey_lengths.split(",")]:
        plan = make_plan(context_window=loaded.context_window, length=n + 16)
        for depth in [float(d) for d in args.depths.split(",")]:
            key = random_key(rng)
            prompt = passkey_prompt(count, n, depth=depth, key=key)
            ids = torch.tensor([loaded.tokenizer(prompt.text)["input_ids"]], device="cuda")
            apply_selfextend(model, group_size=plan.G, window=plan.W)
            answer = greedy_answer(model, loaded.tokenizer, ids, max_new_tokens=8)
            remove_selfextend(model)
            print(
                f"passkey {ids.shape[1]} tokens depth {depth:.2f} W={plan.W} G={plan.G}: "
                f"{'correct' if found_key(answer, key) else 'wrong'} ({answer.strip()!r})",
                flush=True,
            )


if __name__ == "__main__":
    main()
