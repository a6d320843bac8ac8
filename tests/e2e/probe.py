#!/usr/bin/env python
"""Fault probe for the installed `longlm` command: bad inputs, hostile files and broken caches, end to end.

This script owns nothing in the package; it only drives the `longlm` console script as a user would and reports
what came back. Each scenario runs in its own temporary directory with a fresh, empty cache
(LONGLM_CACHE_DIR, XDG_CACHE_HOME and HF_HOME all point inside it, HF_HUB_OFFLINE=1), so the user's
~/.cache/longlm and Hugging Face cache are never read or written. Model-loading scenarios use a tiny random
Llama (and a tiny GGUF made from it) built here at start-up; only scenarios marked `embedded` load the
embedded SmolLM2 GGUF (`-m default`), and `--fast` skips them.

Every scenario declares what it expects:
  error  non-zero exit, exactly one `Error: ...` line on stderr, no traceback
  ok     exit 0, no `Error:` line, at most one `Warning:` line, no traceback
  flag   the bad input must not pass silently: either `error`, or exit 0 with one `Warning:` line
  any    no traceback, no timeout, no crash; a non-zero exit must still be one `Error:` line
Some also carry a check on their output (escape sequences echoed raw, code run from a pickle, a misleading
message) and a follow-up: a normal command run afterwards in the same cache directory, which must succeed
(and, for document-cache damage, print the same answer as a clean run).

One line per scenario: verdict, name, exit code, traceback yes/no, first line of stderr, and why it failed.
Then the totals by class: `probe: N scenarios, T tracebacks, S inconsistent states, B bad inputs accepted, X
security findings, O other failures, K skipped`, where B counts `error`/`flag` scenarios that exited 0 silently
and output checks that failed on exit 0, S counts failed follow-ups, X counts failed scenarios marked
`security` (hostile.py), and O the rest: timeouts, crashes, wrong message shapes, `ok` scenarios that failed.
The exit status is 1 when any class but N and K is non-zero. `python -m pytest tests/e2e -m e2e` runs the same
scenarios as tests (test_probe.py) and prints the same totals line.

Usage (from the repository root): python tests/e2e/probe.py [--fast] [--only SUBSTRING] [--jobs N] [--keep]
The caller's environment passes through, so PYTHONPATH=<an exported checkout> probes that tree with the same
console script; a warning is printed when the package's sources change during the run (results may then come
from a half-edited tree) or when a clean run no longer passes at the end.
Needs only the standard library and the package's own dependencies (torch, transformers, tokenizers,
safetensors, gguf).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/: the suite's tiny models, when run alone
from helpers import CHAT_TEMPLATE, CORPUS, corpus_tokenizer, pdf_file, save_tiny_llama  # noqa: E402

TRACEBACK = "Traceback (most recent call last)"
TIMEOUT = 120  # seconds, every subprocess
EMBEDDED_TIMEOUT = 600  # the embedded model's first conversion takes about a minute, longer under load
GIB = 1 << 30
MEMORY = 6 * GIB  # RLIMIT_AS of every run unless a scenario sets its own: nothing may eat the machine
EMBEDDED_MEMORY = 16 * GIB
WINDOW = 256  # the tiny model's pretraining window L
QUESTION = "What colour is the ledger?"
IS_ROOT = os.geteuid() == 0


# ---------------------------------------------------------------------------------------------------------
# Running one command


@dataclass
class Result:
    rc: int | None  # None: killed after its timeout
    stdout: str
    stderr: str
    seconds: float

    @property
    def traceback(self) -> bool:
        return TRACEBACK in self.stderr

    @property
    def first(self) -> str:
        return next((line for line in self.stderr.splitlines() if line.strip()), "")

    @property
    def detail(self) -> str:
        """What the first line hides: a traceback's last line, or the `Error:` line when it is not first."""
        lines = [line for line in self.stderr.splitlines() if line.strip()]
        if self.traceback:
            return lines[-1]
        error = next((line for line in lines if line.startswith("Error:")), "")
        return error if error != self.first else ""


def longlm_command() -> str:
    """The `longlm` console script of the Python running this probe, else the first on PATH."""
    beside = Path(sys.executable).parent / "longlm"
    found = str(beside) if beside.exists() else shutil.which("longlm")
    if not found:
        sys.exit("probe: no `longlm` command found (activate the virtual environment first)")
    return found


def _limits(mem: int | None, fsize: int | None):
    if mem is None and fsize is None:
        return None

    def apply() -> None:
        if mem is not None:
            resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        if fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    return apply


def spawn(cmd: list, *, env: dict, cwd: Path, stdin=None, mem=None, fsize=None) -> subprocess.Popen:
    source = subprocess.PIPE if isinstance(stdin, bytes) else (stdin or subprocess.DEVNULL)
    return subprocess.Popen(
        cmd,
        stdin=source,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=cwd,
        preexec_fn=_limits(mem, fsize),
        start_new_session=True,
    )


def finish(proc: subprocess.Popen, *, stdin=None, timeout: float = TIMEOUT, start: float | None = None) -> Result:
    """Wait for ``proc`` (feeding it ``stdin`` bytes); kill its whole process group after ``timeout``."""
    start = time.monotonic() if start is None else start
    rc = None
    try:
        out, err = proc.communicate(stdin if isinstance(stdin, bytes) else None, timeout=timeout)
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        out, err = proc.communicate()
    text = lambda b: b.decode("utf-8", "replace")  # noqa: E731
    return Result(rc, text(out), text(err), time.monotonic() - start)


# ---------------------------------------------------------------------------------------------------------
# Fixtures: a tiny tokenizer and models, a tiny GGUF, a document, and clean runs to compare against


def save_tiny_gpt2(path: Path, tokenizer) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(
        GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=len(tokenizer), n_positions=WINDOW)
    ).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


_GGUF_NAMES = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}
_GGUF_LAYER = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}


def _gguf_name(name: str) -> str:
    if name in _GGUF_NAMES:
        return _GGUF_NAMES[name]
    parts = name.split(".")  # model.layers.N.<module>.weight
    return f"blk.{parts[2]}.{_GGUF_LAYER['.'.join(parts[3:-1])]}.weight"


def _gguf_vocab(model_dir: Path) -> tuple[list[str], list[int], list[str]]:
    spec = json.loads((model_dir / "tokenizer.json").read_text())
    added = {a["id"]: a["content"] for a in spec["added_tokens"]}
    ordered = sorted(spec["model"]["vocab"].items(), key=lambda kv: kv[1])
    tokens = [added.get(i, tok) for tok, i in ordered]
    types = [3 if i in added else 1 for i in range(len(tokens))]
    merges = [" ".join(m) if isinstance(m, list) else m for m in spec["model"]["merges"]]
    return tokens, types, merges


def save_tiny_gguf(path: Path, model_dir: Path) -> Path:
    """The tiny Llama as an unquantized GGUF file with a gpt2-style tokenizer, readable by transformers."""
    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    tokens, types, merges = _gguf_vocab(model_dir)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(WINDOW), w.add_embedding_length(64), w.add_block_count(2), w.add_feed_forward_length(128)
    w.add_head_count(4), w.add_head_count_kv(2), w.add_rope_dimension_count(16), w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_freq_base(10000.0), w.add_vocab_size(len(tokens)), w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default"), w.add_token_list(tokens), w.add_token_types(types), w.add_token_merges(merges)
    w.add_eos_token_id(0), w.add_bos_token_id(0), w.add_chat_template(CHAT_TEMPLATE)
    for name, tensor in load_file(str(model_dir / "model.safetensors")).items():
        w.add_tensor(_gguf_name(name), tensor.astype(np.float32))
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    return path


class Fixtures:
    """Files shared by all scenarios (read-only for them), built once under one temporary directory."""

    def __init__(self, root: Path, command: str):
        self.root, self.command = root, command
        self.lock = threading.Lock()
        self._embedded: Result | None = None
        from transformers.utils import logging

        logging.disable_progress_bar()
        logging.set_verbosity_error()
        tokenizer = corpus_tokenizer()
        self.tiny = save_tiny_llama(root / "tiny-llama", tokenizer, window=WINDOW)
        self.gpt2 = save_tiny_gpt2(root / "tiny-gpt2", tokenizer)
        self.gguf = save_tiny_gguf(root / "tiny.gguf", self.tiny)
        self.doc = root / "ledger.txt"
        self.doc.write_text(CORPUS, encoding="utf-8")
        self.cuda = _cuda_available()

    def clean_runs(self) -> None:
        """A clean ask on the tiny model (its answer and document-cache entry) and a converted tiny GGUF."""
        first = self._seed_run("seed-kv", ask_args(self.doc, self.tiny))
        self.answer, self.ask_seconds = first.stdout, first.seconds
        self.seed_kv = self.root / "seed-kv" / "kv"
        self.gguf_answer = self._seed_run("seed-gguf", ask_args(self.doc, self.gguf, "--no-cache")).stdout
        self.seed_gguf_models = self.root / "seed-gguf" / "models"
        self._seed_run("seed-gguf16", ask_args(self.doc, self.gguf, "--no-cache", "--quantize", "none"))
        self.seed_gguf16_models = self.root / "seed-gguf16" / "models"

    def _seed_run(self, name: str, args: list) -> Result:
        cache = self.root / name
        cache.mkdir()
        self.share_machine_record(cache)
        env = base_env(cache, self.root / name)
        res = finish(spawn([self.command, *map(str, args)], env=env, cwd=self.root, mem=MEMORY))
        if res.rc != 0 or not list(cache.rglob("*.safetensors")):
            sys.exit(
                f"probe: the clean run `longlm {' '.join(map(str, args))}` failed (exit {res.rc}); fix that "
                f"first:\n{res.stderr[-3000:]}"
            )
        return res

    def share_machine_record(self, cache: Path) -> None:
        """Give ``cache`` the first seed run's machine.json: on a CPU with native bf16 the dtype is otherwise measured
        afresh in every cache, and a close measurement could pick another dtype (and so another document-cache key)
        than the seed entries were made with."""
        record = self.root / "seed-kv" / "machine.json"
        if record.is_file() and cache != record.parent:
            shutil.copy2(record, cache / "machine.json")

    def canary(self) -> str | None:
        """Run the clean ask again: a failure means the installed package changed or broke during the probe."""
        cache = Path(tempfile.mkdtemp(prefix="canary-", dir=self.root))
        self.share_machine_record(cache)
        proc = spawn([self.command, *ask_args(self.doc, self.tiny)], env=base_env(cache, cache), cwd=self.root)
        res = finish(proc)
        if res.rc == 0 and res.stdout == self.answer:
            return None
        return f"exit {res.rc}, answer {res.stdout.strip()[:40]!r}: {res.detail or res.first}"

    def embedded_seed(self) -> Result:
        """Convert the embedded model once into a seed cache (the `embedded-first-run` scenario's result)."""
        with self.lock:
            if self._embedded is None:
                cache = self.root / "seed-embedded"
                cache.mkdir()
                proc = spawn(
                    [self.command, *ask_args(self.doc, "default", "--no-cache")],
                    env=base_env(cache, cache),
                    cwd=self.root,
                    mem=EMBEDDED_MEMORY,
                )
                self._embedded = finish(proc, timeout=EMBEDDED_TIMEOUT)
                self.seed_embedded_models = cache / "models"
            return self._embedded


