"""SelfExtend planning: find a model's pretraining window L and choose the neighbour window W and group size G.

Pure Python and cheap to import: no torch, no transformers. The paper (arXiv 2401.01325) asks for
(1/2 .. 2/3) * L > W + (N - W) / G, where N is the sequence length: the farthest grouped position must stay
well inside the positions the model saw in pretraining.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import IO, BinaryIO

from .defaults import (
    DEFAULT_WINDOW_FRACTION,
    HIGH_FRACTION,
    LOW_FRACTION,
    MAX_GROUP_SIZE,
    MIN_WINDOW,
    TARGET_FRACTION,
)
from .errors import ModelError, PlanError
from .paths import hf_cached_model_dir
from .tokens import TokenCount

KNOWN_MODELS: dict[str, int] = {
    "llama2": 4096,
    "llama3": 8192,
    "llama3.1": 131072,
    "mistral": 32768,
    "mixtral": 32768,
    "qwen2": 32768,
    "qwen2.5": 32768,
    "qwen3": 32768,
    "phi-2": 2048,
    "phi-3-mini": 4096,
    "gemma": 8192,
    "gemma2": 8192,
    "gemma3": 131072,
    "tinyllama": 2048,
    "smollm": 2048,
    "smollm2": 8192,
}
MODEL_ALIASES: dict[str, str] = {"default": "smollm2"}   # the embedded SmolLM2-135M-Instruct

_TARGET = Fraction(TARGET_FRACTION).limit_denominator(1000)   # exactly 7/12: no float surprises at the boundary
_HIGH = Fraction(HIGH_FRACTION).limit_denominator(1000)       # exactly 2/3


# ---------------------------------------------------------------------------------------------------------------
# The pretraining window L of a model
# ---------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelWindow:
    """A model's pretraining window `L` in tokens, with `source` saying where that number came from."""

    name: str
    L: int
    source: str


def pretraining_window(model: str) -> ModelWindow:
    """Find the pretraining window L of `model`.

    `model` is a known family name (see KNOWN_MODELS, case-insensitive, "default" = smollm2), a local model
    directory with config.json (or that config.json itself), a .gguf file, or a hub id "org/name" already in
    the local Hugging Face cache. Raises ModelError when the model cannot be found or has no usable window.
    """
    key = MODEL_ALIASES.get(model.lower(), model.lower())
    if key in KNOWN_MODELS:
        return ModelWindow(name=key, L=KNOWN_MODELS[key], source="built-in table of model families")
    path = Path(model).expanduser()
    if not path.exists():
        cached = hf_cached_model_dir(model)
        if cached is not None:
            return _window_from_config(cached / "config.json", name=model, where="config.json in the Hugging Face cache")
        raise _model_not_found(model, path)
    if path.is_dir():
        return _window_from_config(path / "config.json", name=model)
    if path.suffix.lower() == ".gguf":
        return _window_from_gguf(path, name=model)
    if path.name == "config.json":
        return _window_from_config(path, name=model)
    raise ModelError(f"{model} is neither a model directory with config.json nor a .gguf file")


def _model_not_found(model: str, path: Path) -> ModelError:
    known = ", ".join([*KNOWN_MODELS, *MODEL_ALIASES])
    if _looks_like_path(model):
        hub_note = "; a hub id must already be in the local Hugging Face cache" if _looks_like_hub_id(model) else ""
        return ModelError(f"model path {model} does not exist{hub_note}")
    return ModelError(
        f"unknown model {model!r}; known names: {known}; "
        "or give a local model directory with config.json, or a .gguf file"
    )


def _looks_like_hub_id(model: str) -> bool:
    return model.count("/") == 1 and not model.startswith(("/", ".", "~")) and not model.endswith("/")


def _looks_like_path(model: str) -> bool:
    return "/" in model or "\\" in model or model.startswith(("~", ".")) or model.lower().endswith((".gguf", ".json"))


# config.json ---------------------------------------------------------------------------------------------------

_WINDOW_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx")
_ROPE_KEYS = ("rope_scaling", "rope_parameters")
_ORIGINAL_KEY = "original_max_position_embeddings"


