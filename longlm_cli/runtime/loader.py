"""Finding and loading models: the embedded SmolLM2 default, a .gguf file, a local directory or a hub id.

Model files are untrusted input: a GGUF is checked (gguf.check_gguf) before transformers reads it, and any failure
to convert or load a model becomes one ModelError naming it. A GGUF is converted once into the user cache
(converted.py): into a 16-bit copy here, or, with quantized weights, by ggufquant.py.
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from ..defaults import (
    DEFAULT_DEVICE,
    DEFAULT_DTYPE,
    DEFAULT_KV_DTYPE,
    DEFAULT_MODEL,
    DEFAULT_QUANTIZE,
    DEVICES,
    DTYPES,
    KV_DTYPES,
)
from ..errors import LongLMError, ModelError
from ..models.catalogue import context_window, display_name, gguf_metadata, resolve_model
from ..models.gguf import tensor_elements
from ..report import status
from .allocator import give_back_freed_blocks
from .converted import convert_once, converted_dir_for, megabytes, write_into_place
from .loadcheck import check_loaded, load_failure
from .precision import cpu_dtype
from .quantize import WeightsChoice, admit, auto_form_for_memory, check_choice, footprint_of, form_for_ggml_type

_GGML_F32, _GGML_BF16 = 0, 30  # ggml tensor types of plain floats (GGUF's tensor table)

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    model: Any  # transformers PreTrainedModel
    tokenizer: Any
    name: str
    context_window: int  # the pretraining window L
    device: str
    dtype: str  # of the activations and of the float parameters
    weights: WeightsChoice = WeightsChoice("none", "float weights")  # the form of the linear layers' weights
    memory: str | None = None  # what the weights and the planned KV cache take, for -v
    kv_dtype: str | None = None  # what the KV cache keeps keys and values in; None: dtype

    @property
    def setup(self) -> str:
        """Where and how it runs, for -v: "cpu, bfloat16", ", int4 weights" when quantized, and ", bfloat16 KV
        cache" when the cache is kept in another type than the model's."""
        quantized = f", {self.weights.form} weights" if self.weights.form != "none" else ""
        narrow = f", {self.kv_dtype} KV cache" if self.kv_dtype not in (None, self.dtype) else ""
        return f"{self.device}, {self.dtype}{quantized}{narrow}"


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
        return torch.bfloat16 if device == "cuda" else getattr(torch, cpu_dtype().dtype)
    return getattr(torch, dtype)


def convert_gguf(gguf: Path) -> Path:
    """Dequantize a GGUF file once into a 16-bit transformers directory in the user cache; return that directory.
    A converted directory that no longer matches its marker is converted again, with one warning."""
    target = converted_dir_for(gguf)
    convert_once(gguf, target, lambda: _convert_into(gguf, target))
    return target


def _convert_into(gguf: Path, target: Path) -> None:
    dtype, size = conversion_plan(gguf)
    _check_room(gguf, target.parent, size, dtype)
    status(
        f"Converting {gguf.name} once into {target} (about {megabytes(size)} in {dtype}; about a minute; later "
        "runs load in seconds)..."
    )
    write_into_place(gguf, target, lambda work: _dequantize(gguf, work, dtype))


def _check_room(gguf: Path, directory: Path, size: int, dtype: str) -> None:
    """Refuse, before a conversion that could not finish, when the disk or the memory cannot hold the copy
    (its weights live in memory while they are written)."""
    free = shutil.disk_usage(directory).free
    if size > free:
        raise ModelError(
            f"converting {gguf.name} needs about {megabytes(size)} in {directory}, which has "
            f"{megabytes(free)} free; free some space or set LONGLM_CACHE_DIR to a larger disk"
        )
    memory = available_memory()
    if memory is not None and size > memory:
        raise ModelError(
            f"converting {gguf.name} needs about {megabytes(size)} of memory for its {dtype} weights; "
            f"{megabytes(memory)} is available"
        )


def available_memory() -> int | None:
    """Bytes of memory available now (Linux: MemAvailable), or None where it cannot be told."""
    try:
        with open("/proc/meminfo", encoding="ascii") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def conversion_plan(gguf: Path) -> tuple[str, int]:
    """(dtype, bytes) of the converted copy of ``gguf``: never float32 (a 4.9 GB Q4 file of an 8B model would
    become 32 GB) but the file's own 16-bit type. That is float16 for a float16 file and for a quantized one,
    whose block scales are float16 (its weights round 7x finer than in bfloat16: measured on the embedded
    model, 0.002 against 0.014 at most); bfloat16 for a bfloat16 or float32 file (float32's range). load_model
    then runs the copy in whatever dtype was asked for (upcasting to float32 is exact)."""
    with gguf.open("rb") as stream:  # checked before this (convert_gguf): a bad header is already one error
        elements = tensor_elements(stream)
    wide = _GGML_BF16 in elements or set(elements) <= {_GGML_F32}
    return ("bfloat16" if wide else "float16"), 2 * sum(elements.values())


