"""Shared test helpers: tiny random models built from configs (no download), a straightforward SelfExtend
reference, throwaway tokenizers, hand-built PDFs and an in-process CLI runner. Fixtures live in conftest.py."""

from __future__ import annotations

import inspect
import io
import math

import torch
import transformers
from click.testing import CliRunner
from pypdf import PdfWriter
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AttentionInterface, LlamaForCausalLM, PreTrainedTokenizerFast
from transformers.masking_utils import AttentionMaskInterface

from longlm_cli.answering.templates import chat_token_ids, load_template, user_message
from longlm_cli.cli import cli
from longlm_cli.defaults import TASK_SAMPLING_DEFAULTS
from longlm_cli.planning.plan import make_plan

VOCAB = 128
BASE = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=64,
)


def _layers(kinds):
    return dict(num_hidden_layers=len(kinds), layer_types=list(kinds))


ARCHS = {
    "llama": ("llama", {}),
    "llama3-rope": (
        "llama",
        dict(
            rope_parameters=dict(
                rope_type="llama3",
                rope_theta=10000.0,
                factor=8.0,
                low_freq_factor=1.0,
                high_freq_factor=4.0,
                original_max_position_embeddings=32,
            )
        ),
    ),
    "llama-gqa4": ("llama", dict(num_attention_heads=8, head_dim=8)),  # 4 query heads per key head, folded
    # into one query axis in blocks without a mask (engine/blocks.py)
    "mistral": ("mistral", dict(sliding_window=None)),
    "mistral-sliding": ("mistral", dict(sliding_window=40)),
    "mixtral": ("mixtral", dict(sliding_window=None, num_local_experts=2, num_experts_per_tok=1)),
    "qwen2": ("qwen2", {}),
    "qwen3": ("qwen3", {}),
    "phi": ("phi", dict(rope_parameters=dict(rope_type="default", rope_theta=10000.0, partial_rotary_factor=0.5))),
    "phi3": ("phi3", dict(pad_token_id=0)),
    "gemma": ("gemma", {}),
    "gemma2": (
        "gemma2",
        dict(
            sliding_window=40,
            attn_logit_softcapping=5.0,
            final_logit_softcapping=30.0,
            **_layers(["sliding_attention", "full_attention", "sliding_attention"]),
        ),
    ),
    "gemma3": ("gemma3_text", dict(sliding_window=40, **_layers(["sliding_attention", "full_attention"]))),
}


def tiny_model(arch: str, *, seed: int = 0):
    model_type, extra = ARCHS[arch]
    kwargs = {**BASE, **extra}
    if model_type == "phi":
        kwargs.pop("head_dim")
        kwargs["num_key_value_heads"] = kwargs["num_attention_heads"]
    config = transformers.CONFIG_MAPPING[model_type](**kwargs)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    # Random init is tiny; widen the weights so attention is peaked and errors would show.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "proj" in name and p.ndim == 2:
                p.mul_(3.0)
    return model


# ---------------------------------------------------------------------------------------------------------
# Reference: full score matrices, grouped positions rotated with the model's own RoPE code.

REFERENCE = {}


def _rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _cos_sin(model, module, positions, x):
    rotary = model.model.rotary_emb
    layer_types = getattr(model.config, "layer_types", None)
    args = [x, positions[None]]
    if "layer_type" in inspect.signature(rotary.forward).parameters:
        args.append(layer_types[module.layer_idx])
    cos, sin = rotary(*args)
    return cos[0].float(), sin[0].float()  # [S, R]


def _rerotate(model, module, x, true_pos, new_pos):
    """Undo the rotation at true_pos and rotate at new_pos, with the model's own cos/sin. x: [B, H, S, D]."""
    cos, sin = _cos_sin(model, module, true_pos, x)
    cos2, sin2 = _cos_sin(model, module, new_pos, x)
    R = cos.shape[-1]
    scale2 = (cos[:1] ** 2 + sin[:1] ** 2).mean()  # attention scaling squared (1 for most rope types)
    xr = x[..., :R].float()
    raw = (xr * cos - _rotate_half(xr) * sin) / scale2
    return torch.cat((raw * cos2 + _rotate_half(raw) * sin2, x[..., R:].float()), dim=-1)


