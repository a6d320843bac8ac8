#!/usr/bin/env python
"""torchao's weight-only quantization against longlm's own layers (runtime/qlinear.py, torch's CPU kernels), one
linear layer side by side in one process: the issue asked to use torchao or torch's own ops, whichever measures
better on the CPU.

For each form it quantizes the same random [N, K] weight and times a forward of 1 row (a decoding step) and of
256 rows (a prefill chunk), in bfloat16 and float32 activations; dense matrix products are the baseline. A
torchao configuration that cannot run here is reported with its error.

Needs torchao, which is not a dependency of longlm: pip install --no-deps torchao==0.18.0
Usage: OMP_NUM_THREADS=1 python benchmarks/torchao_compare.py [--shape 8192x2048] [--repeats 30]
"""

from __future__ import annotations

import argparse
import platform
import time
import warnings
from pathlib import Path

ROWS = (1, 256)


def machine() -> str:
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    kind = "amx" if "amx_bf16" in flags else "avx512_bf16" if "avx512_bf16" in flags else "avx2"
    return f"{platform.machine()} {kind}"


def timed(forward, repeats: int) -> float:
    """Milliseconds a call, after one warm-up call."""
    forward()
    start = time.perf_counter()
    for _ in range(repeats):
        forward()
    return (time.perf_counter() - start) / repeats * 1e3


def torchao_layers(weight, dtype):
    """(name, layer or the error that stopped it) for torchao's CPU-capable weight-only configurations."""
    import torch
    from torchao.quantization import Int4WeightOnlyConfig, Int8WeightOnlyConfig, IntxWeightOnlyConfig, quantize_
    from torchao.quantization.granularity import PerGroup

    configs = [
        ("torchao int4 (Int4WeightOnlyConfig, groups of 32)", lambda: Int4WeightOnlyConfig(group_size=32)),
        (
            "torchao int4 (IntxWeightOnlyConfig, groups of 32)",
            lambda: IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(32)),
        ),
        ("torchao int8 (Int8WeightOnlyConfig)", Int8WeightOnlyConfig),
    ]
    for name, config in configs:
        layer = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False).to(dtype)
        layer.weight.data = weight.to(dtype)
        try:
            quantize_(layer, config())
            yield name, layer
        except Exception as exc:  # a configuration that needs what this machine lacks: reported, not fatal
            yield name, f"{type(exc).__name__}: {str(exc)[:120]}"


def longlm_layers(weight, dtype):
    import torch

    from longlm_cli.runtime.qlinear import QuantizedLinear, Scratch

    for form in ("int4", "int8"):
        yield f"longlm {form} (qlinear.py)", QuantizedLinear.from_float(form, weight, None, Scratch())
    dense = weight.to(dtype)
    yield "dense", lambda x: torch.nn.functional.linear(x, dense)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="8192x2048", help="N x K of the weight (out x in features)")
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    import torch
    import torchao

    N, K = (int(v) for v in args.shape.split("x"))
    weight = torch.randn(N, K, generator=torch.Generator().manual_seed(0)) * 0.02
    print(f"# {machine()}, torch {torch.__version__}, torchao {torchao.__version__}, {torch.get_num_threads()} threads")
    print(f"# weight {N}x{K}; ms a forward of 1 and of 256 rows")
    for dtype in (torch.bfloat16, torch.float32):
        for name, layer in [*torchao_layers(weight, dtype), *longlm_layers(weight, dtype)]:
            if isinstance(layer, str):
                print(f"{str(dtype):15} {name:52} could not run: {layer}")
                continue
            times = []
            for rows in ROWS:
                x = torch.randn(rows, K, dtype=dtype)
                with torch.inference_mode():
                    repeats = args.repeats if rows == 1 else max(3, args.repeats // 3)
                    times.append(timed(lambda layer=layer, x=x: layer(x), repeats))
            print(f"{str(dtype):15} {name:52} " + "  ".join(f"{r} rows {t:8.2f} ms" for r, t in zip(ROWS, times)))


if __name__ == "__main__":
    main()