def source_stamp() -> tuple[str, float]:
    """Where the `longlm_cli` package imports from, and the newest mtime of its .py files (0 when not found)."""
    import importlib.util

    spec = importlib.util.find_spec("longlm_cli")
    if spec is None or not spec.submodule_search_locations:
        return "?", 0.0
    root = Path(list(spec.submodule_search_locations)[0])
    return str(root), max((p.stat().st_mtime for p in root.rglob("*.py")), default=0.0)


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def ask_args(doc, model, *extra) -> list:
    return ["ask", str(doc), QUESTION, "-m", str(model), "--max-new-tokens", "4", *extra]


def base_env(cache: Path, home: Path) -> dict:
    """The environment of every run: its own cache, XDG and HF homes, offline, one CPU thread."""
    env = dict(os.environ)
    for inherited in ("LONGLM_CACHE_MAX_BYTES", "LONGLM_CACHE_MIN_TOKENS", "LONGLM_MODEL"):  # the defaults, always
        env.pop(inherited, None)
    env.update(
        LONGLM_CACHE_DIR=str(cache),
        XDG_CACHE_HOME=str(home / "xdg"),
        HF_HOME=str(home / "hf"),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        OMP_NUM_THREADS="1",
        TOKENIZERS_PARALLELISM="false",
    )
    return env


# ---------------------------------------------------------------------------------------------------------
# Scenarios and their sandboxes


@dataclass
class Scenario:
    name: str
    args: list  # `@key` or `@key/rest` expand to sandbox paths (see Box.expand)
    expect: str  # error | ok | flag | any
    files: dict = field(default_factory=dict)  # work-relative path -> bytes or str, written before the run
    setup: Callable | None = None  # setup(box), after files
    stdin: bytes | str | None = None  # bytes, or a path opened for reading ("/dev/zero")
    env: dict = field(default_factory=dict)  # extra variables (values expanded; None unsets)
    timeout: float = TIMEOUT
    mem: int = MEMORY  # RLIMIT_AS in bytes
    fsize: int | None = None  # RLIMIT_FSIZE in bytes
    followup: list | None = None  # a normal command afterwards in the same cache; must succeed
    same_answer: bool = False  # ... and print the clean run's answer
    check: Callable | None = None  # check(box, result) -> (category, message) or None
    embedded: bool = False  # loads the embedded model: skipped with --fast
    skip: str | None = None  # a reason not to run it here
    run: Callable | None = None  # a custom runner(box) -> Result (concurrency, kills)
    security: bool = False  # a failure here is a security finding (counted apart from the other classes)


class Box:
    """One scenario's sandbox: root/cache is LONGLM_CACHE_DIR, root/work is the working directory."""

    def __init__(self, fx: Fixtures, sc: Scenario):
        self.fx, self.sc = fx, sc
        self.root = Path(tempfile.mkdtemp(prefix="case-", dir=fx.root))
        self.cache, self.work = self.root / "cache", self.root / "work"
        self.cache.mkdir(), self.work.mkdir()
        fx.share_machine_record(self.cache)
        self.vars = {
            "tiny": fx.tiny,
            "gpt2": fx.gpt2,
            "gguf": fx.gguf,
            "doc": fx.doc,
            "work": self.work,
            "cache": self.cache,
            "m": self.work / "m",
        }

    def expand(self, arg):
        if not isinstance(arg, str) or not arg.startswith("@"):
            return arg
        key, _, rest = arg[1:].partition("/")
        if key not in self.vars:
            return arg
        return str(self.vars[key] / rest) if rest else str(self.vars[key])

    def env(self) -> dict:
        env = base_env(self.cache, self.root)
        for key, value in self.sc.env.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = self.expand(value)
        return env

    def start(self, args: list, *, stdin=None, mem=None, fsize=None) -> subprocess.Popen:
        cmd = [self.fx.command, *(self.expand(a) for a in args)]
        return spawn(cmd, env=self.env(), cwd=self.work, stdin=stdin, mem=mem or self.sc.mem, fsize=fsize)

    def longlm(self, args: list, *, stdin=None, timeout=None, mem=None, fsize=None) -> Result:
        if isinstance(stdin, str):
            with open(stdin, "rb") as source:
                return self._longlm(args, source, timeout, mem, fsize)
        return self._longlm(args, stdin, timeout, mem, fsize)

    def _longlm(self, args, stdin, timeout, mem, fsize) -> Result:
        start = time.monotonic()
        proc = self.start(args, stdin=stdin, mem=mem, fsize=fsize)
        return finish(proc, stdin=stdin, timeout=timeout or self.sc.timeout, start=start)

    def write(self, rel: str, data) -> Path:
        path = self.work / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
        return path

    def cleanup(self) -> None:
        for path in [self.root, *self.root.rglob("*")]:
            if path.is_dir() and not path.is_symlink():
                os.chmod(path, 0o700)
        shutil.rmtree(self.root, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------------
# Builders: GGUF headers, PDFs, zip containers


def gg_str(data: bytes, length: int | None = None) -> bytes:
    return struct.pack("<Q", len(data) if length is None else length) + data


def gg_kv(key: bytes, value_type: int, payload: bytes) -> bytes:
    return gg_str(key) + struct.pack("<I", value_type) + payload


GG_ARCH = gg_kv(b"general.architecture", 8, gg_str(b"llama"))
GG_CTX = gg_kv(b"llama.context_length", 4, struct.pack("<I", WINDOW))


def gguf_file(*kvs: bytes, version: int = 3, tensors: int = 0, count: int | None = None) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", version, tensors, len(kvs) if count is None else count) + b"".join(kvs)


def nested_arrays(depth: int) -> bytes:
    """An array of one array of one array ... `depth` deep (type 9 = array, count 1 each)."""
    return gg_str(b"deep") + struct.pack("<I", 9) + struct.pack("<IQ", 9, 1) * depth + struct.pack("<IQ", 0, 0)


GGUF_CASES = {
    "random-bytes": random.Random(0).randbytes(4096),
    "empty-file": b"",
    "magic-only": b"GGUF",
    "version-4294967295": gguf_file(GG_ARCH, GG_CTX, version=0xFFFFFFFF),
    "kv-count-2^63": gguf_file(GG_ARCH, GG_CTX, count=2**63 - 1),
    "tensor-count-2^62": gguf_file(GG_ARCH, GG_CTX, tensors=2**62),
    "key-length-2^62": gguf_file(gg_str(b"general.architecture", 2**62)),
    "string-length-2^60": gguf_file(gg_kv(b"general.architecture", 8, gg_str(b"llama", 2**60)), GG_CTX),
    "uint8-array-length-2^60": gguf_file(GG_ARCH, GG_CTX, gg_kv(b"big", 9, struct.pack("<IQ", 0, 2**60))),
    "uint64-array-length-2^62": gguf_file(GG_ARCH, GG_CTX, gg_kv(b"big", 9, struct.pack("<IQ", 10, 2**62))),
    "string-array-length-2^60": gguf_file(GG_ARCH, GG_CTX, gg_kv(b"big", 9, struct.pack("<IQ", 8, 2**60))),
    "arrays-nested-100000-deep": gguf_file(GG_ARCH, GG_CTX, nested_arrays(100_000)),
    "value-type-99": gguf_file(GG_ARCH, gg_kv(b"odd", 99, b"\0" * 8), GG_CTX),
    "key-not-utf8": gguf_file(gg_kv(b"\xff\xfe", 4, struct.pack("<I", 1)), GG_ARCH, GG_CTX),
    "no-architecture": gguf_file(GG_CTX),
    "context-length-0": gguf_file(GG_ARCH, gg_kv(b"llama.context_length", 4, struct.pack("<I", 0))),
    "context-length-string": gguf_file(GG_ARCH, gg_kv(b"llama.context_length", 8, gg_str(b"256"))),
}


def pdf_bytes(text: str, *, cyclic: bool = False) -> bytes:
    """A minimal one-page PDF with one text line; ``cyclic`` makes the page tree its own child."""
    kids = "2 0 R" if cyclic else "3 0 R"
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{kids}] /Count 1 >>".encode(),
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 5 0 R >> >> "
        b"/Contents 4 0 R >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    return pdf_file(objects)


def zip_bytes(members: dict) -> bytes:
    import io

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            method = zipfile.ZIP_STORED if name == "mimetype" else zipfile.ZIP_DEFLATED
            archive.writestr(name, data, compress_type=method)
    return buffer.getvalue()


