"""SelfExtend engine vs the unmodified model (SDPA), measured side by side in one run on the embedded model.

    python benchmarks/engine.py                # all three figures (about 15 minutes on 2 CPU cores)
    python benchmarks/engine.py --only prefill # one of: prefill, chunked, decode, memory, gqa
    python benchmarks/engine.py --only decode --dtype bfloat16   # (a), (a') and (b) in bf16 (default float32)

(a) prefill time of SelfExtend (W=1024, G=4) / plain SDPA, one forward over the same 8k-token input;
(b) decode ms/token at a 16k-token context, SelfExtend vs plain, both decoding from the same KV cache
    (the plain model's output is meaningless there; only its speed is the yardstick), beside SelfExtend on
    its grouped keys kept apart (as before they went into the KV cache's own buffer), transformers'
    concatenating cache, the query heads unfolded, and both (the engine when issue 14 was filed), every way in
    turns, and the memory floor from the bytes a step reads and a measured copy speed;
(c) peak resident memory of a 32k-token SelfExtend prefill in float32 (a fresh process, chunked prefill);
(d) one decoding row (or --gqa-rows) of attention over 8k keys without a mask: the CPU flash kernel with the
    query heads as they come vs the engine's call with each key head's query heads folded into one query axis
    (and the two matrix products an earlier engine used for decoding), for the head layouts of the embedded
    model and of the real-size configs (benchmarks/sizes.py);
(e) the plain model's decoding (no method) at an 8k-token context: transformers' SDPA against engine/plain.py's
    attention (each key head's query heads folded into one query), from one KV cache, in turns: in bfloat16 the
    CPU flash kernel is slow for the one-row query per head that SDPA hands it (`--only plain-decode --dtype
    bfloat16`).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from transformers import DynamicCache  # noqa: E402

from longlm_cli.engine import blocks  # noqa: E402
from longlm_cli.engine.plain import PLAIN_CPU_ATTENTION  # noqa: E402
from longlm_cli.engine.selfextend import GroupedKeyCache, apply_selfextend, remove_selfextend  # noqa: E402
from longlm_cli.runtime.generate import Session, prefill  # noqa: E402
from longlm_cli.runtime.loader import load_model  # noqa: E402
from longlm_cli.runtime.precision import NATIVE_BF16_FLAGS, cpu_flags  # noqa: E402

W, G = 1024, 4


def machine() -> str:
    """The processor, its native bf16 flags (two CPUs of one name can differ there), threads and torch."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    native = sorted(cpu_flags() & set(NATIVE_BF16_FLAGS))
    cpu += f" ({', '.join(native)})" if native else " (no native bf16)"
    return f"{cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def tokens(n: int, seed: int = 0, device: str = "cpu") -> torch.Tensor:
    """Random ordinary-vocabulary tokens: attention cost does not depend on the content."""
    return torch.randint(100, 40000, (1, n), generator=torch.Generator().manual_seed(seed)).to(device)


def sync(model) -> None:
    if next(model.parameters()).device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, repeats: int = 1, model=None) -> float:
    best = float("inf")
    for _ in range(repeats):
        if model is not None:
            sync(model)
        start = time.perf_counter()
        fn()
        if model is not None:
            sync(model)
        best = min(best, time.perf_counter() - start)
    return best


def bench_prefill(model, n: int = 8192, repeats: int = 2) -> dict:
    ids = tokens(n, device=next(model.parameters()).device.type)

    def one_forward():
        with torch.inference_mode():
            model(ids, use_cache=False, logits_to_keep=1)

    remove_selfextend(model)
    one_forward()  # warm-up
    plain = timed(one_forward, repeats, model)
    apply_selfextend(model, group_size=G, window=W)
    one_forward()  # warm-up (on CUDA: compiles the FlexAttention kernels)
    extended = timed(one_forward, repeats, model)
    remove_selfextend(model)
    return {"tokens": n, "plain_s": plain, "selfextend_s": extended, "ratio": extended / plain}


def bench_chunked_prefill(model, n: int = 8192) -> dict:
    """The CLI's way: prefill in chunks of DEFAULT_PREFILL_CHUNK tokens into a KV cache."""
    ids = tokens(n)
    remove_selfextend(model)
    plain = timed(lambda: prefill(Session.start(model), ids))
    apply_selfextend(model, group_size=G, window=W)
    extended = timed(lambda: prefill(Session.start(model), ids))
    remove_selfextend(model)
    return {"tokens": n, "plain_s": plain, "selfextend_s": extended, "ratio": extended / plain}


DECODE_ROUNDS = 6  # every way first once


