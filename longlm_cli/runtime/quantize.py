"""Models with quantized weights: which form `--quantize` means, quantizing a loaded float model in place, and
writing and reading a model directory whose weights are already quantized (what a GGUF file becomes).

Linear layers take the chosen form (int4 or int8, qlinear.py); the input embedding and the output head take int8
(the head is read once a decoding step, so it matters as much as a layer; an embedding row is only looked up).
A layer whose shape the int4 packing cannot take falls back to int8. Norms and biases stay in float.

A quantized directory holds config.json, the tokenizer, ``quantized.safetensors`` and QUANT_RECORD. The tensors
of a module M are ``M.nibbles`` and ``M.scales_zeros`` (int4: the portable layout, see qlinear.py) or ``M.codes``
and ``M.scale`` (int8); every other tensor under its own name in float32. A tied output head is not written: it
shares the embedding's int8 tensors.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..defaults import QUANTIZE_CHOICES
from ..errors import LongLMError, ModelError

if TYPE_CHECKING:  # torch is imported where it is used: reading a record must not load it
    import torch

QUANT_RECORD = "quantization.json"
QUANT_WEIGHTS = "quantized.safetensors"
FORMAT = 1  # of a quantized directory; a different one is converted again
MAX_HEADER = 64 * 1024**2  # bytes of safetensors header a quantized directory may have (a few thousand tensors)

# ggml tensor type names -> the form `auto` keeps them in (a GGUF file is kept near its own bits)
_INT4_GGML = ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "IQ2", "IQ3", "IQ4", "IQ1", "TQ")
_INT8_GGML = ("Q8_0", "Q8_1", "Q8_K", "Q6_K")


@dataclass(frozen=True)
class WeightsChoice:
    form: str  # "none", "int8" or "int4"
    reason: str  # one line for -v


def form_for_ggml_type(type_name: str) -> str:
    """The form `auto` keeps a GGUF tensor type in: 4- and 5-bit types -> int4, 6- and 8-bit -> int8, floats ->
    none."""
    if type_name.startswith(_INT4_GGML):
        return "int4"
    if type_name.startswith(_INT8_GGML):
        return "int8"
    return "none"


def check_choice(quantize: str, device: str) -> None:
    if quantize not in QUANTIZE_CHOICES:
        raise ModelError(f"unknown --quantize {quantize!r}; choose one of {', '.join(QUANTIZE_CHOICES)}")
    if quantize in ("int4", "int8") and device != "cpu":
        raise ModelError(f"--quantize {quantize} runs on the CPU only; use --device cpu, or --quantize none")


# --- admission: what the weights and the KV cache will take, before loading -----------------------------------


def footprint_of(kind: str, location: str):
    """The model's Footprint from its files (models/footprint.py), or None when they cannot tell."""
    from ..models.footprint import Footprint, checkpoint_footprint, gguf_footprint
    from ..paths import hf_cached_model_dir

    found: Footprint | None
    try:
        if kind == "gguf":
            found = gguf_footprint(Path(location))
        else:
            directory = Path(location) if kind == "dir" else hf_cached_model_dir(location)
            found = None if directory is None else checkpoint_footprint(directory)
    except (OSError, ValueError, LongLMError, KeyError, TypeError):
        return None
    return found if found is not None and found.linear + found.table > 0 else None  # no weights: it cannot tell


def auto_form_for_memory(
    footprint, float_bytes: int, tokens: int, available: int | None, kv_bytes: int | None = None
) -> WeightsChoice:
    """``--quantize auto`` for a checkpoint: its own float weights when they and the KV cache fit in memory,
    else the least-quantized form that does."""
    from ..models.footprint import smallest_fitting

    if footprint is None or available is None:
        return WeightsChoice("none", "float weights: the checkpoint's own (its size could not be told)")
    form = smallest_fitting(footprint, float_bytes, tokens, available, kv_bytes) or "int4"
    if form == "none":
        return WeightsChoice("none", "float weights: the checkpoint's own, which fit in memory")
    return WeightsChoice(form, f"{form}: float weights and the KV cache would not fit in memory")


def admit(
    footprint, form: str, float_bytes: int, tokens: int, available: int | None, name: str, kv_bytes: int | None = None
) -> str | None:
    """One line saying what the weights and the KV cache of ``tokens`` (in ``kv_bytes``-byte values; None: as
    the floats) will take in ``form``; ModelError naming the --quantize that would fit when they cannot. None
    when the model's files cannot tell."""
    from ..models.footprint import smallest_fitting
    from ..paths import human_size

    if footprint is None:
        return None
    line = footprint.describe(form, float_bytes, tokens, kv_bytes)
    needed = footprint.needed_bytes(form, float_bytes, tokens, kv_bytes)
    if available is None or needed <= available:
        return f"Memory: {line}" + (f", of {human_size(available)} available" if available else "")
    fits = smallest_fitting(footprint, float_bytes, tokens, available, kv_bytes)
    order = ("none", "int8", "int4")
    advice = (
        f"--quantize {fits} would fit"
        if fits is not None and order.index(fits) > order.index(form)
        else "use a smaller model or a shorter input"
    )
    raise ModelError(
        f"model {name!r} needs {line}, about {human_size(needed)} with room to run; {human_size(available)} of "
        f"memory is available: {advice}"
    )


