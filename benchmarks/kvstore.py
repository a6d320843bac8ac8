"""Which type to keep a float32 model's KV cache in on the CPU, and how to read it: torch's CPU flash-attention
kernel over 8k keys, side by side in one run, for one decoding step (each key head's query heads folded into its
rows, as engine/blocks.py calls it) and for a 512-row prefill chunk, with the head layouts of the embedded model
and of the 8B config:

  * float32: keys, values and queries in float32 (the cache as it was);
  * <16-bit>-kernel: keys and values kept in 16 bits, the queries rounded to them, the kernel run in 16 bits;
  * <16-bit>-upcast: keys and values kept in 16 bits, converted to float32 at each call, the kernel in float32;
  * engine_bfloat16 (decoding only): engine/blocks.py's call as longlm makes it, bf16 keys under float32 queries,
    the keys cut into parts among the threads where the key heads do not share evenly.

    python benchmarks/kvstore.py                 # this CPU as it is
    python benchmarks/kvstore.py --emulate-avx2  # torch's AVX2 kernels and oneDNN held to AVX2 (no native bf16)

--emulate-avx2 reruns itself with ATEN_CPU_CAPABILITY=avx2 and ONEDNN_MAX_CPU_ISA=AVX2: bf16 matrix products then
run emulated (measured 4x slower than float32 here), as on an AVX2-only CPU. It is an emulation on this machine,
named so in the record. Results are appended to benchmarks/results/kvstore.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

RESULTS = ROOT / "benchmarks" / "results" / "kvstore.jsonl"
LAYOUTS = {"smollm2": (3, 3, 64), "llama-3.1-8b": (8, 4, 128)}  # (key heads, query heads per key head, head dim)
KEYS = 8192
CHUNK = 512


def best_ms(fn, loops: int, repeats: int = 3) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(loops):
            fn()
        times.append((time.perf_counter() - start) / loops)
    return min(times) * 1e3


def measure(layout: str, rows: int) -> dict:
    import torch

    flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    hkv, rep, dim = LAYOUTS[layout]
    gen = torch.Generator().manual_seed(0)
    k, v = torch.randn(1, hkv, KEYS, dim, generator=gen), torch.randn(1, hkv, KEYS, dim, generator=gen)
    q = torch.randn(1, hkv, rows * rep, dim, generator=gen)
    loops = 20 if rows == 1 else 2
    row = {"layout": layout, "rows": rows, "float32_ms": best_ms(lambda: flash(q, k, v, 0.0, False, scale=0.1), loops)}
    for dtype in (torch.bfloat16, torch.float16):
        name = str(dtype).removeprefix("torch.")
        kk, vv = k.to(dtype), v.to(dtype)

        def kernel(kk=kk, vv=vv, dtype=dtype):
            return flash(q.to(dtype), kk, vv, 0.0, False, scale=0.1)[0].float()

        def upcast(kk=kk, vv=vv):
            return flash(q, kk.float(), vv.float(), 0.0, False, scale=0.1)

        row[f"{name}_kernel_ms"], row[f"{name}_upcast_ms"] = best_ms(kernel, loops), best_ms(upcast, loops)
    if rows == 1:  # the engine's own call for a decoding step of a float32 model: bf16 keys, split among threads
        from longlm_cli.engine.blocks import attend

        qh = q.reshape(1, hkv * rep, 1, dim)
        kb, vb = k.bfloat16(), v.bfloat16()
        row["engine_bfloat16_ms"] = best_ms(lambda: attend(qh, kb, vb, scale=0.1, causal=False, softcap=None), loops)
    return {key: round(value, 3) if isinstance(value, float) else value for key, value in row.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--emulate-avx2", action="store_true")
    args = parser.parse_args()
    if args.emulate_avx2 and os.environ.get("ATEN_CPU_CAPABILITY") != "avx2":
        env = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
        raise SystemExit(subprocess.run([sys.executable, __file__, "--emulate-avx2"], env=env).returncode)
    from engine import machine

    described = machine() + (", AVX2 emulated (ATEN_CPU_CAPABILITY=avx2, ONEDNN_MAX_CPU_ISA=AVX2)" * args.emulate_avx2)
    print(f"# {described}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    for layout in LAYOUTS:
        for rows in (1, CHUNK):
            record = {**measure(layout, rows), "keys": KEYS, "machine": described}
            print(json.dumps(record), flush=True)
            with RESULTS.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
