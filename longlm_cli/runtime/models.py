"""Finding and loading models: the embedded SmolLM2 default, a .gguf file, a local directory or a hub id."""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..catalogue import context_window, display_name, resolve_model
from ..defaults import DEFAULT_DEVICE, DEFAULT_DTYPE, DEFAULT_MODEL, DEVICES, DTYPES
from ..errors import ModelError
from ..paths import cache_dir, embedded_gguf_path, embedded_model_dir

_COMPLETE = ".longlm-complete"  # written last: a converted directory without it is never used


@dataclass(frozen=True)
class LoadedModel:
    model: object  # transformers PreTrainedModel
    tokenizer: object
    name: str
    context_window: int  # the pretraining window L
    device: str
    dtype: str


def pick_device(device: str = DEFAULT_DEVICE) -> str:
    import torch

    if device not in DEVICES:
        raise ModelError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelError("--device cuda was asked for but no CUDA device is available; use --device cpu")
    return device


def pick_dtype(dtype: str, device: str):
    import torch

    if dtype not in DTYPES:
        raise ModelError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    if dtype == "auto":
        return torch.bfloat16 if device == "cuda" else torch.float32
    return getattr(torch, dtype)


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _converted_dir_for(gguf: Path) -> Path:
    """Where a converted copy of a GGUF file lives in the user cache."""
    if embedded_gguf_path() is not None and gguf.resolve() == embedded_gguf_path().resolve():
        return embedded_model_dir()
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return cache_dir() / "models" / f"{gguf.stem}-{key}"


def convert_gguf(gguf: Path) -> Path:
    """Dequantize a GGUF file once into a transformers directory in the user cache; return that directory.

    The conversion is written to a temporary directory beside the target and renamed into place only when
    complete, so an interrupted run never leaves a directory that a later run would use.
    """
    target = _converted_dir_for(gguf)
    if (target / _COMPLETE).exists():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging

    _say(f"Converting {gguf.name} once into {target} (about a minute; later runs load in seconds)...")
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        logging.enable_progress_bar()  # transformers' bar over the tensors being dequantized
        try:
            model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        finally:
            logging.disable_progress_bar()
        # The GGUF quantizer marks the model unserializable; the weights are already dequantized.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(work)
        tokenizer.save_pretrained(work)
        (work / _COMPLETE).write_text("ok\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(work, target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return target


def _quiet_transformers() -> None:
    """transformers' own progress bars and warnings would garble longlm's stderr."""
    import logging as std_logging

    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()
    std_logging.getLogger("huggingface_hub").setLevel(std_logging.ERROR)  # its retry warnings, one per try


def load_model(
    name: str = DEFAULT_MODEL,
    *,
    device: str = DEFAULT_DEVICE,
    dtype: str = DEFAULT_DTYPE,
    trust_remote_code: bool = False,
) -> LoadedModel:
    """Load a causal LM and its tokenizer, ready for inference."""
    kind, location = resolve_model(name)
    device = pick_device(device)
    torch_dtype = pick_dtype(dtype, device)
    _quiet_transformers()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if kind == "gguf":
        location = str(convert_gguf(Path(location)))
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(location, dtype=torch_dtype, trust_remote_code=trust_remote_code)
    except OSError as exc:
        where = (
            "the Hugging Face Hub (HF_HUB_OFFLINE is set)"
            if os.environ.get("HF_HUB_OFFLINE")
            else "the Hugging Face Hub (is the network reachable? HF_HUB_OFFLINE=1 uses only cached models)"
        )
        raise ModelError(f"could not load model {name!r} from {where}: {str(exc).splitlines()[0]}") from exc
    except ValueError as exc:
        raise ModelError(f"could not load model {name!r}: {str(exc).splitlines()[0]}") from exc
    model.to(device).eval()
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        name=display_name(name),
        context_window=context_window(model.config),
        device=device,
        dtype=str(torch_dtype).removeprefix("torch."),
    )
