"""Where a SelfExtend decoding step spends its time: torch.profiler over a few steps from a prefilled cache.

    OMP_NUM_THREADS=1 python benchmarks/decode_profile.py --context 8192 [--steps 8] [--dtype float32]
    OMP_NUM_THREADS=1 python benchmarks/decode_profile.py --prefill --context 4096 --dtype bfloat16

With ``--prefill``, the chunked prefill of ``--context`` tokens is profiled instead (per operator, seconds in all):
where bf16 prefill gains over float32 and where it does not.

Prints ms/token (profiled) and the operators with the most self time: the attention kernel against the matrix
products of the weights, which is what decides how close decoding can come to the memory floor that
`benchmarks/engine.py --only decode` prints.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from torch.profiler import ProfilerActivity, profile  # noqa: E402

from longlm_cli.engine.selfextend import apply_selfextend  # noqa: E402
from longlm_cli.runtime.generate import Session, prefill  # noqa: E402
from longlm_cli.runtime.loader import load_model  # noqa: E402

from engine import G, W, machine, tokens  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--context", type=int, default=8192)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--prefill", action="store_true", help="profile the chunked prefill instead")
    args = parser.parse_args()
    model = load_model("default", device="cpu", dtype=args.dtype).model
    apply_selfextend(model, group_size=G, window=W)
    if args.prefill:
        profile_prefill(model, args.context, args.dtype)
        return
    session = Session.start(model)
    prefill(session, tokens(args.context))
    step_ids = tokens(args.steps, seed=1)
    for t in range(args.steps):  # warm-up (fills the grouped-key cache), then the same steps profiled
        session.forward(step_ids[:, t : t + 1])
    session.cache.crop(-args.steps)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        for t in range(args.steps):
            session.forward(step_ids[:, t : t + 1])
        per_token = (time.perf_counter() - start) / args.steps
    print(f"machine: {machine()}; {args.dtype}, context {args.context:,}, W={W} G={G}")
    print(f"{per_token * 1e3:.1f} ms/token (profiled)")
    print_top(prof, lambda us: f"{us / 1e3 / args.steps:7.1f} ms/token")


def profile_prefill(model, context: int, dtype: str) -> None:
    prefill(Session.start(model), tokens(1024))  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        prefill(Session.start(model), tokens(context))
        seconds = time.perf_counter() - start
    print(f"machine: {machine()}; {dtype}, chunked prefill of {context:,} tokens, W={W} G={G}")
    print(f"{seconds:.1f} s, {context / seconds:.1f} tokens/s (profiled)")
    print_top(prof, lambda us: f"{us / 1e6:7.2f} s")


def print_top(prof, amount, rows: int = 8) -> None:
    """The operators with the most self time: share, ``amount(microseconds)`` and name."""
    total = sum(e.self_cpu_time_total for e in prof.key_averages())
    for event in sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:rows]:
        print(f"{event.self_cpu_time_total / total:6.1%}  {amount(event.self_cpu_time_total)}  {event.key}")


if __name__ == "__main__":
    main()
