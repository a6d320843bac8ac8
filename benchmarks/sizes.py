"""Real model sizes without real weights: random-weight models built from the real configs of Llama-3.2-1B,
Qwen2.5-3B and Llama-3.1-8B (written below; nothing is downloaded), measured side by side in one process.

    python benchmarks/sizes.py --model llama-3.2-1b --length 8192
    python benchmarks/sizes.py --model llama-3.1-8b --length 8192 --layers 2 --dtype bfloat16
    python benchmarks/sizes.py --table          # the README's "which model on which machine" table

Each run appends one JSON line per (model, dtype, length, layers) to benchmarks/results/sizes.jsonl and skips
cases already there, so a long series resumes. Weights do not change the cost; layers are identical, so with
``--layers K`` only K of the model's layers are built, and the time spent inside them (forward hooks) is scaled
to all the model's layers; the embedding and the output head are timed as they are.

Per case: chunked prefill (the CLI's way, DEFAULT_PREFILL_CHUNK tokens per forward) SelfExtend and plain;
optionally one forward over the whole input each way (``--one-forward``); decode ms/token at that context both
ways (in turns from both caches, best of three rounds of ``--steps`` tokens); peak RSS of the process after the
SelfExtend prefill (measured first, in a fresh process) against weights + KV cache; the size of the
document-cache entry for that many tokens. SelfExtend runs with W=1024, G=4
whatever the model's window: this measures its cost, not its planning.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "results" / "sizes.jsonl"
W, G = 1024, 4
DECODE_ROUNDS = 3
LLAMA3_ROPE = {"rope_type": "llama3", "low_freq_factor": 1.0, "high_freq_factor": 4.0}
CONFIGS = {  # the published config.json of each model, as far as cost goes (vocab, shapes, heads, tying)
    "llama-3.2-1b": dict(
        model_type="llama", vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
        num_attention_heads=32, num_key_value_heads=8, head_dim=64, max_position_embeddings=131072,
        rope_theta=500000.0, rope_scaling={**LLAMA3_ROPE, "factor": 32.0, "original_max_position_embeddings": 8192},
        rms_norm_eps=1e-5, tie_word_embeddings=True,
    ),
    "qwen2.5-3b": dict(
        model_type="qwen2", vocab_size=151936, hidden_size=2048, intermediate_size=11008, num_hidden_layers=36,
        num_attention_heads=16, num_key_value_heads=2, max_position_embeddings=32768, rope_theta=1000000.0,
        rms_norm_eps=1e-6, tie_word_embeddings=True, use_sliding_window=False,
    ),
    "llama-3.1-8b": dict(
        model_type="llama", vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=131072,
        rope_theta=500000.0, rope_scaling={**LLAMA3_ROPE, "factor": 8.0, "original_max_position_embeddings": 8192},
        rms_norm_eps=1e-5, tie_word_embeddings=False,
    ),
}  # fmt: skip


def build(name: str, layers: int | None, dtype):
    """A random-weight model of ``name``'s config with ``layers`` of its layers (all when None)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from longlm_cli.engine.plain import use_plain_cpu_attention

    spec = dict(CONFIGS[name])
    total = spec["num_hidden_layers"]
    spec["num_hidden_layers"] = layers or total
    config = AutoConfig.for_model(**spec)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype).eval()
    return use_plain_cpu_attention(model), total  # as runtime.loader loads a model (engine/plain.py)


class LayerClock:
    """Time spent inside the decoder layers (forward hooks), so that a model built with K of its N layers can be
    timed as the whole: total + inside * (N/K - 1). The embedding and the output head are counted once."""

    def __init__(self, model):
        self.inside = 0.0
        for layer in model.model.layers:
            layer.register_forward_pre_hook(self._enter)
            layer.register_forward_hook(self._leave)

    def _enter(self, module, args):
        self._start = time.perf_counter()

    def _leave(self, module, args, output):
        self.inside += time.perf_counter() - self._start


