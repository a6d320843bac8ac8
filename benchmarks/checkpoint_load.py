#!/usr/bin/env python
"""Peak memory of loading a Hub-style checkpoint with quantized weights: streamed tensor by tensor
(runtime/checkpointquant.py, what `--quantize int4` does now) against loading it whole in 16 bits and then
quantizing (the path before, which loader.py still takes for a checkpoint it cannot stream).

It writes a random-weight checkpoint of a real config (benchmarks/sizes.py) in bfloat16 safetensors, with the
embedded model's tokenizer, then loads it each way in a fresh process and prints the peak RSS (ru_maxrss) and
the seconds, beside the quantized model's own size (its weights as held in memory) and the process's size
before loading (torch and transformers imported).

Usage: python benchmarks/checkpoint_load.py [--model llama-3.2-1b] [--form int4] [--dir /tmp/longlm-ckpt]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "checkpoint-load.jsonl"


def machine() -> str:
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    kind = "amx" if "amx_bf16" in flags else "avx512_bf16" if "avx512_bf16" in flags else "avx2"
    return f"{platform.machine()} {kind}"


def write_checkpoint(name: str, directory: Path) -> None:
    """A random-weight ``name`` checkpoint in bfloat16 safetensors, with the embedded model's tokenizer."""
    import torch
    from transformers import AutoTokenizer

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from sizes import build

    from longlm_cli.runtime.loader import load_model

    model, _ = build(name, None, torch.bfloat16)
    model.save_pretrained(directory)
    tokenizer_dir = Path(
        load_model("default", device="cpu", dtype="float32", quantize="int4").model.config._name_or_path
    )
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(directory)


def load(directory: Path, form: str, way: str) -> dict:
    """Load the checkpoint ``way`` ('streamed' or 'whole'); its peak RSS, seconds and weights' bytes."""
    import torch

    from longlm_cli.runtime.allocator import give_back_freed_blocks
    from longlm_cli.runtime.checkpointquant import quantized_checkpoint
    from longlm_cli.runtime.quantize import quantize_model

    give_back_freed_blocks()  # as load_model does first
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    start = time.perf_counter()
    if way == "streamed":
        _, model = quantized_checkpoint(directory, form, torch.float32, trust_remote_code=False)
    else:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.bfloat16)
        quantize_model(model, form, torch.float32)
    seconds = time.perf_counter() - start
    held = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    return {
        "way": way,
        "seconds": round(seconds, 1),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "model_gib": round(held / 2**30, 2),
        "process_before_gib": round(baseline, 2),  # torch and transformers imported
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="llama-3.2-1b")
    parser.add_argument("--form", default="int4", choices=("int4", "int8"))
    parser.add_argument("--dir", type=Path, default=Path("/tmp/longlm-ckpt"))
    parser.add_argument("--child", choices=("streamed", "whole"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    directory = args.dir / args.model
    if args.child:
        print(json.dumps(load(directory, args.form, args.child)))
        return
    if not (directory / "config.json").exists():
        write_checkpoint(args.model, directory)
    files = sum(p.stat().st_size for p in directory.glob("*.safetensors"))
    for way in ("streamed", "whole"):
        command = [sys.executable, __file__, "--model", args.model, "--form", args.form, "--dir", str(args.dir)]
        done = subprocess.run([*command, "--child", way], capture_output=True, text=True, check=True)
        record = {
            "model": args.model,
            "form": args.form,
            "checkpoint_gib": round(files / 2**30, 2),
            **json.loads(done.stdout.strip().splitlines()[-1]),
            "machine": machine(),
        }
        print(json.dumps(record))
        with RESULTS.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