def bench_decode(model, context: int = 16384, steps: int = 32) -> dict:
    device = next(model.parameters()).device.type
    apply_selfextend(model, group_size=G, window=W)
    # One prefill, the grouped keys kept apart (the KV cache's keys stay at their true positions), and every
    # way's cache made from it: the same keys and values for all.
    apart = Session.start(model, reserve=context + steps)
    apart.extra = {"longlm_grouped_keys": GroupedKeyCache(reserve=context + steps)}
    prefill(apart, tokens(context, device=device))
    step_ids = tokens(steps, seed=1, device=device)

    def decode_steps(s):
        sync(model)
        start = time.perf_counter()
        for t in range(steps):
            s.forward(step_ids[:, t : t + 1])
        sync(model)
        elapsed = time.perf_counter() - start
        s.cache.crop(-steps)
        return elapsed / steps

    decode_steps(apart)  # warm-up: the grouped keys up to the context
    # The engine's way: the grouped keys in place of the old true keys in the KV cache's own buffer.
    session = Session.start(model, reserve=context + steps)
    grouped = apart.extra["longlm_grouped_keys"]
    for i, layer in enumerate(apart.cache.layers):
        keys = layer.keys.clone()
        kept = grouped.layers.get(i)
        if kept is not None:
            keys[:, :, : kept["n"]] = kept["buffer"][:, :, : kept["n"]]
        session.cache.update(keys, layer.values.clone(), i)
    session.adopt_rotated({i: kept["n"] for i, kept in grouped.layers.items() if kept["n"]})
    # The same keys and values in transformers' DynamicCache (torch.cat of the whole cache at every token).
    concat = DynamicCache(config=model.config)
    for i, layer in enumerate(apart.cache.layers):
        concat.update(layer.keys.clone(), layer.values.clone(), i)
    concat_session = Session(model=model, cache=concat, extra=apart.extra)
    plain_session = Session(model=model, cache=apart.cache, extra={})
    ways = {  # name: (session, SelfExtend on, query heads folded); both off as the engine was when issue 14 was filed
        "selfextend": (session, True, True),
        "grouped_apart": (apart, True, True),
        "unfolded": (apart, True, False),
        "concat_cache": (concat_session, True, True),
        "as_filed": (concat_session, True, False),
        "plain": (plain_session, False, True),
    }

    def way_steps(name: str) -> float:
        s, extended, fold = ways[name]
        (apply_selfextend(model, group_size=G, window=W) if extended else remove_selfextend(model))
        blocks.FOLD_QUERY_HEADS = fold
        try:
            return decode_steps(s)
        finally:
            blocks.FOLD_QUERY_HEADS = True

    decode_steps(session)  # warm-up
    # Every way in turns, best of the rounds: a burst of other work on the machine hits all of them.
    # The order turns each round, so no way is always the one that runs first (or after the same other way).
    names = list(ways)
    rounds = [{name: way_steps(name) for name in names[r:] + names[:r]} for r in range(DECODE_ROUNDS)]
    best = {name: min(r[name] for r in rounds) for name in ways}
    extended, plain = best["selfextend"], best["plain"]
    # The memory floor: the bytes one SelfExtend step must read at the bandwidth of a plain copy measured now, in
    # the same process and threads: the weights, every value, and one key per position (the true key within W,
    # the grouped key beyond it), so as many bytes as the plain model's step.
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    kv = sum(t.numel() * t.element_size() for layer in session.cache.layers for t in (layer.keys, layer.values))
    read = weights + kv
    bandwidth = copy_bandwidth()
    return {
        "context": context,
        "plain_ms": plain * 1e3,
        "selfextend_ms": extended * 1e3,
        "selfextend_concat_cache_ms": best["concat_cache"] * 1e3,
        "selfextend_grouped_apart_ms": best["grouped_apart"] * 1e3,
        "selfextend_unfolded_ms": best["unfolded"] * 1e3,
        "selfextend_as_filed_ms": best["as_filed"] * 1e3,
        "speedup_over_as_filed": best["as_filed"] / extended,
        "ratio": extended / plain,
        "speedup_over_concat_cache": best["concat_cache"] / extended,
        "bytes_per_token": read,
        "copy_gb_per_s": bandwidth / 1e9,
        "floor_ms": read / bandwidth * 1e3,
        "over_floor": extended / (read / bandwidth),
    }


def bench_plain_decode(model, context: int = 8192, steps: int = 16) -> dict:
    """(e): ms/token of the plain model on transformers' SDPA and on PLAIN_CPU_ATTENTION, best of the rounds."""
    remove_selfextend(model)
    original = model.config._attn_implementation
    session = Session.start(model, reserve=context + steps)
    prefill(session, tokens(context))
    step_ids = tokens(steps, seed=1)

    def steps_ms(attention: str) -> float:
        model.set_attn_implementation(attention)
        start = time.perf_counter()
        for t in range(steps):
            session.forward(step_ids[:, t : t + 1])
        elapsed = time.perf_counter() - start
        session.cache.crop(-steps)
        return elapsed / steps * 1e3

    ways = ["sdpa", PLAIN_CPU_ATTENTION]
    steps_ms(ways[0])  # warm-up
    rounds = [{way: steps_ms(way) for way in (ways if r % 2 == 0 else ways[::-1])} for r in range(DECODE_ROUNDS)]
    model.set_attn_implementation(original)
    best = {way: min(r[way] for r in rounds) for way in ways}
    sdpa, plain = best["sdpa"], best[PLAIN_CPU_ATTENTION]
    return {"context": context, "sdpa_ms": sdpa, "plain_cpu_ms": plain, "speedup": sdpa / plain}