def reference_attention(
    module,
    query,
    key,
    value,
    attention_mask,
    scaling=None,
    dropout=0.0,
    softcap=None,
    sliding_window=None,
    position_ids=None,
    **kwargs,
):
    model, W, G = REFERENCE["model"], REFERENCE["window"], REFERENCE["group"]
    B, H, Q, D = query.shape
    K = key.shape[2]
    rep = H // key.shape[1]
    k = key.repeat_interleave(rep, 1).float()
    v = value.repeat_interleave(rep, 1).float()
    q = query.float()
    kpos = torch.arange(K)
    qpos = kpos[K - Q :]
    base = REFERENCE.get("scale_base")
    if base is not None and not sliding_window:
        # the reference code's log scaling: q at 0-based position p times max(1, ln(p + 1) / ln(base))
        factor = torch.tensor([max(1.0, math.log(p + 1) / math.log(base)) for p in qpos.tolist()])
        q = q * factor[:, None]
    i, j = qpos[:, None], kpos[None, :]
    scores = q @ k.transpose(-1, -2) * scaling
    if softcap:
        scores = softcap * torch.tanh(scores / softcap)
    if sliding_window:
        keep = (j <= i) & (i - j < sliding_window)
    else:
        qg = _rerotate(model, module, q, qpos, qpos // G + W - W // G)
        kg = _rerotate(model, module, key.repeat_interleave(rep, 1), kpos, kpos // G)
        grouped = qg @ kg.transpose(-1, -2) * scaling
        if softcap:
            grouped = softcap * torch.tanh(grouped / softcap)
        scores = torch.where(i - j < W, scores, grouped)
        keep = j <= i
    scores = scores.masked_fill(~keep, float("-inf"))
    out = torch.softmax(scores, dim=-1) @ v
    return out.transpose(1, 2).to(query.dtype), None


AttentionInterface.register("longlm_reference", reference_attention)
AttentionMaskInterface.register("longlm_reference", lambda *a, **k: None)


def reference_logits(model, input_ids, *, window: int, group_size: int, scale_base: float | None = None):
    """Logits of the reference SelfExtend (with query log-scaling at ``scale_base`` unless None), restoring the
    model's attention afterwards."""
    original = model.config._attn_implementation
    REFERENCE.update(model=model, window=window, group=group_size, scale_base=scale_base)
    model.set_attn_implementation("longlm_reference")
    try:
        with torch.no_grad():
            return model(input_ids).logits
    finally:
        model.set_attn_implementation(original)


def save_tiny_llama(path, tokenizer, *, window: int = 64, seed: int = 0):
    """Save a tiny random Llama (pretraining window ``window``) with ``tokenizer`` to ``path``, as a model dir."""
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=window,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "proj" in name:
                p.mul_(3.0)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


# ---------------------------------------------------------------------------------------------------------
# Tokenizers, documents and the CLI

L = 64  # the tiny model's pretraining window
CORPUS = (
    "The lighthouse keeper counted the ships every evening. Each ship carried salt, timber or wool to the "
    "northern harbour, and the keeper wrote its name in a green ledger. "
) * 3
CHAT_TEMPLATE = "{% for m in messages %}<|user|>{{ m['content'] }}<|end|>{% endfor %}<|assistant|>"


def train_tokenizer(
    texts, *, vocab_size: int, special_tokens: list[str], chat_template: str | None = None, eos_token: str = "<|end|>"
) -> PreTrainedTokenizerFast:
    """A throwaway byte-level BPE tokenizer trained on ``texts`` (no download)."""
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=special_tokens, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(list(texts), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos_token)
    if chat_template is not None:
        fast.chat_template = chat_template
    return fast


def corpus_tokenizer() -> PreTrainedTokenizerFast:
    """The tokenizer of the CLI tests' tiny models: trained on CORPUS, with a chat template."""
    return train_tokenizer(
        [CORPUS], vocab_size=320, special_tokens=["<|end|>", "<|user|>", "<|assistant|>"], chat_template=CHAT_TEMPLATE
    )


def reference_answer(
    model_dir,
    task,
    document,
    question=None,
    *,
    max_new_tokens,
    scale_base=None,
    logits_fn=None,
    shape=None,
    repetition_penalty=None,
    no_repeat_ngram=None,
):
    """Greedy decoding that recomputes the whole sequence with the reference SelfExtend at every step (or with
    ``logits_fn(model, ids)``, another method's reference), with the task's default repetition settings (or the
    ones given): the penalty as CTRL defines it (the answer's tokens' scores divided by it, multiplied where
    negative), and no token that would repeat an n-gram of the answer."""
    task_defaults = TASK_SAMPLING_DEFAULTS.get(task, {})
    penalty = task_defaults.get("repetition_penalty", 1.0) if repetition_penalty is None else repetition_penalty
    n = task_defaults.get("no_repeat_ngram_size", 0) if no_repeat_ngram is None else no_repeat_ngram
    tokenizer = PreTrainedTokenizerFast.from_pretrained(model_dir)
    model = LlamaForCausalLM.from_pretrained(model_dir).eval()
    template = load_template(task) if shape is None else load_template(task).shaped(shape)
    ids = chat_token_ids(tokenizer, user_message(template, document, question))
    plan = make_plan(context_window=L, length=len(ids) + max_new_tokens)
    out = []
    for _ in range(max_new_tokens):
        sequence = torch.tensor([ids + out])
        logits = (
            logits_fn(model, sequence)
            if logits_fn
            else reference_logits(model, sequence, window=plan.W, group_size=plan.G, scale_base=scale_base)
        )
        scores = logits[0, -1].float().clone()
        if out and penalty != 1.0:
            seen = torch.tensor(sorted(set(out)))
            scores[seen] = torch.where(scores[seen] > 0, scores[seen] / penalty, scores[seen] * penalty)
        if n and len(out) >= n - 1:
            tail = out[len(out) - n + 1 :]
            for i in range(len(out) - n + 1):
                if out[i : i + n - 1] == tail:
                    scores[out[i + n - 1]] = float("-inf")
        token = int(scores.argmax())
        if token == tokenizer.eos_token_id:
            break
        out.append(token)
    return tokenizer.decode(out, skip_special_tokens=True), plan, len(ids)


def run(*args, input=None):
    return CliRunner().invoke(cli, [str(a) for a in args], input=input)


def text_pdf(pages: list[str]) -> bytes:
    """A minimal valid PDF, one Helvetica text line per page, built by hand (pypdf cannot write text)."""
    count = len(pages)
    kids = " ".join(f"{4 + 2 * i} 0 R" for i in range(count))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{kids}] /Count {count} >>".encode(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    for i, text in enumerate(pages):
        escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
        stream = f"BT /F1 12 Tf 72 720 Td ({escaped}) Tj ET".encode()
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            f"/Resources << /Font << /F1 3 0 R >> >> /Contents {5 + 2 * i} 0 R >>".encode()
        )
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    return pdf_file(objects)


def pdf_file(objects: list[bytes]) -> bytes:
    """A PDF of ``objects`` (numbered from 1, the first the catalog) with its cross-reference table."""
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def blank_pdf(*, password: str | None = None) -> bytes:
    writer = PdfWriter()
    writer.add_blank_page(width=612, height=792)
    if password is not None:
        writer.encrypt(password)
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def start_serve(*args, env=None):
    """`longlm serve --port 0 ARGS` as a process of the installed command: (process, the API's base URL)."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    command = Path(sys.executable).parent / "longlm"
    proc = subprocess.Popen(
        [str(command), "serve", "--port", "0", *map(str, args)], stderr=subprocess.PIPE, text=True, env=env
    )
    said = []
    for line in proc.stderr:  # a first run converts the model first and says so
        said.append(line)
        found = re.search(r"at (http://127\.0\.0\.1:\d+/v1)$", line.strip())
        if found:
            return proc, found.group(1)
    proc.kill()
    raise AssertionError(f"longlm serve did not start: {''.join(said)}")