def rss_gib() -> float:
    """The process's peak resident memory so far (ru_maxrss)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def resident_gib() -> float | None:
    """The process's resident memory now (Linux /proc; None elsewhere): building a model peaks above it."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**30


def measure(
    name: str, length: int, dtype_name: str, layers: int | None, one_forward: bool, steps: int, plain: bool = True
) -> dict:
    """Everything for one case, in this (fresh) process; SelfExtend prefill first so the peak RSS is its own."""
    import torch

    from benchmarks.engine import machine, tokens
    from longlm_cli.doccache.store import entry_size
    from longlm_cli.engine.selfextend import apply_selfextend, remove_selfextend
    from longlm_cli.runtime.generate import Session, prefill

    dtype = getattr(torch, dtype_name)
    model, total_layers = build(name, layers, dtype)
    scale = total_layers / (layers or total_layers)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    in_layers = sum(p.numel() * p.element_size() for n, p in model.named_parameters() if ".layers." in n)
    full_weights = weights + in_layers * (scale - 1)  # the embedding and head once, every layer
    ids = tokens(length)
    step_ids = tokens(steps + 1, seed=1)
    out = {"model": name, "dtype": dtype_name, "length": length, "layers": layers or total_layers}
    out |= {"total_layers": total_layers, "machine": machine(), "weights_gib": full_weights / 2**30}

    clock = LayerClock(model)

    def scaled(fn) -> float:
        """Seconds ``fn`` takes, with the time inside the built layers counted for all the model's layers."""
        clock.inside = 0.0
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start + clock.inside * (scale - 1)

    def chunked(extended: bool) -> tuple[float, Session]:
        (apply_selfextend(model, group_size=G, window=W) if extended else remove_selfextend(model))
        session = Session.start(model, reserve=length + steps + 1)  # as the CLI: the plan's prompt + answer
        return scaled(lambda: prefill(session, ids)), session

    def decode_ms(session: Session, extended: bool) -> float:
        (apply_selfextend(model, group_size=G, window=W) if extended else remove_selfextend(model))
        ms = scaled(lambda: [session.forward(step_ids[:, t : t + 1]) for t in range(steps)]) / steps * 1e3
        session.cache.crop(-steps)  # back to the context, for the next round
        return ms

    baseline, resident = rss_gib(), resident_gib()
    out["selfextend_chunked_s"], session = chunked(True)
    out["peak_rss_gib"] = rss_gib()
    kv = entry_size(session.cache, 0)
    out["kv_gib"] = kv * scale / 2**30
    out["entry_gib"] = entry_size(session.cache, length) * scale / 2**30
    out["rss_over_weights_kv_gib"] = out["peak_rss_gib"] - (weights + kv) / 2**30  # measured layers only
    out["rss_before_prefill_gib"] = baseline  # the peak while building the model (its init's temporaries)
    out["resident_before_prefill_gib"] = resident  # what stays resident of it when the prefill starts
    if not plain:  # SelfExtend alone (a long case where the plain model's figures would take as long again)
        decode_ms(session, True)  # warm-up (its grouped keys up to the context)
        out["selfextend_decode_ms"] = min(decode_ms(session, True) for _ in range(DECODE_ROUNDS))
        return out
    out["plain_chunked_s"], other = chunked(False)
    # Decoding from both caches in turns, best of the rounds: a burst of other work on the machine hits both.
    decode_ms(session, True), decode_ms(other, False)  # warm-up (SelfExtend: its grouped keys up to the context)
    rounds = [(decode_ms(session, True), decode_ms(other, False)) for _ in range(DECODE_ROUNDS)]
    out["selfextend_decode_ms"] = min(r[0] for r in rounds)
    out["plain_decode_ms"] = min(r[1] for r in rounds)
    del session, other
    if one_forward:
        for label, extended in (("plain", False), ("selfextend", True)):
            (apply_selfextend(model, group_size=G, window=W) if extended else remove_selfextend(model))
            with torch.inference_mode():
                out[f"{label}_forward_s"] = scaled(lambda: model(ids, use_cache=False, logits_to_keep=1))
    return out