def _window_from_config(config_file: Path, *, name: str, where: str = "config.json") -> ModelWindow:
    if not config_file.is_file():
        raise ModelError(f"{config_file.parent} has no config.json; give a Hugging Face model directory")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"cannot read {config_file}: {exc}") from None
    if not isinstance(config, dict):
        raise ModelError(f"{config_file} is not a JSON object")
    for section, label in ((config, ""), (config.get("text_config"), "text_config.")):
        if not isinstance(section, dict):
            continue
        original = _original_window(section)
        if original is not None:
            value, key = original
            return ModelWindow(name=name, L=value, source=f"{label}{key} in {where}")
        for key in _WINDOW_KEYS:
            if _is_positive_int(section.get(key)):
                return ModelWindow(name=name, L=section[key], source=f"{label}{key} in {where}")
    raise ModelError(
        f"{config_file} has no max_position_embeddings (also looked in text_config); "
        "give a known model family name instead"
    )


def _original_window(section: dict) -> tuple[int, str] | None:
    """Return (original_max_position_embeddings, where it was found) if the config records one."""
    if _is_positive_int(section.get(_ORIGINAL_KEY)):
        return section[_ORIGINAL_KEY], _ORIGINAL_KEY
    for rope_key in _ROPE_KEYS:
        rope = section.get(rope_key)
        if not isinstance(rope, dict):
            continue
        if _is_positive_int(rope.get(_ORIGINAL_KEY)):
            return rope[_ORIGINAL_KEY], f"{rope_key}.{_ORIGINAL_KEY}"
        for sub_key, sub in rope.items():   # per-attention-type parameters, e.g. {"full_attention": {...}}
            if isinstance(sub, dict) and _is_positive_int(sub.get(_ORIGINAL_KEY)):
                return sub[_ORIGINAL_KEY], f"{rope_key}.{sub_key}.{_ORIGINAL_KEY}"
    return None


def _is_positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


# GGUF ----------------------------------------------------------------------------------------------------------
# Only the key/value header is parsed: the gguf package's GGUFReader also maps every tensor (seconds, even for
# a 100 MB file), too slow for `longlm plan`.

_GGUF_MAGIC = b"GGUF"
_GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_GGUF_STRING, _GGUF_ARRAY = 8, 9


def _window_from_gguf(path: Path, *, name: str) -> ModelWindow:
    try:
        with path.open("rb") as stream:
            metadata = read_gguf_metadata(stream)
    except OSError as exc:
        raise ModelError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (ValueError, struct.error, UnicodeDecodeError) as exc:
        raise ModelError(f"{path} is not a valid GGUF file: {exc}") from None
    arch = metadata.get("general.architecture")
    if not isinstance(arch, str):
        raise ModelError(f"{path} has no general.architecture in its GGUF metadata")
    for key in (f"{arch}.rope.scaling.original_context_length", f"{arch}.context_length"):
        if _is_positive_int(metadata.get(key)):
            return ModelWindow(name=name, L=metadata[key], source=f"{key} in the GGUF header")
    raise ModelError(f"{path} has no {arch}.context_length in its GGUF metadata")


def read_gguf_metadata(stream: BinaryIO) -> dict[str, object]:
    """Read the key/value metadata at the start of a GGUF file (versions 1-3); array values are skipped (None).

    Raises ValueError (or struct.error) for a file that is not GGUF or ends early.
    """
    if stream.read(4) != _GGUF_MAGIC:
        raise ValueError("missing GGUF magic bytes")
    (version,) = _unpack(stream, "<I")
    count_format = "<I" if version == 1 else "<Q"
    _unpack(stream, count_format)                        # tensor count
    (kv_count,) = _unpack(stream, count_format)
    metadata: dict[str, object] = {}
    for _ in range(kv_count):
        key = _read_gguf_string(stream, count_format)
        (value_type,) = _unpack(stream, "<I")
        metadata[key] = _read_gguf_value(stream, value_type, count_format)
    return metadata


