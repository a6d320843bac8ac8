"""Peak resident memory of a quantized random-weight model over a prefill, taken apart: the process before
building, the built model, its weights and KV cache, and the peak over weights + KV, sampled every 20 ms.

    python benchmarks/prefill_peak.py --layers 2 --length 4096            # 8B config, int4, float32, bf16 KV
    python benchmarks/prefill_peak.py --layers 6 --length 4096 --glibc-defaults
    python benchmarks/prefill_peak.py --layers 2 --length 4096 --chunk 1024 --threads 2

The model is benchmarks/quant.py's (--model's config from benchmarks/sizes.py, built straight in --form with
random codes, K of its layers). By default glibc's allocator is set as load_model sets it
(runtime/allocator.py); --glibc-defaults leaves it as glibc starts. Prints one JSON line (GiB); it is not
appended anywhere: a few layers show the transients a prefill adds, which do not grow with the layer count.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def _status(field: str) -> float:
    """A /proc/self/status memory field in GiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) / 2**20
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="llama-3.1-8b")
    parser.add_argument("--form", default="int4", choices=["int4", "int8"])
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--length", type=int, default=4096)
    parser.add_argument("--chunk", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--glibc-defaults", action="store_true")
    args = parser.parse_args()

    import torch
    from quant import build_random, machine

    from longlm_cli.runtime.allocator import give_back_freed_blocks
    from longlm_cli.runtime.generate import Session, prefill

    torch.set_num_threads(args.threads)
    if not args.glibc_defaults:
        give_back_freed_blocks()
    base = _status("VmRSS")
    model, _ = build_random(args.model, args.form, getattr(torch, args.dtype), args.layers, torch.bfloat16)
    built, built_peak = _status("VmRSS"), _status("VmHWM")
    weights = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()]) / 2**30
    ids = torch.randint(100, 40000, (1, args.length), generator=torch.Generator().manual_seed(0))
    session = Session.start(model, reserve=args.length + 8)
    sampled, done = [0.0], threading.Event()

    def watch() -> None:
        while not done.is_set():
            sampled[0] = max(sampled[0], _status("VmRSS"))
            time.sleep(0.02)

    threading.Thread(target=watch, daemon=True).start()
    start = time.perf_counter()
    prefill(session, ids, chunk=args.chunk)
    seconds = time.perf_counter() - start
    done.set()
    kv = sum(t.numel() * t.element_size() for layer in session.cache.layers for t in (layer.keys, layer.values))
    peak = _status("VmHWM")
    record = {
        **vars(args),
        "process_before": base,
        "built": built,
        "build_peak": built_peak,
        "weights": weights,
        "kv_cache": kv / 2**30,
        "prefill_peak_sampled": sampled[0],
        "peak": peak,
        "over_weights_and_kv": peak - weights - kv / 2**30,
        "prefill_s": seconds,
        "machine": machine(),
    }
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in record.items()}))


if __name__ == "__main__":
    main()