def done(path: Path) -> set[tuple]:
    if not path.exists():
        return set()
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {(r["model"], r["dtype"], r["length"], r["layers"]) for r in rows}


def table(path: Path) -> None:
    """The README's table: rows by model, length and dtype; the machine of each row as a letter, named below."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows.sort(key=lambda r: (list(CONFIGS).index(r["model"]), r["length"], r["dtype"]))
    machines = list(dict.fromkeys(r["machine"] for r in rows))
    print(
        "| model | dtype | tokens | layers run | weights | KV cache | peak RSS (over weights+KV) | doc-cache entry |"
        " prefill tokens/s SE (plain) | SE/plain chunked | SE/plain one forward | decode ms/token SE (plain) |"
        " machine |"
    )
    print("|" + "---|" * 13)
    for r in rows:
        fwd = f"{r['selfextend_forward_s'] / r['plain_forward_s']:.2f}" if "plain_forward_s" in r else "-"
        partial = r["layers"] != r["total_layers"]
        rss = "-" if partial else f"{r['peak_rss_gib']:.1f} GiB ({r['rss_over_weights_kv_gib']:+.2f})"
        plain = "plain_chunked_s" in r
        tps = f"{r['length'] / r['selfextend_chunked_s']:.0f}" + (
            f" ({r['length'] / r['plain_chunked_s']:.0f})" if plain else ""
        )
        chunked = f"{r['selfextend_chunked_s'] / r['plain_chunked_s']:.2f}" if plain else "-"
        decode = f"{r['selfextend_decode_ms']:.0f}" + (f" ({r['plain_decode_ms']:.0f})" if plain else "")
        print(
            f"| {r['model']} | {r['dtype']} | {r['length']:,} | {r['layers']}/{r['total_layers']} |"
            f" {r['weights_gib']:.1f} GiB | {r['kv_gib']:.2f} GiB | {rss} | {r['entry_gib']:.2f} GiB |"
            f" {tps} | {chunked} | {fwd} | {decode} | {chr(65 + machines.index(r['machine']))} |"
        )
    for i, name in enumerate(machines):
        print(f"machine {chr(65 + i)}: {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(CONFIGS), action="append")
    parser.add_argument("--length", type=int, action="append")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--layers", type=int, help="build only this many of the model's layers (times scaled)")
    parser.add_argument("--one-forward", action="store_true", help="also time one forward over the whole input")
    parser.add_argument("--selfextend-only", action="store_true", help="skip the plain model's prefill and decode")
    parser.add_argument("--steps", type=int, default=8, help="decoded tokens timed")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--table", action="store_true", help="print the table of the results so far")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case in this process
    args = parser.parse_args()
    if args.table:
        return table(args.results)
    if args.case:
        print(json.dumps(measure(*json.loads(args.case))), flush=True)
        return None
    for name in args.model or ["llama-3.2-1b"]:
        for length in args.length or [8192]:
            layers = args.layers if args.layers and args.layers < CONFIGS[name]["num_hidden_layers"] else None
            key = (name, args.dtype, length, layers or CONFIGS[name]["num_hidden_layers"])
            if key in done(args.results):
                print(f"{key}: already measured", flush=True)
                continue
            case = json.dumps(
                [name, length, args.dtype, layers, args.one_forward, args.steps, not args.selfextend_only]
            )
            run = subprocess.run([sys.executable, __file__, "--case", case], capture_output=True, text=True)
            if run.returncode != 0:
                print(f"{key}: failed\n{run.stderr[-2000:]}", flush=True)
                continue
            row = run.stdout.strip().splitlines()[-1]
            args.results.parent.mkdir(parents=True, exist_ok=True)
            with args.results.open("a") as results:
                results.write(row + "\n")
            print(row, flush=True)
    return None


if __name__ == "__main__":
    main()