# --- quantizing a loaded model ------------------------------------------------------------------------------


def quantize_model(model, form: str, dtype) -> None:
    """Replace ``model``'s linear layers with ``form`` ones and its embedding and head with int8, in place,
    one layer at a time (each float weight is freed once its layer is replaced); float parameters left (norms,
    biases) are cast to ``dtype``."""
    import torch

    from .experts import split_experts
    from .qlinear import QuantizedEmbedding, QuantizedLinear, Scratch, int4_fits

    split_experts(model)  # an MoE's 3D expert weights become per-expert linear layers, quantized below
    scratch = Scratch()
    embedding, head = model.get_input_embeddings(), model.get_output_embeddings()
    tied = _tied(model)
    codes, scale = _int8_rows(embedding.weight)
    _replace(model, embedding, QuantizedEmbedding(codes, scale, dtype, embedding.padding_idx))
    if head is not None:
        tensors = {"codes": codes, "scale": scale} if tied else dict(zip(("codes", "scale"), _int8_rows(head.weight)))
        _replace(model, head, QuantizedLinear("int8", tensors, _float(head.bias, dtype), scratch))
    for module in list(model.modules()):
        if type(module) is torch.nn.Linear and module is not head:
            chosen = form if form == "int8" or int4_fits(*module.weight.shape) else "int8"
            bias = _float(module.bias, dtype)
            _replace(model, module, QuantizedLinear.from_float(chosen, module.weight, bias, scratch))
    cast_float_parameters(model, dtype)
    model.longlm_weights = form


def _tied(model) -> bool:
    """Whether the output head shares the input embedding's weights (by config: a skeleton is not tied yet)."""
    head = model.get_output_embeddings()
    if head is None:
        return False
    config = model.config.get_text_config()
    return head.weight is model.get_input_embeddings().weight or bool(getattr(config, "tie_word_embeddings", False))


def _int8_rows(weight):
    from .qlinear import quantize_int8

    return quantize_int8(weight.detach())


def _float(tensor, dtype):
    return None if tensor is None else tensor.detach().to(dtype)


def _replace(model, old, new) -> None:
    """Put ``new`` wherever ``old`` is a child module of ``model``."""
    for parent in model.modules():
        for name, child in list(parent.named_children()):
            if child is old:
                setattr(parent, name, new)


def cast_float_parameters(model, dtype) -> None:
    """Cast every floating parameter to ``dtype``; buffers (the quantized tensors, their bfloat16 scales, the
    rotary tables) are left as they are, which ``model.to(dtype)`` would not do."""
    import torch

    for module in model.modules():
        for name, param in list(module._parameters.items()):
            if param is not None and param.is_floating_point() and param.dtype != dtype:
                module._parameters[name] = torch.nn.Parameter(param.detach().to(dtype), requires_grad=False)


# --- a quantized directory ----------------------------------------------------------------------------------


def quantized_form(directory: Path) -> str | None:
    """The form of a quantized directory written by this version; None when it is not one."""
    try:
        record = json.loads((directory / QUANT_RECORD).read_text(encoding="utf-8"))
        return record["form"] if record.get("format") == FORMAT and record.get("form") in ("int4", "int8") else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def write_record(directory: Path, form: str, source: dict) -> None:
    """The directory's record: its format, form and source (converted.write_marker digests every file)."""
    record = {"format": FORMAT, "form": form, "source": source}
    (directory / QUANT_RECORD).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


def load_quantized_dir(directory: Path, dtype) -> tuple[object, object]:
    """(tokenizer, model) from a quantized directory, the model's float parameters in ``dtype``; the weights are
    read from a memory map and packed for torch's kernels one tensor at a time."""
    from transformers import AutoConfig, AutoTokenizer

    from . import entryfile

    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    model = empty_model(AutoConfig.from_pretrained(str(directory)), dtype)
    # plain reads, not a memory map: the file's pages do not stay in the process beside the packed weights
    with entryfile.open_tensors(directory / QUANT_WEIGHTS, max_header=MAX_HEADER) as weights:
        install_weights(model, dtype, set(weights), weights.read)
    cast_float_parameters(model, dtype)
    model.config._name_or_path = str(directory)
    return tokenizer, model