def copy_bandwidth(size: int = 1 << 30) -> float:
    """Bytes per second a plain tensor copy of ``size`` bytes moves, read and written counted as STREAM's Copy
    counts them (best of three; the target is touched first so page faults are not counted)."""
    source = torch.ones(size // 4)
    target = torch.zeros_like(source)
    seconds = timed(lambda: target.copy_(source), 3)
    return 2 * size / seconds


GQA_SHAPES = {  # (query heads, key heads, head size) of the embedded model and the sizes benchmark's configs
    "SmolLM2-135M": (9, 3, 64),
    "Llama-3.2-1B": (32, 8, 64),
    "Qwen2.5-3B": (16, 2, 128),
    "Llama-3.1-8B": (32, 8, 128),
}


def bench_gqa(keys: int = 8192, rows: int = 1, repeats: int = 20) -> dict:
    """``rows`` query rows (1: decoding) against ``keys`` keys in float32 without a mask: the CPU flash kernel with
    the query heads as they come, the engine's folded call, and (one row) the two matrix products an earlier
    engine used for decoding."""
    results = {}
    gen = torch.Generator().manual_seed(0)
    flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    for name, (H, hkv, D) in GQA_SHAPES.items():
        q = torch.randn(1, H, rows, D, generator=gen)
        k, v = (torch.randn(1, hkv, 2 * keys, D, generator=gen)[:, :, :keys] for _ in range(2))  # cache views
        flash_ms = _per_call_ms(lambda: flash(q, k, v, 0.0, False, scale=D**-0.5), repeats)  # noqa: B023
        folded_ms = _per_call_ms(lambda: blocks._attend_folded(q, k, v, scale=D**-0.5), repeats)  # noqa: B023
        results[name] = {"heads": [H, hkv, D], "flash_ms": flash_ms, "folded_ms": folded_ms}
        results[name]["speedup"] = flash_ms / folded_ms
        if rows == 1:
            results[name]["products_ms"] = _per_call_ms(lambda: _row_products(q, k, v, D**-0.5), repeats)  # noqa: B023
    return {"keys": keys, "rows": rows, "shapes": results}


def _row_products(q, k, v, scale: float):
    """One decoding row as the earlier engine computed it from 12,288 keys: two products per key head."""
    B, H, _, D = q.shape
    hkv = k.shape[1]
    scores = (q.reshape(B, hkv, H // hkv, D) @ k.transpose(-1, -2)).mul_(scale)  # [B, Hkv, rep, K]
    lse = torch.logsumexp(scores, dim=-1, keepdim=True)
    return scores.sub_(lse).exp_() @ v, lse


def _per_call_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    return timed(lambda: [fn() for _ in range(repeats)], 3) / repeats * 1e3


def bench_memory(n: int = 32768) -> dict:
    """Peak RSS of a fresh process that loads the model and prefills n tokens with SelfExtend, its caches
    reserved for the n tokens as the CLI does (the plan's N), and, in another fresh process, grown from empty."""
    reserved = _peak_rss(n, reserve=n)
    grown = _peak_rss(n, reserve=0)
    return {"tokens": n, "peak_rss_gib": reserved["gib"], "seconds": reserved["seconds"], "grown_gib": grown["gib"]}


def _peak_rss(n: int, *, reserve: int) -> dict:
    root = str(Path(__file__).resolve().parent.parent)
    code = (
        f"import resource, sys, torch; sys.path.insert(0, {root!r});"
        "from longlm_cli.runtime.loader import load_model; from longlm_cli.engine.selfextend import apply_selfextend;"
        "from longlm_cli.runtime.generate import Session, prefill;"
        f"m = load_model('default', dtype='float32').model; apply_selfextend(m, group_size={G}, window={W});"
        f"ids = torch.randint(100, 40000, (1, {n}), generator=torch.Generator().manual_seed(0));"
        f"s = Session.start(m, reserve={reserve}); prefill(s, ids);"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    kib = int(out.stdout.strip().splitlines()[-1])
    return {"gib": kib / 2**20, "seconds": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["prefill", "chunked", "decode", "memory", "gqa", "plain-decode"])
    parser.add_argument("--prefill-tokens", type=int, default=8192)
    parser.add_argument("--decode-context", type=int, default=16384)
    parser.add_argument("--memory-tokens", type=int, default=32768)
    parser.add_argument("--plain-context", type=int, default=8192, help="(e)")
    parser.add_argument(
        "--gqa-keys", type=lambda t: [int(x) for x in t.split(",")], default=[8192], help="(d): comma-separated"
    )
    parser.add_argument(
        "--gqa-rows", type=lambda t: [int(x) for x in t.split(",")], default=[1], help="(d): query rows, comma-sep."
    )
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32", help="(a), (a'), (b), (e)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()

    print(f"machine: {machine()}", flush=True)
    results = {"machine": machine(), "window": W, "group_size": G, "dtype": args.dtype}
    model = None
    if args.only in (None, "prefill", "chunked", "decode", "plain-decode"):
        model = load_model("default", device="cpu", dtype=args.dtype).model
    if args.only in (None, "prefill"):
        r = results["prefill"] = bench_prefill(model, args.prefill_tokens)
        print(
            f"(a) prefill {r['tokens']} tokens, {args.dtype}: plain SDPA {r['plain_s']:.2f} s,"
            f" SelfExtend {r['selfextend_s']:.2f} s, ratio {r['ratio']:.3f} (target <= 1.2)",
            flush=True,
        )
    if args.only in (None, "chunked"):
        r = results["chunked_prefill"] = bench_chunked_prefill(model, args.prefill_tokens)
        print(
            f"(a') chunked prefill {r['tokens']} tokens, {args.dtype} (as the CLI does it):"
            f" plain SDPA {r['plain_s']:.2f} s, SelfExtend {r['selfextend_s']:.2f} s, ratio {r['ratio']:.3f}",
            flush=True,
        )
    if args.only in (None, "decode"):
        r = results["decode"] = bench_decode(model, args.decode_context)
        print(
            f"(b) decode at {r['context']} tokens, {args.dtype}: plain SDPA {r['plain_ms']:.1f} ms/token, SelfExtend"
            f" {r['selfextend_ms']:.1f} ms/token, ratio {r['ratio']:.3f} (target <= 1.3); SelfExtend on"
            f" transformers' concatenating DynamicCache {r['selfextend_concat_cache_ms']:.1f} ms/token: the growing"
            f" cache is {r['speedup_over_concat_cache']:.2f}x faster; memory floor {r['floor_ms']:.1f} ms/token"
            f" ({r['bytes_per_token'] / 1e9:.2f} GB read per token at a measured copy speed of"
            f" {r['copy_gb_per_s']:.1f} GB/s): SelfExtend decodes at {r['over_floor']:.2f}x the floor (target <= 1.5);"
            f" with its grouped keys kept apart {r['selfextend_grouped_apart_ms']:.1f} ms/token;"
            f" with the query heads unfolded (the flash kernel per query head)"
            f" {r['selfextend_unfolded_ms']:.1f} ms/token; both (the engine when issue 14 was filed)"
            f" {r['selfextend_as_filed_ms']:.1f} ms/token: {r['speedup_over_as_filed']:.2f}x faster now (target >= 2)",
            flush=True,
        )
    if args.only in (None, "plain-decode"):
        r = results["plain_decode"] = bench_plain_decode(model, args.plain_context)
        print(
            f"(e) plain decode at {r['context']} tokens, {args.dtype}: transformers' SDPA {r['sdpa_ms']:.1f} ms/token,"
            f" engine/plain.py's attention {r['plain_cpu_ms']:.1f} ms/token, {r['speedup']:.2f}x",
            flush=True,
        )
    if args.only in (None, "gqa"):
        results["gqa"] = []
        for rows in args.gqa_rows:
            for keys in args.gqa_keys:
                r = bench_gqa(keys, rows)
                results["gqa"].append(r)
                for name, shape in r["shapes"].items():
                    H, hkv, D = shape["heads"]
                    products = f", two products {shape['products_ms']:.2f} ms" if "products_ms" in shape else ""
                    print(
                        f"(d) {rows} row(s) x {keys} keys without a mask, {name} heads {H}/{hkv} x {D}: flash kernel"
                        f" {shape['flash_ms']:.2f} ms, folded (the engine) {shape['folded_ms']:.2f} ms,"
                        f" {shape['speedup']:.2f}x{products}",
                        flush=True,
                    )
    if args.only in (None, "memory"):
        del model
        r = results["memory"] = bench_memory(args.memory_tokens)
        print(
            f"(c) peak RSS of a {r['tokens']}-token SelfExtend prefill (float32, whole process), caches reserved"
            f" for the tokens as the CLI does: {r['peak_rss_gib']:.2f} GiB (target <= 4 GiB; took"
            f" {r['seconds']:.0f} s); grown from empty: {r['grown_gib']:.2f} GiB",
            flush=True,
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
