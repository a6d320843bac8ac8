"""Quantized weights against float ones, side by side in one run: decode ms/token, prefill tokens/s and peak RSS,
each way in a fresh process; the kernels alone; and accuracy on the embedded model.

    python benchmarks/quant.py --kernels
    python benchmarks/quant.py --model smollm2 --length 8000 --forms none,int4,int8 --dtype float32
    python benchmarks/quant.py --model llama-3.2-1b --length 8192 --forms none,int4 --dtype float32
    python benchmarks/quant.py --model llama-3.1-8b --length 8192 --forms int4 --dtype float32
    python benchmarks/quant.py --accuracy --tokens 4096
    python benchmarks/quant.py --model smollm2 --forms int4 --kv-dtypes float32,bfloat16 --dtype float32
    python benchmarks/quant.py --accuracy --forms none,int4 --kv-dtypes float32,bfloat16

--model smollm2 is the embedded GGUF as `ask` loads it (--quantize none: its 16-bit copy in --dtype). The other
models are random-weight ones built from the real configs of benchmarks/sizes.py; a quantized one is built
straight in its form (random codes and scales: nothing in float first), so an 8B model fits. ``--layers K``
builds K of the model's layers and scales the time inside them to all layers (as sizes.py does); peak RSS is
then of the K-layer model. Each case: a plain prefill of --length random tokens in the CLI's chunks, then
--steps decoded tokens (best of three rounds). Results are appended to benchmarks/results/quant.jsonl.
With --profile, each case adds the top ops' shares of the self CPU time of --steps more decoding steps (after the
timed rounds; the profiler's own memory then counts in that case's peak RSS). Each case also says its memory
floor: the bytes a decoding step must read (every weight once, every key and value held) at the speed of a plain
copy measured after the cases, and its decode time over that floor.
``--kv-dtypes`` runs each form with its KV cache kept in each of these types (runtime/kvcache.py; the default,
float32, is how the KV cache was kept before it could be narrower); ratios are against the first case.

--accuracy: next-token top-1 agreement and perplexity over --tokens of the shipped sample, int4 and int8 against
the 16-bit dequantized reference, all computed in float32 (the reference's KV cache in float32, each case's in
each of --kv-dtypes).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

RESULTS = ROOT / "benchmarks" / "results" / "quant.jsonl"
ROUNDS = 3


def machine() -> str:
    from engine import machine as described

    return described()


# --- the kernels alone --------------------------------------------------------------------------------------


def kernels(repeats: int = 5) -> list[dict]:
    """One layer's product per shape and row count: float32 and bfloat16 F.linear, the int4 and int8 kernels with
    bfloat16 and float32 activations, and unpacking the int4 layer into float32 (what a prefill chunk adds)."""
    import torch
    import torch.nn.functional as F

    from longlm_cli.runtime.qlinear import QuantizedLinear, Scratch

    def best(fn) -> float:
        fn()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return min(times) * 1e3

    rows_out = []
    gen = torch.Generator().manual_seed(0)
    for K, N in ((2048, 8192), (4096, 14336), (576, 1536)):
        w = torch.randn(N, K, generator=gen) * 0.02
        layers = {form: QuantizedLinear.from_float(form, w, None, Scratch()) for form in ("int4", "int8")}
        for rows in (1, 256, 2048):
            x = torch.randn(rows, K, generator=gen)
            row = {"shape": f"{K}->{N}", "rows": rows, "float32": best(lambda: F.linear(x, w))}  # noqa: B023
            row["bfloat16"] = best(lambda: F.linear(x.bfloat16(), w.bfloat16()))  # noqa: B023
            for form, layer in layers.items():
                row[f"{form}_kernel_bf16"] = best(lambda: layer._kernel(x.bfloat16()))  # noqa: B023
                if rows == 1:  # float32 activations: 30x slower or more, timed on one row only
                    if form == "int4":
                        call = torch.ops.aten._weight_int4pack_mm_for_cpu
                        row["int4_kernel_f32"] = best(lambda: call(x, layer.packed, 32, layer.scales_zeros.float()))  # noqa: B023
                    else:
                        call = torch.ops.aten._weight_int8pack_mm
                        row["int8_kernel_f32"] = best(lambda: call(x, layer.codes, layer.scale.float()))  # noqa: B023
            scratch = torch.empty(N, K)
            row["int4_unpack_f32"] = best(lambda: layers["int4"].unpack_into(scratch))  # noqa: B023
            row["int4_forward"] = best(lambda: layers["int4"](x))  # noqa: B023
            rows_out.append(row)
    return rows_out


# --- one case in a fresh process ----------------------------------------------------------------------------


def build_random(name: str, form: str, dtype, layers: int | None, kv_dtype=None):
    """A random-weight model of benchmarks/sizes.py's config ``name``: float (form none) or built straight in
    ``form`` from random codes and scales, so no float copy of the weights is ever made."""
    import torch
    from sizes import CONFIGS
    from sizes import build as build_float
    from transformers import AutoConfig

    from longlm_cli.runtime.quantize import cast_float_parameters, empty_model, install_weights, layout

    if form == "none":
        model, total = build_float(name, layers, dtype)
        return _with_kv_dtype(model, kv_dtype), total
    spec = dict(CONFIGS[name])
    total = spec["num_hidden_layers"]
    spec["num_hidden_layers"] = layers or total
    config = AutoConfig.for_model(**spec)
    config._attn_implementation = "sdpa"
    model = empty_model(config, dtype)
    shapes = layout(model, form)
    gen = torch.Generator().manual_seed(0)

    def read(tensor_name: str):
        shape, kind = shapes[tensor_name]
        part = tensor_name.rsplit(".", 1)[-1]
        if part == "nibbles":
            return torch.randint(0, 256, shape, dtype=torch.uint8, generator=gen)
        if part == "codes":
            return torch.randint(-127, 128, shape, dtype=torch.int8, generator=gen)
        if part == "scales_zeros":
            table = torch.empty(shape)
            table[..., 0] = 0.003
            table[..., 1] = torch.randn(shape[:-1], generator=gen) * 0.001
            return table.to(kind)
        if part == "scale":
            return torch.full(shape, 0.0002, dtype=kind)
        return torch.ones(shape)  # norms

    install_weights(model, dtype, set(shapes), read)
    cast_float_parameters(model, dtype)
    return _with_kv_dtype(model.eval(), kv_dtype), total


def _with_kv_dtype(model, kv_dtype):
    """``model`` keeping its KV cache in ``kv_dtype`` (None: its own type), as load_model sets it up."""
    from longlm_cli.engine.plain import use_plain_cpu_attention
    from longlm_cli.runtime.kvcache import set_kv_dtype

    use_plain_cpu_attention(model, kv_dtype)
    set_kv_dtype(model, kv_dtype or model.dtype)
    return model


def run_case(
    model_name: str,
    form: str,
    dtype_name: str,
    length: int,
    steps: int,
    layers: int | None,
    kv_name: str,
    profile: bool = False,
) -> dict:
    import torch
    from sizes import LayerClock

    from longlm_cli.runtime.generate import Session, prefill

    dtype = getattr(torch, dtype_name)
    start = time.perf_counter()
    if model_name == "smollm2":
        from longlm_cli.runtime.loader import load_model

        loaded = load_model("default", device="cpu", dtype=dtype_name, quantize=form, kv_dtype=kv_name)
        model, total = loaded.model, None
    else:
        from longlm_cli.runtime.allocator import give_back_freed_blocks

        give_back_freed_blocks()  # glibc's allocator as load_model sets it, before the weights
        model, total = build_random(model_name, form, dtype, layers, getattr(torch, kv_name))
    load_s = time.perf_counter() - start
    built = layers if total is not None and layers else None
    scale = (total / built) if built else 1.0
    clock = LayerClock(model) if built else None
    ids = torch.randint(100, 40000, (1, length), generator=torch.Generator().manual_seed(0))
    session = Session.start(model, reserve=length + steps * ROUNDS)
    if clock:
        clock.inside = 0.0
    start = time.perf_counter()
    logits = prefill(session, ids)
    prefill_s = time.perf_counter() - start
    if clock:
        prefill_s += clock.inside * (scale - 1)
    rss_after_prefill = peak_rss_gib()
    best = None
    token = int(logits.argmax())
    for _ in range(ROUNDS):
        if clock:
            clock.inside = 0.0
        start = time.perf_counter()
        for _ in range(steps):
            logits = session.forward(torch.tensor([[token]]))
            token = int(logits.argmax())
        seconds = time.perf_counter() - start
        if clock:
            seconds += clock.inside * (scale - 1)
        best = seconds if best is None else min(best, seconds)
        session.cache.crop(-steps)  # the same context for every round
    # What one decoding step must read at least: every weight (packed tensors, tables, scales, norms) once, and
    # every key and value held (the scratch buffer a prefill chunk unpacks into is not read when decoding).
    tensors = [*model.parameters(), *model.buffers()]
    weights = sum(t.numel() * t.element_size() for t in tensors) * scale
    kv = sum(t.numel() * t.element_size() for layer in session.cache.layers for t in (layer.keys, layer.values))
    shares = {"profile": decode_profile(session, token, steps)} if profile else {}
    return {
        "model": model_name,
        "form": form,
        "dtype": dtype_name,
        "kv_dtype": kv_name,
        "length": length,
        "layers": f"{built}/{total}" if built else "all",
        "load_s": round(load_s, 2),
        "prefill_tokens_per_s": round(length / prefill_s, 1),
        "decode_ms_per_token": round(best / steps * 1e3, 1),
        "peak_rss_gib": round(max(rss_after_prefill, peak_rss_gib()), 3),
        "bytes_per_token": int(weights + kv * scale),
        "machine": machine(),
        **shares,
    }


def decode_profile(session, token: int, steps: int) -> dict:
    """The share of each of the top ops in the self CPU time of ``steps`` decoding steps (torch.profiler), after
    the timed rounds so that the profiler's overhead is in none of them."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            token = int(session.forward(torch.tensor([[token]])).argmax())
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1
    return {e.key: round(e.self_cpu_time_total / total, 3) for e in events[:5]}