def _read_gguf_value(stream: BinaryIO, value_type: int, count_format: str) -> object:
    if value_type in _GGUF_SCALARS:
        return _unpack(stream, _GGUF_SCALARS[value_type])[0]
    if value_type == _GGUF_STRING:
        return _read_gguf_string(stream, count_format)
    if value_type == _GGUF_ARRAY:
        (item_type,) = _unpack(stream, "<I")
        (length,) = _unpack(stream, count_format)
        if item_type in _GGUF_SCALARS:
            stream.seek(length * struct.calcsize(_GGUF_SCALARS[item_type]), 1)
        elif item_type == _GGUF_STRING:
            _skip_gguf_strings(stream, length, count_format)
        else:
            for _ in range(length):
                _read_gguf_value(stream, item_type, count_format)
        return None
    raise ValueError(f"unknown GGUF value type {value_type}")


def _skip_gguf_strings(stream: BinaryIO, count: int, count_format: str) -> None:
    size = struct.calcsize(count_format)
    read, seek, unpack = stream.read, stream.seek, struct.Struct(count_format).unpack
    for _ in range(count):
        seek(unpack(read(size))[0], 1)


def _read_gguf_string(stream: BinaryIO, count_format: str) -> str:
    (length,) = _unpack(stream, count_format)
    data = stream.read(length)
    if len(data) != length:
        raise ValueError("file ends inside a string")
    return data.decode("utf-8")


def _unpack(stream: BinaryIO, fmt: str) -> tuple:
    size = struct.calcsize(fmt)
    data = stream.read(size)
    if len(data) != size:
        raise ValueError("file ends inside the metadata")
    return struct.unpack(fmt, data)


# ---------------------------------------------------------------------------------------------------------------
# Choosing W and G
# ---------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Plan:
    """A SelfExtend setting for a sequence of N tokens on a model pretrained with window L.

    W: neighbour window (exact positions); G: group size (G = 1 means no extension).
    capacity = (L - W) * G + W is the longest sequence these W, G can cover;
    farthest = W + (N - W) / G is the farthest grouped position, to compare with low = L/2 and high = 2L/3.
    """

    L: int
    N: int
    W: int
    G: int
    needs_extension: bool
    capacity: int
    farthest: float
    low: float
    high: float
    reason: str
    warning: str | None = None