def _dequantize(gguf: Path, work: Path, dtype: str) -> None:
    """Load a GGUF with transformers, dequantizing it tensor by tensor into ``dtype``, and save it as safetensors
    with its tokenizer in ``work``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig
    from transformers.utils import logging

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    shown = sys.stderr is not None and sys.stderr.isatty()  # third-party bars never go into a log or a pipe
    if shown:
        logging.enable_progress_bar()  # transformers' bar over the tensors being dequantized
    # Its GGUF reader draws a plain tqdm bar on stderr: kept off a log or a pipe by holding stderr meanwhile.
    held = contextlib.nullcontext() if shown else contextlib.redirect_stderr(io.StringIO())
    try:
        with held:
            model: Any = AutoModelForCausalLM.from_pretrained(  # Any: hf_quantizer is reset below, past its stubs
                str(gguf.parent),
                gguf_file=gguf.name,
                dtype=getattr(torch, dtype),
                quantization_config=GgufConfig(dequantize=True),  # plain weights even where `kernels` could pack
            )
    finally:
        logging.disable_progress_bar()
    if dtype == "float16" and not all(torch.isfinite(p).all() for p in model.parameters()):
        # No real quantized model has one (its block scales are float16); refused in one line, never kept.
        raise ModelError(f"could not convert the GGUF file {gguf}: a weight exceeds float16's range")
    # The GGUF quantizer marks the model unserializable; the weights are already dequantized.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(work)
    tokenizer.save_pretrained(work)


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
    quantize: str = DEFAULT_QUANTIZE,
    tokens: int = 0,
    kv_dtype: str = DEFAULT_KV_DTYPE,
) -> LoadedModel:
    """Load a causal LM and its tokenizer, ready for inference, its linear layers' weights in the form
    ``quantize`` asks for (runtime/quantize.py), its sessions' KV cache kept in ``kv_dtype`` (runtime/kvcache.py).
    With ``tokens`` (what the run will hold), the weights and the KV cache are first checked against the memory
    available (ModelError naming the --quantize that would fit when they cannot; LoadedModel.memory says what
    they take)."""
    give_back_freed_blocks()  # before the weights: loading frees and allocates blocks of MiB by the hundred
    kind, location = resolve_model(name)
    device = pick_device(device)
    check_choice(quantize, device)
    torch_dtype = pick_dtype(dtype, device)
    kv = pick_kv_dtype(kv_dtype, device, torch_dtype)
    _quiet_transformers()
    sizes = (torch_dtype.itemsize, kv.itemsize)
    weights, memory = _weights_admitted(name, kind, location, device, quantize, sizes, tokens)
    tokenizer, model = _load_weights(name, kind, location, weights.form, torch_dtype, trust_remote_code)
    model = model.to(device).eval()
    kv = kv_dtype_for(model, kv)
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        name=display_name(name),
        context_window=context_window(model.config),
        device=device,
        dtype=str(torch_dtype).removeprefix("torch."),
        weights=weights,
        memory=memory,
        kv_dtype=str(kv).removeprefix("torch."),
    )


def _load_weights(name: str, kind: str, location: str, form: str, torch_dtype, trust_remote_code: bool):
    """(tokenizer, model) with ``form`` linear layers: a GGUF file or a checkpoint read tensor by tensor into a
    quantized form when it can be, else loaded whole (a GGUF through its 16-bit copy) and quantized after."""
    if kind == "gguf" and form != "none":
        from .ggufquant import quantized_gguf

        return quantized_gguf(Path(location), form, torch_dtype)
    if form != "none" and (streamed := _streamed(name, kind, location, form, torch_dtype, trust_remote_code)):
        return streamed
    if kind == "gguf":
        location = str(convert_gguf(Path(location)))
    loading = torch_dtype if form == "none" else _loading_dtype(torch_dtype)
    tokenizer, model = _from_pretrained(name, kind, location, dtype=loading, trust_remote_code=trust_remote_code)
    if form != "none":
        from .quantize import quantize_model

        quantize_model(model, form, torch_dtype)
    return tokenizer, model


def _streamed(name: str, kind: str, location: str, form: str, dtype, trust_remote_code: bool):
    """(tokenizer, model) of a checkpoint read tensor by tensor into ``form`` (runtime/checkpointquant.py), or
    None when it cannot be (not on disk, no safetensors, a model with its own code, other tensor names)."""
    from ..paths import hf_cached_model_dir
    from .checkpointquant import quantized_checkpoint

    directory = Path(location) if kind == "dir" else hf_cached_model_dir(location) if kind == "hub" else None
    if directory is None:
        return None
    try:
        loaded = quantized_checkpoint(directory, form, dtype, trust_remote_code=trust_remote_code)
    except LongLMError:
        raise
    except Exception as exc:
        raise ModelError(load_failure(name, kind, location, exc, trust_remote_code)) from exc
    if loaded is not None:
        check_loaded(name, *loaded, {})  # the tokenizer fits the embedding, a sane RoPE base
    return loaded


def pick_kv_dtype(kv_dtype: str, device: str, dtype):
    """The torch dtype ``--kv-dtype`` means for a model computing in ``dtype`` on ``device``."""
    from .kvcache import choose_kv_dtype

    if kv_dtype not in KV_DTYPES:
        raise ModelError(f"unknown KV cache dtype {kv_dtype!r}; choose one of {', '.join(KV_DTYPES)}")
    try:
        return choose_kv_dtype(kv_dtype, device, dtype)
    except ValueError as exc:
        raise ModelError(str(exc)) from None


def kv_dtype_for(model, kv):
    """Set the KV cache's storage type on the loaded ``model`` and return it: the attention goes to the engine's
    plain CPU attention, which reads a narrower cache (engine/plain.py); a model whose attention cannot (an
    eager one) keeps its own type."""
    from ..engine.plain import use_plain_cpu_attention  # imports transformers: not at module level
    from .kvcache import reads_narrow_cache, set_kv_dtype

    use_plain_cpu_attention(model, kv)  # SDPA but for decoding steps on the CPU (engine/plain.py)
    if kv != model.dtype and not reads_narrow_cache(model):
        kv = model.dtype
    set_kv_dtype(model, kv)
    return kv


def _loading_dtype(dtype):
    """What a checkpoint to be quantized is loaded in: 16 bits at most, half float32's memory; its values are
    rounded to 4 or 8 bits next anyway."""
    import torch

    return torch.bfloat16 if dtype == torch.float32 else dtype


def _weights_admitted(name, kind, location, device, quantize, sizes: tuple[int, int], tokens: int):
    """(the weights' form, one line on the memory they and the KV cache take or None), admitted against the
    memory available when on the CPU; ``sizes``: bytes of a float and of a KV cache value."""
    float_bytes, kv_bytes = sizes
    footprint = footprint_of(kind, location) if device == "cpu" else None
    free = available_memory()
    weights = choose_weights(quantize, kind, location, device)
    if quantize == "auto" and kind != "gguf" and device == "cpu" and tokens:
        weights = auto_form_for_memory(footprint, float_bytes, tokens, free, kv_bytes)
    if device != "cpu":
        return weights, None
    return weights, admit(footprint, weights.form, float_bytes, tokens, free, name, kv_bytes)


def choose_weights(quantize: str, kind: str, location: str, device: str) -> WeightsChoice:
    """The form of the linear layers' weights: as asked, or for ``auto``: a GGUF file's own bits (4- and 5-bit
    types in int4, 6- and 8-bit in int8, 16-bit and float32 files unquantized), and float weights for any other
    model (a checkpoint is quantized only when asked). int8 asked of a 4- or 5-bit GGUF file warns once: its
    one scale a row cannot hold the file's blocks, so it is both larger and less faithful than int4, which keeps
    their codes (docs/quantized.md, "Accuracy on the embedded model")."""
    if quantize != "auto":
        if quantize == "int8" and kind == "gguf" and device == "cpu":
            type_name = _gguf_main_type(Path(location))
            if type_name is not None and form_for_ggml_type(type_name) == "int4":
                _log.warning(
                    f"the GGUF file is mostly {type_name}: --quantize int8 holds its weights less faithfully "
                    "than int4, which keeps their 4-bit codes, and takes twice the memory; --quantize auto picks int4"
                )
        return WeightsChoice(quantize, f"--quantize {quantize}")
    if device != "cpu":
        return WeightsChoice("none", f"float weights: quantized weights run on the CPU only, not {device}")
    if kind != "gguf":
        return WeightsChoice("none", "float weights: the checkpoint's own (--quantize int4 or int8 shrinks them)")
    type_name = _gguf_main_type(Path(location))
    if type_name is None:
        return WeightsChoice("none", "float weights: the GGUF file holds no tensors")
    form = form_for_ggml_type(type_name)
    return WeightsChoice(form, f"{form if form != 'none' else 'float weights'}: the GGUF file is mostly {type_name}")


def _gguf_main_type(path: Path) -> str | None:
    """The ggml type name of most of a GGUF file's weights (by elements); None when it holds no tensors."""
    from gguf import GGMLQuantizationType

    gguf_metadata(path, check_tensors=True)  # a damaged or hostile header: one line, before reading on
    with path.open("rb") as stream:
        elements = tensor_elements(stream)
    if not elements:
        return None
    main = max(elements, key=elements.__getitem__)
    try:
        return GGMLQuantizationType(main).name
    except ValueError:
        return f"type {main}"


def _from_pretrained(name: str, kind: str, location: str, *, dtype, trust_remote_code: bool) -> tuple:
    """(tokenizer, model) loaded by transformers; any failure (but KeyboardInterrupt) is one ModelError."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(location, trust_remote_code=trust_remote_code)
        # With output_loading_info it returns (model, loading info), which its stubs do not say.
        model, info = cast(
            "tuple[Any, dict]",
            AutoModelForCausalLM.from_pretrained(
                location, dtype=dtype, trust_remote_code=trust_remote_code, output_loading_info=True
            ),
        )
    except LongLMError:
        raise
    except Exception as exc:
        raise ModelError(load_failure(name, kind, location, exc, trust_remote_code)) from exc
    check_loaded(name, tokenizer, model, info)
    return tokenizer, model
