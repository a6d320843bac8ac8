"""bfloat16 against float32 on this CPU, side by side in one run: what `--dtype auto` decides, and why.

    python benchmarks/dtype.py                 # about 5 minutes on 2 cores without native bf16
    python benchmarks/dtype.py --tokens 8192   # the issue's length (longer where bf16 is emulated)

Prints the processor's bf16 flags, the matrix-product speedups runtime.precision measures to choose, then the
embedded model's chunked SelfExtend prefill (tokens/s) and decode (ms/token) in both types, and their ratios.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.engine import machine, tokens  # noqa: E402
from longlm_cli.engine.selfextend import apply_selfextend  # noqa: E402
from longlm_cli.runtime.generate import Session, prefill  # noqa: E402
from longlm_cli.runtime.loader import load_model  # noqa: E402
from longlm_cli.runtime.precision import NATIVE_BF16_FLAGS, cpu_dtype, cpu_flags, measure_bf16_speedups  # noqa: E402


def run(dtype: str, n: int, steps: int) -> tuple[float, float]:
    """(prefill tokens/s, decode ms/token) of the embedded model with SelfExtend (W=1024, G=4)."""
    model = load_model("default", device="cpu", dtype=dtype).model
    apply_selfextend(model, group_size=4, window=1024)
    session = Session.start(model)
    start = time.perf_counter()
    prefill(session, tokens(n))
    prefill_s = time.perf_counter() - start
    step_ids = tokens(steps + 1, seed=1)
    session.forward(step_ids[:, :1])  # warm-up
    start = time.perf_counter()
    for t in range(1, steps + 1):
        session.forward(step_ids[:, t : t + 1])
    return n / prefill_s, (time.perf_counter() - start) / steps * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=16)
    args = parser.parse_args()

    native = sorted(cpu_flags() & set(NATIVE_BF16_FLAGS)) or ["none"]
    print(f"machine: {machine()}; native bf16 flags: {', '.join(native)}", flush=True)
    prefill_x, decode_x = measure_bf16_speedups()
    print(f"matrix products, bf16/float32 speed: prefill shape {prefill_x:.2f}x, decode {decode_x:.2f}x", flush=True)
    print(f"--dtype auto on this CPU: {cpu_dtype().reason}", flush=True)
    figures = {}
    for dtype in ("float32", "bfloat16"):
        figures[dtype] = run(dtype, args.tokens, args.steps)
        tps, ms = figures[dtype]
        print(f"{dtype:>9}: prefill {args.tokens} tokens {tps:.1f} tokens/s, decode {ms:.1f} ms/token", flush=True)
    (f_tps, f_ms), (b_tps, b_ms) = figures["float32"], figures["bfloat16"]
    print(
        f"bf16/float32: prefill {b_tps / f_tps:.2f}x the tokens/s (target >= 1.5), decode {f_ms / b_ms:.2f}x the"
        " speed (target >= 1.0)",
        flush=True,
    )


if __name__ == "__main__":
    main()