def make_plan(
    *, context_window: int, length: int, window: int | None = None, group_size: int | None = None
) -> Plan:
    """Choose W and G so that the farthest grouped position W + (N - W) / G sits in (1/2 .. 2/3) * L.

    `context_window` is L, `length` is N. Unset `window` defaults to L // DEFAULT_WINDOW_FRACTION; unset
    `group_size` to the smallest G >= 2 putting the farthest position at or below TARGET_FRACTION * L.
    When N <= L no extension is needed and G = 1. Raises PlanError for impossible settings.
    """
    L, N = context_window, length
    _check_inputs(L, N, window, group_size)
    W = window if window is not None else max(1, L // DEFAULT_WINDOW_FRACTION)
    if N <= L:
        return _plan_without_extension(L, N, W, group_size)
    if group_size is None:
        G, reason = _default_group_size(L, N, W)
    else:
        G, reason = group_size, f"group size G={group_size} as given"
        _check_given_group_size(L, N, W, G)
    window_reason = f"W={W} as given" if window is not None else f"W = L // {DEFAULT_WINDOW_FRACTION} = {W}"
    return _build(L, N, W, G, reason=f"N={N} > L={L}, so SelfExtend is needed; {window_reason}; {reason}.")


def _check_inputs(L: int, N: int, window: int | None, group_size: int | None) -> None:
    if L < 2:
        raise PlanError(f"pretraining window L={L} is too small; it must be at least 2 tokens")
    if N < 1:
        raise PlanError(f"document length {N} is not valid; it must be at least 1 token")
    if window is not None and window < 1:
        raise PlanError(
            f"window W={window} is not valid; it must be at least 1 (default L // {DEFAULT_WINDOW_FRACTION})"
        )
    if window is not None and window >= L:
        raise PlanError(
            f"window W={window} must be smaller than the pretraining window L={L}; "
            f"choose W between 1 and {L - 1} (default {L // DEFAULT_WINDOW_FRACTION})"
        )
    if group_size is not None and not 1 <= group_size <= MAX_GROUP_SIZE:
        raise PlanError(f"group size G={group_size} is not valid; it must be between 1 and {MAX_GROUP_SIZE}")


def _plan_without_extension(L: int, N: int, W: int, group_size: int | None) -> Plan:
    reason = f"N={N} fits in the pretraining window L={L}, so no extension is needed (G=1)"
    if group_size not in (None, 1):
        reason += f"; the given group size {group_size} is not used"
    return _build(L, N, W, 1, reason=reason + ".")


def _default_group_size(L: int, N: int, W: int) -> tuple[int, str]:
    """Smallest G >= 2 with W + (N - W) / G <= 7L/12 (or 2L/3, or L, when a large W leaves no room below)."""
    for fraction, label in (
        (_TARGET, "7L/12 (the middle of the paper's range L/2 .. 2L/3)"),
        (_HIGH, "2L/3 (W leaves no room below 7L/12)"),
        (Fraction(1), "L (W leaves no room below 2L/3)"),
    ):
        target = fraction * L
        if W < target:
            break
    G = max(2, math.ceil((N - W) / (target - W)))
    if G > MAX_GROUP_SIZE:
        most = math.floor(W + MAX_GROUP_SIZE * (target - W))
        raise PlanError(
            f"document too long: {N} tokens needs G={G} but the largest sensible group size is {MAX_GROUP_SIZE}; "
            f"the most this model can read safely is {most} tokens (L={L}, W={W}); "
            f"use a model with a longer window{_smaller_window_hint(L, W)} or split the document"
        )
    return G, f"G={G} is the smallest group size that keeps the farthest grouped position at or below {label}"


def _smaller_window_hint(L: int, W: int) -> str:
    return ", a smaller --window" if W > L // DEFAULT_WINDOW_FRACTION else ""


def _check_given_group_size(L: int, N: int, W: int, G: int) -> None:
    capacity = (L - W) * G + W
    if N <= capacity:
        return
    needed = math.ceil((N - W) / (L - W))
    if needed > MAX_GROUP_SIZE:
        hint = f"no group size up to {MAX_GROUP_SIZE} fits; use a model with a longer window or split the document"
    else:
        hint = f"use --group-size {needed} or more"
        safe = math.ceil((N - W) / (_TARGET * L - W)) if W < _TARGET * L else MAX_GROUP_SIZE + 1
        if safe <= MAX_GROUP_SIZE:
            hint += f"; G={safe} keeps it at or below 7L/12, the middle of the paper's range"
    raise PlanError(
        f"W={W} and G={G} put the farthest grouped position at {W + (N - W) / G:.1f}, beyond the pretraining "
        f"window L={L}; they allow at most {capacity} tokens but the document has {N}; {hint}"
    )


def _build(L: int, N: int, W: int, G: int, *, reason: str) -> Plan:
    farthest = W + (N - W) / G
    low, high = L * LOW_FRACTION, L * HIGH_FRACTION
    return Plan(
        L=L, N=N, W=W, G=G, needs_extension=G > 1, capacity=(L - W) * G + W, farthest=farthest,
        low=low, high=high, reason=reason, warning=_warning(W, G, farthest, high),
    )


def _warning(W: int, G: int, farthest: float, high: float) -> str | None:
    notes = []
    if G > 1 and farthest > high:
        notes.append(
            f"the farthest grouped position {farthest:.1f} is above 2L/3 = {high:.1f}; the paper keeps it "
            "below 2L/3, so quality may drop; a larger group size is safer"
        )
    if G > 1 and W < MIN_WINDOW:
        notes.append(f"W={W} is below {MIN_WINDOW}; so thin a neighbour window may hurt quality")
    return "; ".join(notes) or None


# ---------------------------------------------------------------------------------------------------------------
# From a model and a document to a plan, and back to text
# ---------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PlanReport:
    """Everything `longlm plan` shows: the model's window, the token count (None when given), and the plan."""

    model: ModelWindow
    plan: Plan
    tokens: TokenCount | None
    sources: tuple[str, ...] = ()


def plan_for(
    model: str,
    *,
    length: int | None = None,
    paths: Sequence[str] = (),
    window: int | None = None,
    group_size: int | None = None,
    stdin: IO[bytes] | None = None,
) -> PlanReport:
    """Plan SelfExtend for `model` and either a known `length` in tokens or the documents at `paths`.

    Exactly one of `length` and `paths` must be given. Documents are read with documents.read_documents and
    counted with tokens.count_tokens. Raises LongLMError subclasses on any problem.
    """
    if (length is None) == (not paths):
        raise PlanError("give either a length in tokens or documents to read, not both and not neither")
    model_window = pretraining_window(model)
    tokens, sources = None, ()
    if length is None:
        from .documents import read_documents
        from .tokens import count_tokens

        document = read_documents(paths, stdin=stdin)
        tokens, sources = count_tokens(document.text, model=model), document.sources
        length = tokens.count
    plan = make_plan(context_window=model_window.L, length=length, window=window, group_size=group_size)
    return PlanReport(model=model_window, plan=plan, tokens=tokens, sources=sources)


def format_plan(plan: Plan, *, model_label: str, tokens: TokenCount | None = None) -> str:
    """Describe `plan` for a person: L, N, W, G, the extended capacity and where the farthest position falls."""
    estimate = " (estimate)" if tokens is not None and not tokens.exact else ""
    rows = [
        ("Model", model_label),
        ("Pretraining window L", f"{plan.L:,} tokens"),
        ("Document length N", f"{plan.N:,} tokens{estimate}"),
    ]
    if tokens is not None:
        rows.append(("Counted with", tokens.method))
    rows += [
        ("Neighbour window W", f"{plan.W:,} tokens"),
        ("Group size G", str(plan.G)),
        ("Extended capacity", f"{plan.capacity:,} tokens  ((L - W) * G + W)"),
        ("Farthest position", f"{_number(plan.farthest)}  (W + (N - W) / G; {_placement(plan)})"),
        ("Paper's range", f"L/2 = {_number(plan.low)} .. 2L/3 = {_number(plan.high)}"),
    ]
    lines = [f"{label + ':':<22}{value}" for label, value in rows]
    lines += ["", plan.reason]
    if plan.warning:
        lines.append(f"Warning: {plan.warning}.")
    return "\n".join(lines)


def _placement(plan: Plan) -> str:
    if not plan.needs_extension:
        return "within L, no extension needed"
    if plan.farthest < plan.low:
        return "below L/2: safe, more grouping than strictly needed"
    if plan.farthest <= plan.high:
        return "inside the paper's range L/2 .. 2L/3"
    return "above 2L/3 but within L: risky"


def _number(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"


def plan_to_dict(plan: Plan, *, model_label: str, tokens: TokenCount | None = None) -> dict[str, object]:
    """Return the plan as a JSON-ready dict (for `--json`)."""
    return {
        "model": model_label,
        **asdict(plan),
        "length_exact": tokens.exact if tokens is not None else True,
        "length_method": tokens.method if tokens is not None else "given",
    }


def report_label(report: PlanReport) -> str:
    """The model line `longlm plan` prints: the name and where L came from."""
    return f"{report.model.name} (L from {report.model.source})"


def format_report(report: PlanReport) -> str:
    """Describe a PlanReport for a person (format_plan with the model's label, and the inputs read)."""
    text = format_plan(report.plan, model_label=report_label(report), tokens=report.tokens)
    if report.sources:
        text = f"{'Documents:':<22}{', '.join(report.sources)}\n" + text
    return text


def report_to_dict(report: PlanReport) -> dict[str, object]:
    """Return a PlanReport as a JSON-ready dict (plan_to_dict plus the model's window source and the inputs)."""
    data = plan_to_dict(report.plan, model_label=report.model.name, tokens=report.tokens)
    return {**data, "L_source": report.model.source, "sources": list(report.sources)}