ODF_TEXT = (
    '<office:document-content xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
    'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0"><office:body><office:text>'
    f"<text:p>{CORPUS}</text:p></office:text></office:body></office:document-content>"
)
W_NS = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
EPUB_OPF = (
    '<package xmlns="http://www.idpf.org/2007/opf" version="3.0"><metadata/><manifest>'
    '<item id="c1" href="ch1.xhtml" media-type="application/xhtml+xml"/></manifest>'
    '<spine><itemref idref="c1"/></spine></package>'
)
EPUB_CONTAINER = (
    '<container xmlns="urn:oasis:names:tc:opendocument:xmlns:container" version="1.0"><rootfiles>'
    '<rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/></rootfiles></container>'
)
# Documents the readers must read (README: DOCX, ODT, EPUB), and damaged ones they must refuse in one line.
CONTAINERS = {
    "docx": {
        "[Content_Types].xml": "<Types/>",
        "word/document.xml": f'<w:document xmlns:w="{W_NS}"><w:body><w:p><w:r><w:t>{CORPUS}</w:t></w:r></w:p>'
        "</w:body></w:document>",
    },
    "epub": {
        "mimetype": "application/epub+zip",
        "META-INF/container.xml": EPUB_CONTAINER,
        "OEBPS/content.opf": EPUB_OPF,
        "OEBPS/ch1.xhtml": f'<html xmlns="http://www.w3.org/1999/xhtml"><body><p>{CORPUS}</p></body></html>',
    },
    "odt": {"mimetype": "application/vnd.oasis.opendocument.text", "content.xml": ODF_TEXT},
}
DAMAGED_CONTAINERS = {
    "docx-without-document": ("docx", {"[Content_Types].xml": "<Types/>", "word/other.xml": "<x/>"}),
    "docx-unbound-prefix": ("docx", {"[Content_Types].xml": "<Types/>", "word/document.xml": "<w:document/>"}),
    "epub-without-rootfile": (
        "epub",
        {"mimetype": "application/epub+zip", "META-INF/container.xml": "<container/>", "OEBPS/ch1.xhtml": "<p/>"},
    ),
    "odt-cut-xml": ("odt", {"mimetype": "application/vnd.oasis.opendocument.text", "content.xml": ODF_TEXT[:90]}),
}


# ---------------------------------------------------------------------------------------------------------
# Damaging copies: model directories, converted models, document-cache entries


def link_tree(source: Path, target: Path) -> None:
    """Copy a tree with hard links (cheap); damage files only through replace_file, never in place."""
    shutil.copytree(source, target, copy_function=os.link)


def replace_file(path: Path, data: bytes | None) -> None:
    """Put ``data`` at ``path`` as a new file (a hard-linked original is left alone); None removes it."""
    path.unlink(missing_ok=True)
    if data is not None:
        path.write_bytes(data)