def empty_model(config, dtype):
    """A causal LM of ``config`` whose parameters are on the meta device (no memory) and whose buffers (the
    rotary tables) are real; an MoE's experts split into per-expert layers, as a quantized one holds them."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    from .experts import split_experts

    with init_empty_weights(include_buffers=False):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    split_experts(model)
    return model


def layout(model, form: str) -> dict[str, tuple[tuple[int, ...], object]]:
    """Name -> (shape, dtype) of every tensor a quantized directory of ``model`` (a skeleton is enough) holds
    with ``form`` linear layers: what install_weights reads."""
    import torch

    from .qlinear import COMPUTE, GROUP_SIZE, int4_fits

    embedding, head = model.get_input_embeddings(), model.get_output_embeddings()
    tied = _tied(model)
    out: dict[str, tuple[tuple[int, ...], object]] = {}
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        if module is embedding or (isinstance(module, torch.nn.Linear) and not (module is head and tied)):
            N, K = module.weight.shape
            if form == "int4" and module not in (embedding, head) and int4_fits(N, K):
                parts = {"nibbles": ((N, K // 2), torch.uint8), "scales_zeros": ((K // GROUP_SIZE, N, 2), COMPUTE)}
            else:
                parts = {"codes": ((N, K), torch.int8), "scale": ((N,), COMPUTE)}
            out |= {prefix + part: spec for part, spec in parts.items()}
            if getattr(module, "bias", None) is not None:
                out[prefix + "bias"] = ((N,), torch.float32)
        elif not isinstance(module, torch.nn.Linear):
            for leaf, param in module._parameters.items():
                if param is not None:
                    out[prefix + leaf] = (tuple(param.shape), torch.float32)
    return out


QUANTIZED_PARTS = ("nibbles", "scales_zeros", "codes", "scale")  # what layout names a quantized module's tensors


def source_tensor(name: str) -> str:
    """The source tensor (a checkpoint's or GGUF file's, by the model's names) a layout tensor is made from: a
    quantized module's parts from its ``weight``, any other tensor from itself."""
    module, _, part = name.rpartition(".")
    return f"{module}.weight" if part in QUANTIZED_PARTS else name


def install_weights(model, dtype, names: set[str], read) -> None:
    """Fill a meta-device ``model`` from tensors named as in a quantized directory (``read(name)``), then check
    nothing is left on the meta device."""
    import torch

    from .qlinear import QuantizedEmbedding, QuantizedLinear, Scratch, from_nibbles

    scratch = Scratch()
    embedding, head = model.get_input_embeddings(), model.get_output_embeddings()
    module_names = {module: name for name, module in model.named_modules()}
    for name, module in list(model.named_modules()):
        prefix = f"{name}." if name else ""
        if module is embedding:
            new = QuantizedEmbedding(read(prefix + "codes"), read(prefix + "scale"), dtype, embedding.padding_idx)
            _replace(model, module, new)
            embedding = new
        elif isinstance(module, torch.nn.Linear):
            bias = read(prefix + "bias").to(dtype) if prefix + "bias" in names else None
            if prefix + "nibbles" in names:
                codes, table = from_nibbles(read(prefix + "nibbles")), read(prefix + "scales_zeros")
                _replace(model, module, QuantizedLinear.from_int4_codes(codes, table, bias, scratch))
            elif prefix + "codes" in names:
                tensors = {"codes": read(prefix + "codes"), "scale": read(prefix + "scale")}
                _replace(model, module, QuantizedLinear("int8", tensors, bias, scratch))
            elif module is not head:
                raise ModelError(f"the quantized weights lack the layer {module_names[module]}")
    if isinstance(model.get_output_embeddings(), torch.nn.Linear):  # tied: shares the embedding's tensors
        tensors = {"codes": embedding.codes, "scale": embedding.scale}
        _replace(model, model.get_output_embeddings(), QuantizedLinear("int8", tensors, None, scratch))
    for name in list(_meta_parameters(model)):
        if name not in names:
            raise ModelError(f"the quantized weights lack the tensor {name}")
        owner, _, leaf = name.rpartition(".")
        model.get_submodule(owner)._parameters[leaf] = torch.nn.Parameter(read(name).to(dtype), requires_grad=False)
    model.longlm_weights = (
        "int4" if any(isinstance(m, QuantizedLinear) and m.form == "int4" for m in model.modules()) else "int8"
    )


def _meta_parameters(model) -> Iterator[str]:
    for name, param in model.named_parameters():
        if param.device.type == "meta":
            yield name


def tensor_makers(model) -> dict[str, Callable[[], torch.Tensor]]:
    """How to produce each tensor of a quantized ``model`` as a quantized directory names it (int4 in the
    portable layout); a tied head is left out."""
    from .qlinear import QuantizedEmbedding, QuantizedLinear

    makers: dict[str, Callable[[], torch.Tensor]] = {}
    written: set[int] = set()
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(module, (QuantizedEmbedding, QuantizedLinear)):
            parts = module.portable_parts()
            first = next(iter(module.buffers()))
            if id(first) in written:
                continue  # a tied head: the embedding's tensors
            written.add(id(first))
            makers |= {prefix + part: maker for part, maker in parts.items()}
        for leaf, param in module._parameters.items():
            if param is not None:
                makers[prefix + leaf] = param.detach().float
    return makers