def copy_bandwidth() -> float:
    """Bytes per second of a plain 256 MiB copy here (engine.py's measure), after the cases: the memory floor of
    a decoding step is the bytes it reads at this speed."""
    from engine import copy_bandwidth as measured

    return measured(1 << 28)


def peak_rss_gib() -> float:
    """This process's own peak resident memory (VmHWM): ru_maxrss would carry the parent's peak (which holds
    torch) across the spawn's exec."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def in_fresh_process(args: argparse.Namespace, form: str, kv_name: str) -> dict:
    command = [sys.executable, __file__, "--case", form, "--model", args.model, "--dtype", args.dtype]
    command += ["--kv-dtypes", kv_name]
    command += ["--length", str(args.length), "--steps", str(args.steps)]
    command += ["--layers", str(args.layers)] if args.layers else []
    command += ["--profile"] if args.profile else []
    out = subprocess.run(command, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"case {form}, {kv_name} KV cache failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- accuracy on the embedded model -------------------------------------------------------------------------


def accuracy(tokens: int, forms: list[str], kv_names: list[str]) -> list[dict]:
    """Top-1 agreement and perplexity of each form with each KV cache type against the 16-bit reference with a
    float32 KV cache, all computed in float32, on the sample."""
    import torch

    from longlm_cli.runtime.loader import load_model

    text = (ROOT / "samples" / "pride-and-prejudice.txt").read_text(encoding="utf-8")
    runs = {}
    cases = [("none", "float32")] + [(f, kv) for f in forms for kv in kv_names if (f, kv) != ("none", "float32")]
    for form, kv_name in cases:
        loaded = load_model("default", device="cpu", dtype="float32", quantize=form, kv_dtype=kv_name)
        ids = loaded.tokenizer(text[: tokens * 8], return_tensors="pt").input_ids[:, :tokens]
        with torch.inference_mode():
            logits = torch.cat([_logits(loaded.model, ids, lo) for lo in range(0, ids.shape[1], 1024)], dim=1)
        nll = torch.nn.functional.cross_entropy(logits[0, :-1].float(), ids[0, 1:])
        runs[form, kv_name] = (logits[0, :-1].argmax(-1), float(torch.exp(nll)))
        del loaded
    top_ref, ppl_ref = runs["none", "float32"]
    return [
        {
            "form": form,
            "kv_dtype": kv_name,
            "tokens": int(top_ref.numel()),
            "top1_agreement": round(float((runs[form, kv_name][0] == top_ref).float().mean()), 4),
            "perplexity": round(runs[form, kv_name][1], 3),
            "reference_perplexity": round(ppl_ref, 3),
            "perplexity_change": round(runs[form, kv_name][1] / ppl_ref - 1, 4),
            "machine": machine(),
        }
        for form, kv_name in cases[1:]
    ]


_cache = {}


def _logits(model, ids, lo: int):
    """Logits of ids[lo : lo + 1024] after the ones before (one growing cache per model, in its KV type)."""
    from longlm_cli.runtime.kvcache import growing_cache, kv_dtype_of

    if lo == 0:
        _cache[id(model)] = growing_cache(model.config, 0, kv_dtype_of(model))
    out = model(ids[:, lo : lo + 1024], past_key_values=_cache[id(model)], use_cache=True)
    return out.logits


def _append(record: dict) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kernels", action="store_true")
    parser.add_argument("--accuracy", action="store_true")
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--forms", default="none,int4,int8")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--length", type=int, default=8000)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--layers", type=int)
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--kv-dtypes", default="float32", help="the KV cache's types, each a case")
    parser.add_argument("--profile", action="store_true", help="each case: the top ops' share of decoding steps")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    forms, kv_names = args.forms.split(","), args.kv_dtypes.split(",")
    if args.case:
        case = run_case(
            args.model, args.case, args.dtype, args.length, args.steps, args.layers, kv_names[0], args.profile
        )
        print(json.dumps(case))
        return
    print(f"# {machine()}")
    if args.kernels:
        for row in kernels():
            print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}))
        return
    if args.accuracy:
        for record in accuracy(args.tokens, forms, kv_names):
            print(json.dumps(record))
            _append({"kind": "accuracy", **record})
        return
    records = [in_fresh_process(args, form, kv_name) for form in forms for kv_name in kv_names]
    bandwidth = copy_bandwidth()
    for record in records:
        floor_ms = record["bytes_per_token"] / bandwidth * 1e3
        record |= {"copy_gb_per_s": round(bandwidth / 1e9, 1), "floor_ms": round(floor_ms, 1)}
        record["over_floor"] = round(record["decode_ms_per_token"] / floor_ms, 2)
        print(json.dumps(record))
        _append({"kind": "speed", **record})
    base = records[0]
    for record in records[1:]:
        print(
            f"{record['form']} ({record['kv_dtype']} KV) against {base['form']} ({base['kv_dtype']} KV) "
            f"({args.model}, {args.dtype}, {args.length} tokens): decode "
            f"{base['decode_ms_per_token'] / record['decode_ms_per_token']:.2f}x faster, prefill "
            f"{record['prefill_tokens_per_s'] / base['prefill_tokens_per_s']:.2f}x the tokens/s, peak RSS "
            f"{record['peak_rss_gib'] / base['peak_rss_gib']:.2f}x"
        )


if __name__ == "__main__":
    main()