def truncate_half(path: Path) -> None:
    replace_file(path, path.read_bytes()[: path.stat().st_size // 2])


def model_copy(mutate: Callable[[Path], None]) -> Callable:
    """A setup copying the tiny Llama to work/m and applying ``mutate`` to the copy."""

    def setup(box: Box) -> None:
        link_tree(box.fx.tiny, box.vars["m"])
        mutate(box.vars["m"])

    return setup


def edit_config(**changes) -> Callable[[Path], None]:
    def mutate(model_dir: Path) -> None:
        config = json.loads((model_dir / "config.json").read_text())
        config.update(changes)
        replace_file(model_dir / "config.json", json.dumps(config).encode())

    return mutate


def edit_weights(change: Callable[[dict], dict]) -> Callable[[Path], None]:
    def mutate(model_dir: Path) -> None:
        from safetensors.torch import load_file, save_file

        tensors = change(load_file(str(model_dir / "model.safetensors")))
        (model_dir / "model.safetensors").unlink()
        save_file(tensors, str(model_dir / "model.safetensors"), metadata={"format": "pt"})

    return mutate


def pickled_weights(evil: bool) -> Callable[[Path], None]:
    """Replace model.safetensors by pytorch_model.bin: the real weights, or a pickle that creates a marker file."""

    def mutate(model_dir: Path) -> None:
        import torch
        from safetensors.torch import load_file

        state = load_file(str(model_dir / "model.safetensors"))
        (model_dir / "model.safetensors").unlink()
        payload = _Marker(str(model_dir.parent / "PICKLE-CODE-RAN")) if evil else state
        torch.save(payload, model_dir / "pytorch_model.bin")

    return mutate


class _Marker:
    """Unpickling this calls open(path, "w"): harmless proof that pickle code ran."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return open, (self.path, "w")


def remote_code(module_source: str | None, *, model_type: str = "llama") -> Callable[[Path], None]:
    """config.json maps AutoModelForCausalLM to modeling_probe.ProbeModel (``module_source``; None: no file)."""

    def mutate(model_dir: Path) -> None:
        edit_config(model_type=model_type, auto_map={"AutoModelForCausalLM": "modeling_probe.ProbeModel"})(model_dir)
        if module_source is not None:
            (model_dir / "modeling_probe.py").write_text(module_source)

    return mutate


def converted_dir(box: Box, pattern: str) -> Path:
    found = sorted((box.cache / "models").glob(pattern))
    if not found:
        raise RuntimeError(f"probe: no converted model matching {pattern} in {box.cache / 'models'}")
    return found[0]


def seeded_gguf(mutate: Callable[[Path], None]) -> Callable:
    """A setup putting the converted tiny GGUF (with its completion marker) in the cache, then damaging it."""

    def setup(box: Box) -> None:
        link_tree(box.fx.seed_gguf_models, box.cache / "models")
        mutate(converted_dir(box, "tiny-*"))

    return setup


def seeded_embedded(mutate: Callable[[Path], None]) -> Callable:
    def setup(box: Box) -> None:
        seed = box.fx.embedded_seed()
        if seed.rc != 0:
            raise RuntimeError("probe: the embedded model's first run failed; cannot seed its converted copy")
        link_tree(box.fx.seed_embedded_models, box.cache / "models")
        mutate(converted_dir(box, "SmolLM2-*"))

    return setup


def tensor_digest(tensors: dict) -> str:
    """The document cache's checksum of an entry's tensors: the package's own, so crafted entries stay valid."""
    from longlm_cli.doccache.check import tensor_digest as digest

    return digest(tensors)


def seeded_entry(box: Box) -> Path:
    """Copy the clean run's document-cache entry into this cache; return its path."""
    link_tree(box.fx.seed_kv, box.cache / "kv")
    return next((box.cache / "kv").glob("*.safetensors"))


def entry_tamper(change: Callable[[dict], dict], meta: Callable[[dict], dict] = lambda m: m) -> Callable:
    """A setup rewriting the seeded entry's tensors (and metadata) with a valid, recomputed checksum."""

    def setup(box: Box) -> None:
        from safetensors import safe_open
        from safetensors.torch import load_file, save_file

        path = seeded_entry(box)
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata())
        tensors = change(load_file(str(path)))
        metadata = meta({**metadata, "tensor_sha256": tensor_digest(tensors)})
        path.unlink()
        save_file(tensors, str(path), metadata=metadata)

    return setup


def entry_bytes(change: Callable[[bytes], bytes]) -> Callable:
    def setup(box: Box) -> None:
        path = seeded_entry(box)
        replace_file(path, change(path.read_bytes()))

    return setup


def entry_replace(make: Callable[[Path], None]) -> Callable:
    """A setup putting something else (a directory, a FIFO, a link) where the seeded entry was."""

    def setup(box: Box) -> None:
        path = seeded_entry(box)
        path.unlink()
        make(path)

    return setup


def on_kv(change: Callable[[str, object], object]) -> Callable[[dict], dict]:
    return lambda tensors: {n: (change(n, t) if n[0] in "kv" else t) for n, t in tensors.items()}


def _nan_first(name, t):
    if name == "k.0":
        t = t.clone()
        t.view(-1)[0] = float("nan")
    return t


def _inf_all(name, t):
    return t.clone().fill_(float("inf")) if name == "v.1" else t


# ---------------------------------------------------------------------------------------------------------
# Output checks


def no_raw_controls(box: Box, res: Result):
    bad = sorted({repr(c) for c in res.stdout + res.stderr if (ord(c) < 32 and c not in "\n\t") or c == "\x9b"})
    return ("accepted", f"raw control characters reach the terminal: {', '.join(bad)}") if bad else None


def pickle_did_not_run(box: Box, res: Result):
    if (box.work / "PICKLE-CODE-RAN").exists():
        return "accepted", "code inside pytorch_model.bin ran while loading the model"
    return None


def error_not_saying(*phrases: str) -> Callable:
    def check(box: Box, res: Result):
        found = [p for p in phrases if p in res.stderr]
        return ("other", f"misleading message (says {found[0]!r})") if found else None

    return check


def error_saying(*phrases: str) -> Callable:
    def check(box: Box, res: Result):
        if res.rc == 0 or any(p.lower() in res.stderr.lower() for p in phrases):
            return None
        return "other", f"message does not name the cause (expected one of {', '.join(map(repr, phrases))})"

    return check


def cache_hit(box: Box, res: Result):
    if "document cache hit" not in res.stderr:
        return "other", "the copied entry was not used (no `document cache hit` in -v output): entry scenarios are void"
    return None


# ---------------------------------------------------------------------------------------------------------
# Scenario catalogue

TINY = ["-m", "@tiny", "--max-new-tokens", "4"]
ASK = ["ask", "@doc", QUESTION, *TINY]
ASK_GGUF = ["ask", "@doc", QUESTION, "-m", "@gguf", "--max-new-tokens", "4"]
ASK_EMBEDDED = ["ask", "@doc", QUESTION, "-m", "default", "--max-new-tokens", "4"]
PASSKEY = ["passkey", "-m", "@tiny", "--lengths", "600", "--depths", "0.5", "--method", "none", "--max-new-tokens", "2"]
FACT = [*PASSKEY, "--task", "fact"]
ROOT_SKIP = "running as root: file permissions do not bite" if IS_ROOT else None


def gguf_scenarios() -> list[Scenario]:
    plan_ok = {"tensor-count-2^62"}  # plan reads the header only; a tensor count is not its business
    out = []
    for case, data in GGUF_CASES.items():
        files = {"x.gguf": data}
        out.append(
            Scenario(
                f"gguf-{case}-plan",
                ["plan", "-m", "@work/x.gguf", "-n", "1000"],
                "any" if case in plan_ok else "error",
                files=files,
            )
        )
        out.append(
            Scenario(
                f"gguf-{case}-ask", ["ask", "@doc", QUESTION, "-m", "@work/x.gguf"], "error", files=files, mem=3 * GIB
            )
        )
    return out + [
        Scenario(
            "gguf-header-only-no-tensors-plan",
            ["plan", "-m", "@work/x.gguf", "-n", "1000"],
            "ok",
            files={"x.gguf": gguf_file(GG_ARCH, GG_CTX)},
        ),
        Scenario(
            "gguf-header-only-no-tensors-ask",
            ["ask", "@doc", QUESTION, "-m", "@work/x.gguf"],
            "error",
            files={"x.gguf": gguf_file(GG_ARCH, GG_CTX)},
        ),
        Scenario(
            "gguf-truncated-real-file-ask",
            ["ask", "@doc", QUESTION, "-m", "@work/x.gguf"],
            "error",
            setup=lambda b: b.write("x.gguf", b.fx.gguf.read_bytes()[:200_000]),
            followup=ASK_GGUF,
        ),
        Scenario(
            "gguf-is-a-directory-plan",
            ["plan", "-m", "@work/x.gguf", "-n", "1000"],
            "error",
            setup=lambda b: (b.work / "x.gguf").mkdir(),
        ),
        Scenario(
            "gguf-is-a-directory-ask",
            ["ask", "@doc", QUESTION, "-m", "@work/x.gguf"],
            "error",
            setup=lambda b: (b.work / "x.gguf").mkdir(),
        ),
        Scenario(
            "gguf-symlink-loop-plan",
            ["plan", "-m", "@work/x.gguf", "-n", "1000"],
            "error",
            setup=lambda b: os.symlink("x.gguf", b.work / "x.gguf"),
        ),
        Scenario(
            "gguf-symlink-loop-ask",
            ["ask", "@doc", QUESTION, "-m", "@work/x.gguf"],
            "error",
            setup=lambda b: os.symlink("x.gguf", b.work / "x.gguf"),
        ),
    ]


def _drop(*names):
    return lambda tensors: {n: t for n, t in tensors.items() if n not in names}


def _reshape_embeddings(tensors):
    tensors["model.embed_tokens.weight"] = tensors["model.embed_tokens.weight"][:10].clone()
    return tensors


def _nan_weights(tensors):
    return {n: t.clone().fill_(float("nan")) for n, t in tensors.items()}


def _shrink_vocab(tensors):
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        tensors[name] = tensors[name][:10].clone()
    return tensors


def model_dir_scenarios() -> list[Scenario]:
    def m(name, mutate, expect="error", args=None, **kw):
        return Scenario(
            f"modeldir-{name}",
            args or ["ask", "@doc", QUESTION, "-m", "@m", "--max-new-tokens", "4"],
            expect,
            setup=model_copy(mutate),
            **kw,
        )

    def plan_m(name, mutate, expect="error"):
        return m(f"{name}-plan", mutate, expect, args=["plan", "-m", "@m", "-f", "@doc"])

    def bad_config(text):
        return lambda d: replace_file(d / "config.json", text)

    return [
        m("config-malformed-json", bad_config(b'{"model_type": "llama",')),
        plan_m("config-malformed-json", bad_config(b'{"model_type": "llama",')),
        m("config-is-a-list", bad_config(b"[1, 2]")),
        plan_m("config-is-a-list", bad_config(b"[1, 2]")),
        m("config-not-utf8", bad_config(b'{"model_type": "\xff"}')),
        plan_m("config-not-utf8", bad_config(b'{"model_type": "\xff"}')),
        m("config-empty", bad_config(b"")),
        m("config-is-a-directory", lambda d: (replace_file(d / "config.json", None), (d / "config.json").mkdir())),
        m("config-no-model-type", lambda d: replace_file(d / "config.json", b'{"hidden_size": 64}')),
        m("config-unknown-model-type", edit_config(model_type="probe-nonsense")),
        m("config-max-position-0", edit_config(max_position_embeddings=0)),
        plan_m("config-max-position-0", edit_config(max_position_embeddings=0)),
        m("config-max-position-negative", edit_config(max_position_embeddings=-5)),
        m("config-max-position-string", edit_config(max_position_embeddings="lots")),
        m("config-heads-0", edit_config(num_attention_heads=0, num_key_value_heads=0)),
        m("config-hidden-not-divisible-by-heads", edit_config(num_attention_heads=3, num_key_value_heads=3)),
        m(
            "config-rope-theta-negative",
            edit_config(rope_theta=-1.0, rope_parameters={"rope_type": "default", "rope_theta": -1.0}),
        ),
        m("no-weights", lambda d: replace_file(d / "model.safetensors", None)),
        m("safetensors-truncated", lambda d: truncate_half(d / "model.safetensors")),
        m(
            "safetensors-random-bytes",
            lambda d: replace_file(d / "model.safetensors", random.Random(4).randbytes(4096)),
        ),
        m(
            "safetensors-header-length-2^63",
            lambda d: replace_file(d / "model.safetensors", struct.pack("<Q", 2**63) + b"{}"),
        ),
        m("safetensors-offsets-past-end", lambda d: replace_file(d / "model.safetensors", _lying_safetensors())),
        m(
            "safetensors-is-a-directory",
            lambda d: (replace_file(d / "model.safetensors", None), (d / "model.safetensors").mkdir()),
        ),
        m(
            "safetensors-symlink-dev-zero",
            lambda d: (replace_file(d / "model.safetensors", None), os.symlink("/dev/zero", d / "model.safetensors")),
        ),
        m("safetensors-wrong-embedding-shape", edit_weights(_reshape_embeddings)),
        m("safetensors-missing-tensors", edit_weights(_drop("lm_head.weight", "model.layers.1.mlp.up_proj.weight"))),
        m("safetensors-all-nan", edit_weights(_nan_weights), "any"),
        m("vocab-smaller-than-tokenizer", lambda d: (edit_config(vocab_size=10)(d), edit_weights(_shrink_vocab)(d))),
        m(
            "sharded-index-missing-shard",
            lambda d: (
                replace_file(d / "model.safetensors", None),
                replace_file(
                    d / "model.safetensors.index.json",
                    b'{"metadata": {}, "weight_map": {"lm_head.weight": "gone.safetensors"}}',
                ),
            ),
        ),
        m("only-pytorch-model-bin-plain", pickled_weights(evil=False), "any"),
        m("only-pytorch-model-bin-pickle-payload", pickled_weights(evil=True), check=pickle_did_not_run),
        m("tokenizer-json-malformed", lambda d: replace_file(d / "tokenizer.json", b'{"model": ')),
        plan_m("tokenizer-json-malformed", lambda d: replace_file(d / "tokenizer.json", b'{"model": ')),
        m(
            "tokenizer-files-missing",
            lambda d: [
                replace_file(d / n, None) for n in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")
            ],
        ),
        m(
            "chat-template-raises",
            lambda d: replace_file(d / "chat_template.jinja", b"{{ raise_exception('probe: template refuses') }}"),
        ),
        m("chat-template-syntax-error", lambda d: replace_file(d / "chat_template.jinja", b"{% for %}")),
        # A known model_type with an auto_map loads the built-in class: harmless, so only report what happens.
        m("auto-map-known-type-without-trust", remote_code("class ProbeModel: pass\n"), "any"),
        m("auto-map-custom-type-without-trust", remote_code("class ProbeModel: pass\n", model_type="probe-custom")),
        m("remote-code-syntax-error", remote_code("def broken(:\n"), args=_trusted()),
        m(
            "remote-code-raises-on-import",
            remote_code("raise RuntimeError('probe: remote code refuses')\n"),
            args=_trusted(),
        ),
        m("remote-code-missing-package", remote_code("import probe_no_such_package\n"), args=_trusted()),
        m("remote-code-file-missing", remote_code(None), args=_trusted()),
        m("remote-code-class-missing", remote_code("X = 1\n"), args=_trusted()),
        m("remote-code-not-a-model", remote_code("class ProbeModel:\n    pass\n"), args=_trusted()),
        Scenario("modeldir-gpt2-no-rope", ["ask", "@doc", QUESTION, "-m", "@gpt2", "--max-new-tokens", "4"], "error"),
        Scenario(
            "modeldir-symlink-loop",
            ["ask", "@doc", QUESTION, "-m", "@work/loop"],
            "error",
            setup=lambda b: os.symlink("loop", b.work / "loop"),
        ),
        Scenario("modeldir-no-config", ["ask", "@doc", QUESTION, "-m", "@work"], "error"),
        Scenario("modeldir-plan-no-config", ["plan", "-m", "@work", "-n", "1000"], "error"),
    ]


def _trusted() -> list:
    return ["ask", "@doc", QUESTION, "-m", "@m", "--max-new-tokens", "4", "--trust-remote-code"]


def _lying_safetensors() -> bytes:
    header = json.dumps({"lm_head.weight": {"dtype": "F32", "shape": [320, 64], "data_offsets": [0, 81920]}}).encode()
    return struct.pack("<Q", len(header)) + header + b"\0" * 64


def model_name_scenarios() -> list[Scenario]:
    return [
        Scenario("model-empty-name", ["ask", "@doc", QUESTION, "-m", ""], "error"),
        Scenario("model-hub-id-offline", ["ask", "@doc", QUESTION, "-m", "probe-org/no-such-model"], "error"),
        Scenario("model-family-name-for-ask", ["ask", "@doc", QUESTION, "-m", "llama2"], "error"),
        Scenario("model-relative-missing-path", ["ask", "@doc", QUESTION, "-m", "../no/such/model"], "error"),
        Scenario(
            "model-regular-file-not-gguf",
            ["ask", "@doc", QUESTION, "-m", "@doc"],
            "error",
            check=error_not_saying("does not exist"),
        ),
        Scenario("model-plan-regular-file-not-gguf", ["plan", "-m", "@doc", "-n", "1000"], "error"),
        Scenario("model-plan-unknown-family", ["plan", "-m", "probe-family", "-n", "1000"], "error"),
        Scenario("model-plan-config-json-directly", ["plan", "-m", "@tiny/config.json", "-n", "1000"], "ok"),
        Scenario("model-dtype-float16-cpu", [*ASK, "--dtype", "float16"], "any"),
        Scenario("model-device-cuda-without-cuda", [*ASK, "--device", "cuda"], "error"),
    ]


def converted_store_scenarios() -> list[Scenario]:
    def c(name, mutate, expect="flag", **kw):
        return Scenario(f"converted-{name}", ASK_GGUF, expect, setup=seeded_gguf(mutate), followup=ASK_GGUF, **kw)

    def leftovers(d: Path) -> None:
        (d / ".longlm-complete").unlink()
        truncate_half(d / "model.safetensors")
        stale = d.parent / f".{d.name}.probe-left"
        stale.mkdir()
        (stale / "config.json").write_text("{")

    return [
        Scenario("converted-seeded-copy-is-used", ASK_GGUF, "ok", setup=seeded_gguf(lambda d: None)),
        c("truncated-safetensors-with-marker", lambda d: truncate_half(d / "model.safetensors")),
        c("missing-safetensors-with-marker", lambda d: replace_file(d / "model.safetensors", None)),
        c("malformed-config-with-marker", lambda d: replace_file(d / "config.json", b"{")),
        c("missing-config-with-marker", lambda d: replace_file(d / "config.json", None)),
        c("malformed-tokenizer-with-marker", lambda d: replace_file(d / "tokenizer.json", b"{")),
        c("dir-replaced-by-file", lambda d: (shutil.rmtree(d), d.write_text("not a directory"))),
        c("interrupted-leftovers-without-marker", leftovers, "ok"),
        Scenario(
            "converted-models-dir-is-a-file",
            ASK_GGUF,
            "error",
            setup=lambda b: (b.cache / "models").write_text("not a directory"),
        ),
        Scenario("converted-conversion-hits-file-size-limit", ASK_GGUF, "error", fsize=64 * 1024, followup=ASK_GGUF),
        Scenario(
            "converted-two-first-runs-at-once",
            ASK_GGUF,
            "ok",
            run=lambda b: concurrent(b, [ASK_GGUF] * 2),
            followup=ASK_GGUF,
        ),
    ]


def doc_cache_scenarios() -> list[Scenario]:
    def e(name, setup, expect="flag", args=None, **kw):
        kw.setdefault("followup", ASK)
        return Scenario(f"kv-{name}", args or ASK, expect, setup=setup, same_answer=True, **kw)

    def fifo(p):
        os.mkfifo(p)

    layer_meta = lambda meta: {**meta, "layers": "1"}  # noqa: E731
    return [
        Scenario("kv-seeded-entry-is-a-hit", [*ASK, "-v"], "ok", setup=seeded_entry, check=cache_hit),
        e("head-size-8-valid-checksum", entry_tamper(on_kv(lambda n, t: t[..., :8].contiguous()))),
        e("head-count-1-valid-checksum", entry_tamper(on_kv(lambda n, t: t[:, :1].contiguous()))),
        e(
            "v-head-size-differs-valid-checksum",
            entry_tamper(on_kv(lambda n, t: t.repeat(1, 1, 1, 2) if n.startswith("v") else t)),
        ),
        e("batch-2-valid-checksum", entry_tamper(on_kv(lambda n, t: t.repeat(2, 1, 1, 1)))),
        e("nan-key-valid-checksum", entry_tamper(on_kv(_nan_first))),
        e("inf-values-valid-checksum", entry_tamper(on_kv(_inf_all))),
        e("float16-valid-checksum", entry_tamper(on_kv(lambda n, t: t.half()))),
        e("float64-valid-checksum", entry_tamper(on_kv(lambda n, t: t.double()))),
        e("ids-int32-valid-checksum", entry_tamper(lambda ts: {**ts, "ids": ts["ids"].int()}), "any"),
        e("extra-tensor-valid-checksum", entry_tamper(lambda ts: {**ts, "x": ts["ids"].clone()})),
        e("one-layer-valid-checksum", entry_tamper(_drop("k.1", "v.1"), layer_meta)),
        e("metadata-tokens-not-a-number", entry_tamper(lambda ts: ts, lambda m: {**m, "tokens": "many"})),
        e("checksum-wrong", entry_tamper(lambda ts: ts, lambda m: {**m, "tensor_sha256": "0" * 64})),
        e("truncated", entry_bytes(lambda data: data[: len(data) // 2])),
        e("random-bytes", entry_bytes(lambda data: random.Random(1).randbytes(len(data)))),
        e("header-length-2^63", entry_bytes(lambda data: struct.pack("<Q", 2**63) + data[8:])),
        e("directory-at-entry-path", entry_replace(lambda p: p.mkdir()), "ok"),
        e("symlink-to-dev-zero", entry_replace(lambda p: os.symlink("/dev/zero", p)), "ok"),
        e("fifo-at-entry-path", entry_replace(fifo), "ok", timeout=30),
        Scenario("kv-cache-list-with-fifo-entry", ["cache", "list"], "ok", setup=entry_replace(fifo), timeout=30),
        Scenario(
            "kv-cache-list-with-directory-entry", ["cache", "list"], "ok", setup=entry_replace(lambda p: p.mkdir())
        ),
        Scenario(
            "kv-cache-clear-with-directory-entry",
            ["cache", "clear"],
            "ok",
            setup=entry_replace(lambda p: p.mkdir()),
            check=_nothing_claimed_removed,
        ),
        Scenario(
            "kv-cache-prune-with-stale-temp-dir", ["cache", "prune", "--max-bytes", "0"], "ok", setup=_stale_temp_dir
        ),
        Scenario(
            "kv-cache-list-escape-sequences-in-sources",
            ["cache", "list"],
            "ok",
            setup=entry_tamper(
                lambda ts: ts,
                lambda m: {**m, "sources": json.dumps(["\x1b]0;probe-title\x07\x1b[2J\x1b[31mred\x9b1m.txt"])},
            ),
            check=no_raw_controls,
        ),
        Scenario(
            "kv-cache-list-sources-not-a-list",
            ["cache", "list"],
            "ok",
            setup=entry_tamper(lambda ts: ts, lambda m: {**m, "sources": "5"}),
        ),
        Scenario(
            "kv-cache-list-escape-in-document-name",
            ["cache", "list"],
            "ok",
            setup=_ask_on_named_file("e\x1b[31mred\x1b]0;t\x07.txt"),
            check=no_raw_controls,
        ),
        Scenario(
            "kv-cache-list-non-utf8-document-name",
            ["cache", "list"],
            "ok",
            setup=_ask_on_named_file(os.fsdecode(b"bad\xff.txt")),
        ),
        Scenario("kv-kv-dir-is-a-file", ASK, "ok", setup=lambda b: (b.cache / "kv").write_text("x"), followup=ASK),
        Scenario("kv-kv-dir-symlink-loop", ASK, "ok", setup=lambda b: os.symlink("kv", b.cache / "kv"), followup=ASK),
        Scenario("kv-max-bytes-not-a-number", ASK, "error", env={"LONGLM_CACHE_MAX_BYTES": "lots"}),
        Scenario("kv-max-bytes-negative", ASK, "error", env={"LONGLM_CACHE_MAX_BYTES": "-1"}),
        Scenario("kv-max-bytes-float", ASK, "error", env={"LONGLM_CACHE_MAX_BYTES": "1e9"}),
        Scenario("kv-max-bytes-zero", ASK, "ok", env={"LONGLM_CACHE_MAX_BYTES": "0"}),
        Scenario("kv-max-bytes-huge", ASK, "ok", env={"LONGLM_CACHE_MAX_BYTES": "9" * 40}),
        Scenario("kv-cache-list-max-bytes-bad", ["cache", "list"], "any", env={"LONGLM_CACHE_MAX_BYTES": "lots"}),
        Scenario("kv-cache-prune-max-bytes-negative", ["cache", "prune", "--max-bytes", "-1"], "error"),
        Scenario("kv-save-hits-file-size-limit", ASK, "ok", fsize=64 * 1024, followup=ASK, same_answer=True),
        Scenario(
            "kv-three-runs-at-once-same-document",
            ASK,
            "ok",
            run=lambda b: concurrent(b, [ASK] * 3),
            followup=ASK,
            same_answer=True,
        ),
        Scenario(
            "kv-ask-while-cache-clear",
            ASK,
            "ok",
            followup=ASK,
            same_answer=True,
            run=lambda b: concurrent(b, [ASK, ["cache", "clear"], ["cache", "prune", "--max-bytes", "0"]]),
        ),
    ]


def _nothing_claimed_removed(box: Box, res: Result):
    if res.rc == 0 and "Removed 1 " in res.stdout and any((box.cache / "kv").glob("*.safetensors")):
        return "other", "says it removed an entry that is still there"
    return None


def _stale_temp_dir(box: Box) -> None:
    seeded_entry(box)
    stale = box.cache / "kv" / ".tmp-probe-stale"
    stale.mkdir()
    os.utime(stale, (0, 0))


def _ask_on_named_file(name: str) -> Callable:
    def setup(box: Box) -> None:
        path = box.work / name
        path.write_text(CORPUS)
        res = box.longlm(["ask", str(path), QUESTION, *TINY])
        if res.rc != 0:
            raise RuntimeError(f"probe: setup ask on {name!r} failed: {res.first}")

    return setup


def cache_dir_scenarios() -> list[Scenario]:
    file_env = {"LONGLM_CACHE_DIR": "@work/cachefile"}
    file_setup = {"cachefile": "not a directory"}
    loop_env = {"LONGLM_CACHE_DIR": "@work/loop"}

    def d(name, args, expect, **kw):
        return Scenario(f"cachedir-{name}", args, expect, **kw)

    return [
        d("is-a-file-ask", ASK, "ok", env=file_env, files=file_setup),
        d("is-a-file-ask-gguf", ASK_GGUF, "error", env=file_env, files=file_setup),
        d("is-a-file-plan-default", ["plan", "-m", "default", "-f", "@doc"], "ok", env=file_env, files=file_setup),
        d("is-a-file-cache-list", ["cache", "list"], "ok", env=file_env, files=file_setup),
        d("is-a-file-cache-clear", ["cache", "clear"], "ok", env=file_env, files=file_setup),
        d("is-a-file-cache-prune", ["cache", "prune"], "ok", env=file_env, files=file_setup),
        d("dev-null-ask", ASK, "ok", env={"LONGLM_CACHE_DIR": "/dev/null"}),
        d("symlink-loop-ask", ASK, "ok", env=loop_env, setup=lambda b: os.symlink("loop", b.work / "loop")),
        d(
            "symlink-loop-cache-list",
            ["cache", "list"],
            "ok",
            env=loop_env,
            setup=lambda b: os.symlink("loop", b.work / "loop"),
        ),
        d("unknown-user-home-ask", ASK, "any", env={"LONGLM_CACHE_DIR": "~probe_no_such_user/cache"}),
        d("unknown-user-home-cache-list", ["cache", "list"], "any", env={"LONGLM_CACHE_DIR": "~probe_no_such_user/c"}),
        d("relative-path-ask", ASK, "ok", env={"LONGLM_CACHE_DIR": "rel-cache"}),
        d("name-too-long-ask", ASK, "ok", env={"LONGLM_CACHE_DIR": "/tmp/" + "x" * 300}),
        d("unwritable-ask", ASK, "ok", setup=lambda b: os.chmod(b.cache, 0o500), skip=ROOT_SKIP),
        d("unwritable-ask-gguf", ASK_GGUF, "error", setup=lambda b: os.chmod(b.cache, 0o500), skip=ROOT_SKIP),
        d("unwritable-cache-clear", ["cache", "clear"], "any", setup=_unwritable_kv, skip=ROOT_SKIP),
        d("unreadable-entry-ask", ASK, "ok", setup=lambda b: os.chmod(seeded_entry(b), 0), skip=ROOT_SKIP),
        d(
            "unreadable-document",
            ["ask", "@work/secret.txt", QUESTION, *TINY],
            "error",
            files={"secret.txt": CORPUS},
            setup=lambda b: os.chmod(b.work / "secret.txt", 0),
            skip=ROOT_SKIP,
        ),
    ]


def _unwritable_kv(box: Box) -> None:
    seeded_entry(box)
    os.chmod(box.cache / "kv", 0o500)


def input_scenarios() -> list[Scenario]:
    def s(name, args, expect="error", **kw):
        return Scenario(f"input-{name}", args, expect, **kw)

    def doc(name, data, expect="error", **kw):
        return s(name, ["summarize", "@work/doc.txt", *TINY], expect, files={"doc.txt": data}, **kw)

    controls = bytes(c for c in range(1, 32) if c not in b"\t\n\v\f\r ") * 20
    return [
        doc("only-control-characters", controls),
        doc("input-cap-exceeded", CORPUS, env={"LONGLM_MAX_INPUT_BYTES": "100"}),
        doc("input-cap-not-a-number", CORPUS, env={"LONGLM_MAX_INPUT_BYTES": "lots"}),
        doc("input-cap-negative", CORPUS, env={"LONGLM_MAX_INPUT_BYTES": "-1"}),
        doc("empty-file", b""),
        doc("only-whitespace", b" \n\t\r\n  "),
        doc("only-bom", b"\xef\xbb\xbf"),
        doc("only-nul-bytes", b"\0" * 100),
        doc("nul-in-text", CORPUS.encode() + b"\0tail"),
        doc("too-long-even-extended", ("salt timber wool ledger " * 12000).encode()),
        doc("escape-sequences-in-text", ("\x1b[2J\x1b]0;title\x07" + CORPUS).encode(), "ok"),
        doc("one-long-line-no-spaces", b"a" * 20000, "any"),
        doc("document-contains-placeholders", ("{document} {question} " + CORPUS).encode(), "ok"),
        s("stdin-document", ["ask", "-", QUESTION, *TINY], "ok", stdin=CORPUS.encode()),
        s("stdin-empty", ["ask", "-", QUESTION, *TINY], stdin=b""),
        s("stdin-twice", ["ask", "-", "-", QUESTION, *TINY], stdin=CORPUS.encode()),
        s("missing-file", ["ask", "@work/none.txt", QUESTION, *TINY]),
        s("directory-as-document", ["ask", "@work", QUESTION, *TINY]),
        s("empty-string-as-document", ["ask", "", QUESTION, *TINY], check=error_not_saying("'' is a directory")),
        s("no-documents-summarize", ["summarize", *TINY]),
        s(
            "symlink-loop-document",
            ["ask", "@work/loop", QUESTION, *TINY],
            setup=lambda b: os.symlink("loop", b.work / "loop"),
            check=error_not_saying("does not exist"),
        ),
        s(
            "dangling-symlink-document",
            ["ask", "@work/dangling", QUESTION, *TINY],
            setup=lambda b: os.symlink("nowhere", b.work / "dangling"),
        ),
        s("file-path-through-a-file", ["ask", "@doc/inner.txt", QUESTION, *TINY]),
        s(
            "escape-sequences-in-missing-name",
            ["ask", "@work/x\x1b[31mred\x1b]0;t\x07.txt", QUESTION, *TINY],
            check=no_raw_controls,
        ),
        s(
            "non-utf8-name-document",
            ["ask", os.fsdecode(b"@work/bad\xff.txt"), QUESTION, *TINY],
            "ok",
            files={os.fsdecode(b"bad\xff.txt"): CORPUS},
        ),
        s("dev-zero-plan", ["plan", "-f", "/dev/zero"], timeout=60, mem=1 * GIB),
        s("dev-zero-plan-stdin", ["plan", "-f", "-"], stdin="/dev/zero", timeout=60, mem=1 * GIB),
        s("dev-zero-ask", ["ask", "/dev/zero", QUESTION, *TINY], timeout=60, mem=3 * GIB),
        s(
            "dev-zero-prompt-file",
            ["ask", "@doc", QUESTION, *TINY, "--prompt-file", "/dev/zero"],
            timeout=60,
            mem=3 * GIB,
        ),
        s("dev-urandom-ask", ["ask", "/dev/urandom", QUESTION, *TINY], timeout=60, mem=3 * GIB),
        s("empty-question", ["ask", "@doc", "", *TINY]),
        s("whitespace-question", ["ask", "@doc", "  \t ", *TINY]),
        s("escape-sequence-question", ["ask", "@doc", "\x1b[2J?", *TINY], "any"),
        s("question-contains-placeholders", ["ask", "@doc", "{document} {question}?", *TINY], "ok"),
    ]


def option_scenarios() -> list[Scenario]:
    def o(name, extra, expect="error", base=ASK):
        return Scenario(f"option-{name}", [*base, *extra], expect)

    def p(name, args, expect="error"):
        return Scenario(f"plan-{name}", ["plan", *args], expect)

    hot = ["--temperature", "1.0", "--seed"]
    return [
        o("temperature-nan", ["--temperature", "nan"]),
        o("temperature-inf", ["--temperature", "inf"]),
        o("temperature-negative", ["--temperature", "-1"]),
        o("temperature-minus-zero", ["--temperature", "-0.0"], "ok"),
        o("temperature-1e-45", ["--temperature", "1e-45"], "ok"),
        o("temperature-1e308", ["--temperature", "1e308"], "ok"),
        o("seed-negative", [*hot, "-1"], "ok"),
        o("seed-2^70", [*hot, str(2**70)], "any"),
        o("max-new-tokens-0", ["--max-new-tokens", "0"]),
        o("max-new-tokens-negative", ["--max-new-tokens", "-3"]),
        o("max-new-tokens-10^12", ["--max-new-tokens", str(10**12)], "any"),
        o("window-0", ["-w", "0"]),
        o("window-negative", ["-w", "-8"]),
        o("window-equal-L", ["-w", str(WINDOW)]),
        o("window-10^20", ["-w", str(10**20)]),
        o("window-1", ["-w", "1"], "any"),
        o("group-0", ["-g", "0"]),
        o("group-negative", ["-g", "-2"]),
        o("group-65", ["-g", "65"]),
        o("group-1-document-longer-than-L", ["-g", "1"]),
        o("group-10^20", ["-g", str(10**20)]),
        o("budget-0", ["--budget", "0"], base=["chat", "@doc", *TINY]),
        o("budget-negative", ["--budget", "-5"], base=["chat", "@doc", *TINY]),
        o("budget-10^9", ["--budget", str(10**9)], base=["chat", "@doc", *TINY]),
        p("length-0", ["-n", "0"]),
        p("length-negative", ["-n", "-5"]),
        p("length-10^30", ["-n", str(10**30)]),
        p("length-not-a-number", ["-n", "many"]),
        p("length-and-file", ["-n", "100", "-f", "@doc"]),
        p("neither-length-nor-file", []),
        p("window-negative", ["-n", "1000", "-w", "-1"]),
        p("window-0", ["-n", "1000", "-w", "0"]),
        p("group-0", ["-n", "100000", "-g", "0"]),
        p("group-65", ["-n", "100000", "-g", "65"]),
        p("missing-file", ["-f", "@work/none.txt"]),
        p("json-ok", ["-n", "30000", "-m", "llama2", "--json"], "ok"),
        p("tiny-tokenizer-count-ok", ["-m", "@tiny", "-f", "@doc"], "ok"),
        Scenario(
            "plan-embedded-tokenizer-json-corrupt",
            ["plan", "-m", "smollm2", "-f", "@doc"],
            "flag",
            setup=lambda b: _write(b.cache / "models" / "SmolLM2-135M-Instruct" / "tokenizer.json", b"{"),
        ),
        Scenario(
            "plan-embedded-tokenizer-json-is-a-dir",
            ["plan", "-m", "smollm2", "-f", "@doc"],
            "ok",
            setup=lambda b: (b.cache / "models" / "SmolLM2-135M-Instruct" / "tokenizer.json").mkdir(parents=True),
        ),
    ]


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def prompt_file_scenarios() -> list[Scenario]:
    def t(name, text, expect="error", task="ask", **kw):
        files = {"prompt.txt": text} if text is not None else {}
        base = ["ask", "@doc", QUESTION] if task == "ask" else ["summarize", "@doc"]
        return Scenario(
            f"prompt-{name}", [*base, *TINY, "--prompt-file", "@work/prompt.txt"], expect, files=files, **kw
        )

    return [
        t("not-utf8", b"\xff\xfe{document} {question}"),
        t("missing", None),
        t("empty", b""),
        t("no-document", b"Answer {question}"),
        t("document-twice", b"{document} {document} {question}"),
        t("ask-without-question", b"{document} Summarize."),
        t("question-before-document", b"{question} {document}"),
        t("misspelt-placeholder", b"{documents} {question}"),
        t("directory", None, setup=lambda b: (b.work / "prompt.txt").mkdir()),
        t("summarize-with-question-placeholder", b"{document}\n\nAnswer: {question}", "flag", task="summarize"),
        t("ask-ok", b"Read: {document}\nQ: {question}", "ok"),
    ]


def encoding_scenarios() -> list[Scenario]:
    def enc(name, data, expect="error", suffix="txt", **kw):
        return Scenario(
            f"encoding-{name}", ["summarize", f"@work/doc.{suffix}", *TINY], expect, files={f"doc.{suffix}": data}, **kw
        )

    # README: text in any encoding is read (BOMs, UTF-16/32 patterns, charset-normalizer); only binary is refused.
    return [
        enc("utf16-le-bom", CORPUS.encode("utf-16"), "ok"),
        enc("utf16-be-bom", b"\xfe\xff" + CORPUS.encode("utf-16-be"), "ok"),
        enc("utf32-bom", CORPUS.encode("utf-32"), "ok"),
        enc("utf16-no-bom", CORPUS.encode("utf-16-le"), "ok"),
        enc("utf16-bom-odd-length", CORPUS.encode("utf-16") + b"\x41"),
        enc("latin1", ("Caf\u00e9 cr\u00e8me. " + CORPUS).encode("latin-1"), "ok"),
        enc("cp1252-smart-quotes", ("\u201cquoted\u201d " + CORPUS).encode("cp1252"), "ok"),
        enc("utf8-encoded-surrogate", CORPUS.encode() + b"\xed\xa0\x80", "any"),
        enc("utf8-overlong", CORPUS.encode() + b"\xc0\xaf", "any"),
        enc("random-bytes-no-nul", bytes(b for b in random.Random(5).randbytes(6000) if b)),
        enc("utf8-bom", b"\xef\xbb\xbf" + CORPUS.encode(), "ok"),
        enc("crlf", CORPUS.replace(". ", ".\r\n").encode(), "ok"),
        enc("cr-only", CORPUS.replace(". ", ".\r").encode(), "ok"),
        enc("gzip", __import__("gzip").compress(CORPUS.encode()), suffix="txt.gz"),
        *[enc(kind, zip_bytes(members), "ok", suffix=kind) for kind, members in CONTAINERS.items()],
        *[enc(name, zip_bytes(members), suffix=kind) for name, (kind, members) in DAMAGED_CONTAINERS.items()],
        enc("plain-text-named-docx", CORPUS.encode(), "ok", suffix="docx"),
        enc("pdf-with-text", pdf_bytes("The keeper wrote in a green ledger."), "ok", suffix="pdf"),
        enc("pdf-truncated", pdf_bytes("The keeper wrote in a green ledger.")[:120], suffix="pdf"),
        enc("pdf-cyclic-page-tree", pdf_bytes("loop", cyclic=True), suffix="pdf", timeout=60),
        enc("text-named-pdf", CORPUS.encode(), suffix="pdf"),
        enc("pdf-magic-then-garbage", b"%PDF-1.7\n" + random.Random(2).randbytes(2000)),
    ]


def chat_scenarios() -> list[Scenario]:
    def c(name, stdin, expect="ok", extra=(), **kw):
        return Scenario(f"chat-{name}", ["chat", "@doc", *TINY, *extra], expect, stdin=stdin, **kw)

    return [
        c("invalid-utf8-stdin", b"\xff\xfe what?\n", "flag"),
        c("invalid-utf8-second-line", b"Who?\n\xc3\x28 what?\n", "flag"),
        c("empty-stdin", b""),
        c("only-exit", b"/exit\n"),
        c("only-blank-lines", b"\n \n\t\n"),
        c("nul-in-question", b"who\0what?\n", "any"),
        c("two-questions", b"Who?\nWhere?\n"),
        c("question-too-long", (("salt " * 30000) + "?\n").encode(), "error"),
        c(
            "budget-1-outgrown-by-60-questions",
            b"What does the keeper count every evening?\n" * 60,
            "error",
            ["--budget", "1"],
        ),
        Scenario("chat-stdin-as-document", ["chat", "-", *TINY], "error", stdin=b"q\n"),
    ]


def passkey_scenarios() -> list[Scenario]:
    results = "@work/r.jsonl"

    def k(name, extra, expect="error", base=PASSKEY, **kw):
        return Scenario(f"passkey-{name}", [*base, "--results", results, *extra], expect, **kw)

    record = {
        "task": "passkey",
        "haystack": None,
        "method": "none",
        "length": 600,
        "depth": 0.5,
        "trial": 0,
        "seed": 0,
        "W": None,
        "G": None,
        "factor": None,
    }

    def results_with(line: Callable[[Box], bytes]) -> Callable:
        return lambda box: box.write("r.jsonl", line(box))

    no_correct = lambda b: json.dumps({**record, "model": str(b.fx.tiny), "answer": "1"}).encode() + b"\n"  # noqa
    return [
        k("baseline", [], "ok"),
        k("fact-baseline", [], "ok", base=FACT),
        k("results-not-utf8", [], "flag", setup=results_with(lambda b: b"\xff\xfe garbage\n")),
        k("results-record-lacks-correct", [], "flag", setup=results_with(no_correct)),
        k("results-record-is-a-list", [], "flag", setup=results_with(lambda b: b"[1, 2]\n")),
        Scenario("passkey-results-dev-full", [*PASSKEY, "--results", "/dev/full"], "error", timeout=60, mem=3 * GIB),
        Scenario("passkey-results-under-a-file", [*PASSKEY, "--results", "@doc/r.jsonl"], "error"),
        Scenario("passkey-results-in-missing-directory", [*PASSKEY, "--results", "@work/new/dir/r.jsonl"], "ok"),
        k("json-into-missing-directory", ["--json", "@work/missing/out.json"]),
        k("json-dev-full", ["--json", "/dev/full"]),
        k("json-is-a-directory", ["--json", "@work"]),
        k("haystack-empty", ["--haystack", "@work/h.txt"], base=FACT, files={"h.txt": b""}),
        k(
            "haystack-binary",
            ["--haystack", "@work/h.bin"],
            base=FACT,
            files={"h.bin": random.Random(3).randbytes(20000)},
        ),
        k(
            "haystack-latin1",
            ["--haystack", "@work/h.txt"],
            "ok",
            base=FACT,
            files={"h.txt": ("Caf\u00e9. " + CORPUS * 20).encode("latin-1")},
        ),
        k("haystack-too-short", ["--haystack", "@work/h.txt"], base=FACT, files={"h.txt": b"One short line."}),
        k("haystack-missing", ["--haystack", "@work/none.txt"], base=FACT),
        k("haystack-directory", ["--haystack", "@work"], base=FACT),
        k("haystack-dev-zero", ["--haystack", "/dev/zero"], base=FACT, timeout=60, mem=3 * GIB),
        k("haystack-with-task-passkey", ["--haystack", "@doc"]),
        k("lengths-empty", ["--lengths", ""]),
        k("lengths-zero", ["--lengths", "0"]),
        k("lengths-negative", ["--lengths", "-4k"]),
        k("lengths-fraction", ["--lengths", "1.5"]),
        k("lengths-exponent", ["--lengths", "1e3"]),
        k("lengths-1-too-short", ["--lengths", "1"]),
        k("lengths-100000k", ["--lengths", "100000k"], timeout=90, mem=4 * GIB),
        k("depths-nan", ["--depths", "nan"]),
        k("depths-2", ["--depths", "2"]),
        k("depths-negative", ["--depths", "-0.1"]),
        k("depths-empty", ["--depths", ""]),
        k("method-empty", ["--method", ""]),
        k("method-only-commas", ["--method", ",,"]),
        k("method-unknown", ["--method", "magic"]),
        k("trials-0", ["--trials", "0"]),
        k("window-above-L-selfextend", ["--method", "selfextend", "-w", "1000"]),
    ]


def embedded_scenarios() -> list[Scenario]:
    def e(name, expect="ok", **kw):
        return Scenario(
            f"embedded-{name}", ASK_EMBEDDED, expect, embedded=True, timeout=EMBEDDED_TIMEOUT, mem=EMBEDDED_MEMORY, **kw
        )

    return [
        e("first-run-converts", run=lambda b: b.fx.embedded_seed()),
        e("two-first-runs-at-once", run=lambda b: concurrent(b, [ASK_EMBEDDED] * 2), followup=ASK_EMBEDDED),
        e(
            "truncated-safetensors-with-marker",
            "flag",
            followup=ASK_EMBEDDED,
            setup=seeded_embedded(lambda d: [truncate_half(w) for w in d.glob("*.safetensors")]),  # any form
        ),
        e("killed-during-first-conversion", run=kill_during_conversion, followup=ASK_EMBEDDED),
    ]


def all_scenarios() -> list[Scenario]:
    groups = (
        gguf_scenarios,
        model_dir_scenarios,
        model_name_scenarios,
        converted_store_scenarios,
        doc_cache_scenarios,
        cache_dir_scenarios,
        input_scenarios,
        option_scenarios,
        prompt_file_scenarios,
        encoding_scenarios,
        chat_scenarios,
        passkey_scenarios,
        embedded_scenarios,
    )
    from hostile import hostile_scenarios  # round three; it builds on this module's catalogue

    scenarios = [sc for group in (*groups, hostile_scenarios) for sc in group()]
    names = [sc.name for sc in scenarios]
    assert len(names) == len(set(names)), "duplicate scenario names"
    return scenarios


# ---------------------------------------------------------------------------------------------------------
# Custom runners


def concurrent(box: Box, commands: list[list]) -> Result:
    """Start ``commands`` at once in the same cache; one Result: the first non-zero exit, all stderr."""
    start = time.monotonic()
    procs = [box.start(args) for args in commands]
    results = [finish(p, timeout=box.sc.timeout, start=start) for p in procs]
    failed = [r for r in results if r.rc != 0]
    rc = failed[0].rc if failed else 0
    stderr = "".join(r.stderr for r in failed + [r for r in results if r.rc == 0])
    return Result(rc, "".join(r.stdout for r in results), stderr, time.monotonic() - start)


def kill_during_conversion(box: Box) -> Result:
    """SIGKILL a first embedded run a few seconds into writing its conversion; the follow-up must recover."""
    start = time.monotonic()
    proc = box.start(ASK_EMBEDDED)
    deadline = start + EMBEDDED_TIMEOUT
    while proc.poll() is None and time.monotonic() < deadline:
        if list((box.cache / "models").glob(".SmolLM2-*")):
            time.sleep(5)
            break
        time.sleep(0.5)
    killed = proc.poll() is None
    if killed:
        os.killpg(proc.pid, signal.SIGKILL)
    res = finish(proc, timeout=30, start=start)
    note = "(killed during conversion)\n" if killed else "(finished before it could be killed)\n"
    return Result(0 if killed else res.rc, res.stdout, note + res.stderr, res.seconds)


# ---------------------------------------------------------------------------------------------------------
# Judging


@dataclass
class Outcome:
    sc: Scenario
    res: Result | None = None
    tb: bool = False
    accepted: bool = False
    broken: bool = False
    other: bool = False
    reasons: list = field(default_factory=list)
    skipped: str | None = None

    @property
    def security(self) -> bool:
        return self.sc.security and not self.skipped and (self.tb or self.accepted or self.broken or self.other)

    @property
    def verdict(self) -> str:
        if self.skipped:
            return "SKIP"
        for flag, word in (
            (self.security, "SECURITY"),
            (self.tb, "TRACEBACK"),
            (self.accepted, "ACCEPTED"),
            (self.broken, "BROKEN"),
            (self.other, "FAIL"),
        ):
            if flag:
                return word
        return "pass"


def error_shape(res: Result) -> str | None:
    errors = [line for line in res.stderr.splitlines() if line.startswith("Error:")]
    if res.rc is not None and res.rc < 0:
        return f"killed by signal {-res.rc}"
    return None if len(errors) == 1 else f"{len(errors)} `Error:` lines on stderr (want exactly one)"


def ok_shape(res: Result) -> str | None:
    lines = res.stderr.splitlines()
    if any(line.startswith("Error:") for line in lines):
        return "an `Error:` line on a successful run"
    warnings = sum(line.startswith("Warning:") for line in lines)
    return None if warnings <= 1 else f"{warnings} `Warning:` lines (want at most one)"


def judge_main(out: Outcome, res: Result) -> None:
    expect = out.sc.expect
    warned = any(line.startswith("Warning:") for line in res.stderr.splitlines())
    if res.rc is None:
        out.other, out.reasons = True, out.reasons + [f"timed out after {out.sc.timeout:.0f}s"]
    elif res.rc == 0 and (expect == "error" or (expect == "flag" and not warned)):
        out.accepted = True
        out.reasons.append("exited 0" + (" without a warning" if expect == "flag" else ""))
    elif res.rc == 0:
        problem = ok_shape(res)
        if problem:
            out.other, out.reasons = True, out.reasons + [problem]
    elif expect == "ok":
        out.other, out.reasons = True, out.reasons + [f"expected success, exited {res.rc}"]
    elif not res.traceback and error_shape(res):
        out.other, out.reasons = True, out.reasons + [error_shape(res)]


def judge_check(out: Outcome, box: Box, res: Result) -> None:
    found = out.sc.check(box, res) if out.sc.check and res.rc is not None else None
    if found:
        category, message = found
        if category == "accepted" and res.rc == 0:
            out.accepted = True
        else:
            out.other = True
        out.reasons.append(message)


def judge_followup(out: Outcome, box: Box) -> None:
    sc = out.sc
    res = box.longlm(sc.followup)
    out.tb = out.tb or res.traceback
    label = "follow-up `longlm " + " ".join(str(a) for a in sc.followup[:2]) + " ...`"
    if res.rc != 0:
        out.broken = True
        out.reasons.append(f"{label} exit {res.rc}: {res.first[:120]}")
    elif sc.same_answer and res.stdout != box.fx.answer:
        out.broken = True
        out.reasons.append(f"{label} answered {res.stdout.strip()[:40]!r}, a clean run {box.fx.answer.strip()[:40]!r}")


def run_scenario(fx: Fixtures, sc: Scenario, keep: bool) -> Outcome:
    out = Outcome(sc)
    box = Box(fx, sc)
    try:
        for rel, data in sc.files.items():
            box.write(rel, data)
        if sc.setup:
            sc.setup(box)
        res = sc.run(box) if sc.run else box.longlm(sc.args, stdin=sc.stdin, mem=sc.mem, fsize=sc.fsize)
        out.res, out.tb = res, res.traceback
        judge_main(out, res)
        judge_check(out, box, res)
        if sc.followup and res.rc is not None:
            judge_followup(out, box)
    except Exception as exc:  # a probe bug or a failed setup: report it, keep going
        out.other = True
        out.reasons.append(f"probe setup failed: {type(exc).__name__}: {exc}")
    finally:
        if not keep:
            box.cleanup()
    return out


# ---------------------------------------------------------------------------------------------------------
# Reporting and main


def line_for(out: Outcome) -> str:
    if out.skipped:
        return f"{'SKIP':<9} {out.sc.name:<52} ({out.skipped})"
    res = out.res
    code = "none" if res is None else ("TIMEOUT" if res.rc is None else str(res.rc))
    first = (res.first if res else "")[:150]
    detail = f" ... {res.detail[:150]!r}" if res and res.detail else ""
    why = f"  [{'; '.join(out.reasons)}]" if out.reasons and out.verdict != "pass" else ""
    return (
        f"{out.verdict:<9} {out.sc.name:<52} exit={code:<7} traceback={'yes' if out.tb else 'no ':<3}  "
        f"{first!r}{detail}{why}"
    )


def totals(outcomes: list[Outcome]) -> dict[str, int]:
    """The count of each class of failure among the scenarios that ran (a scenario may be in several)."""
    ran = [o for o in outcomes if not o.skipped]
    found = {
        "scenarios": len(ran),
        "tracebacks": sum(o.tb for o in ran),
        "inconsistent states": sum(o.broken for o in ran),
        "bad inputs accepted": sum(o.accepted for o in ran),
        "security findings": sum(o.security for o in ran),
    }
    found["other failures"] = sum(o.other and not (o.tb or o.accepted or o.broken or o.security) for o in ran)
    found["skipped"] = len(outcomes) - len(ran)
    return found


def totals_line(found: dict[str, int]) -> str:
    return "probe: " + ", ".join(f"{count} {name}" for name, count in found.items())


def report(outcomes: list[Outcome]) -> int:
    ran = [o for o in outcomes if not o.skipped]
    failing = [o for o in ran if o.verdict != "pass"]
    for o in failing + [o for o in ran if o.verdict == "pass"] + [o for o in outcomes if o.skipped]:
        print(line_for(o))
    found = totals(outcomes)
    print(totals_line(found))
    return 1 if any(count for name, count in found.items() if name not in ("scenarios", "skipped")) else 0


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fast", action="store_true", help="skip the scenarios that load the embedded model")
    parser.add_argument(
        "--only",
        metavar="SUBSTRING",
        help="run only scenarios whose name contains SUBSTRING (or any of several, comma-separated)",
    )
    parser.add_argument("--jobs", type=int, default=1, metavar="N", help="scenarios run at once (default 1)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directories (printed) for a look")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    return args


def select(args) -> tuple[list[Scenario], list[Outcome]]:
    chosen, skipped = [], []
    for sc in all_scenarios():
        if args.only and not any(part in sc.name for part in args.only.split(",")):
            continue
        reason = sc.skip or ("--fast" if args.fast and sc.embedded else None)
        (skipped.append(Outcome(sc, skipped=reason)) if reason else chosen.append(sc))
    return chosen, skipped


def run_all(fx: Fixtures, chosen: list[Scenario], jobs: int, keep: bool) -> list[Outcome]:
    done = {}
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(run_scenario, fx, sc, keep): sc for sc in chosen}
        for n, future in enumerate(as_completed(futures), start=1):
            out = future.result()
            done[out.sc.name] = out
            print(
                f"[{n}/{len(chosen)}] {out.verdict:<9} {out.sc.name} ({out.res.seconds if out.res else 0:.1f}s)",
                file=sys.stderr,
                flush=True,
            )
    return [done[sc.name] for sc in chosen]


def probe(args, chosen: list[Scenario]) -> tuple[list[Outcome], list[str]]:
    """Build the fixtures, run ``chosen``; return the outcomes and warnings about the run itself."""
    root = Path(tempfile.mkdtemp(prefix="longlm-probe-"))
    print(f"probe: building the tiny models in {root} ...", file=sys.stderr, flush=True)
    where, before = source_stamp()
    try:
        fx = Fixtures(root, longlm_command())
        fx.clean_runs()
        outcomes = run_all(fx, chosen, args.jobs, args.keep)
        canary = fx.canary()
    finally:
        if args.keep:
            print(f"probe: kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    warnings = [f"the clean run no longer passes ({canary})"] if canary else []
    if source_stamp()[1] != before:
        warnings.append(f"the package source in {where} changed during the run")
    return outcomes, warnings


def main(argv=None) -> int:
    args = parse_args(argv)
    chosen, skipped = select(args)
    if not chosen:
        print("probe: no scenario matches", file=sys.stderr)
        return 2
    outcomes, warnings = probe(args, chosen)
    for warning in warnings:
        print(f"probe: WARNING: {warning}; failures may come from that, not from the scenario", flush=True)
    return report(outcomes + skipped)


if __name__ == "__main__":
    sys.modules.setdefault("probe", sys.modules["__main__"])  # hostile.py imports this module by name: one copy
    sys.exit(main())
