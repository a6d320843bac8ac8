"""A GGUF file read tensor by tensor straight into a quantized model, and kept as a quantized directory.

No 16-bit or float32 copy of the whole model is ever made: each GGUF tensor is dequantized alone (the gguf
package's reader maps the file) and requantized into the chosen form, or, for Q4_0 and Q4_1 taken as int4, its
4-bit codes and block scales are carried over as they are (the same blocks of 32, so the weights are the file's
own up to the scales' rounding to bfloat16). transformers' GGUF tables name each tensor and undo llama.cpp's
permutation of the query and key rows. The model built in memory is then written once as a quantized directory
(quantize.py) for later runs, which read it without the gguf package.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import LongLMError, ModelError
from ..report import note, status
from .converted import COMPLETE, convert_once, converted_dir_for, describe, megabytes, write_into_place
from .qlinear import quantized_parts, scales_zeros, to_nibbles
from .quantize import (
    QUANT_WEIGHTS,
    cast_float_parameters,
    empty_model,
    install_weights,
    layout,
    load_quantized_dir,
    quantized_form,
    source_tensor,
    tensor_makers,
    write_record,
)

_EXACT_INT4 = {"Q4_0": 18, "Q4_1": 20}  # bytes per block of 32: the types whose codes carry over to int4


class GgufSource:
    """The tensors of a quantized directory, computed from a GGUF file when asked for (install_weights reads a
    module's tensors one after another, so the last module's are kept until the next is asked for)."""

    def __init__(self, gguf: Path, model, form: str, config: dict):
        from gguf import GGUFReader
        from transformers.modeling_gguf_pytorch_utils import (
            TENSOR_PROCESSORS,
            LlamaTensorProcessor,
            TensorProcessor,
            get_gguf_hf_weights_map,
            read_field,
        )

        self.reader = GGUFReader(str(gguf))
        architecture = (read_field(self.reader, "general.architecture") or [""])[0]
        self.processor = TENSOR_PROCESSORS.get(architecture, TensorProcessor)(config=config)
        # these only rename, or permute rows: the exact path permutes codes and block scales alike
        self.exact = type(self.processor) in (TensorProcessor, LlamaTensorProcessor)
        to_hf = get_gguf_hf_weights_map(model, self.processor)
        self.by_hf = {to_hf[t.name]: t for t in self.reader.tensors if t.name in to_hf}
        self.layout = layout(model, form)
        self._last: tuple[str, dict] | None = None

    def missing(self) -> list[str]:
        """The model's tensors that no tensor of the file maps onto, by the model's names (an MoE's per-expert
        layers among them: transformers maps a GGUF file's expert tensors onto its own 3D ones)."""
        return sorted({source_tensor(name) for name in self.layout} - set(self.by_hf))

    def read(self, name: str) -> torch.Tensor:
        if name not in self.layout:
            raise KeyError(name)
        if name in self.by_hf:
            return torch.from_numpy(np.array(self._float(name), dtype=np.float32))  # a writable copy
        module, _, part = name.rpartition(".")
        if self._last is None or self._last[0] != module:
            self._last = (module, self._quantized(f"{module}.weight"))
        return self._last[1][part]

    def _float(self, name: str) -> np.ndarray:
        from gguf import dequantize

        tensor = self.by_hf[name]
        weights = dequantize(tensor.data, tensor.tensor_type)
        return self.processor.process(weights=weights, name=tensor.name).weights

    def _quantized(self, name: str) -> dict[str, torch.Tensor]:
        tensor = self.by_hf[name]
        form = "int4" if name.removesuffix("weight") + "nibbles" in self.layout else "int8"
        if form == "int4" and self.exact and tensor.tensor_type.name in _EXACT_INT4:
            codes, table = self._exact_int4(tensor)
            return {"nibbles": to_nibbles(codes), "scales_zeros": table}
        return quantized_parts(torch.from_numpy(np.ascontiguousarray(self._float(name))), form)

    def _exact_int4(self, tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Q4_0 (weight = (q - 8) d) and Q4_1 (weight = q d + m): codes uint8 [N, K] and the kernel's table."""
        kind = tensor.tensor_type.name
        N = tensor.data.shape[0]
        blocks = np.ascontiguousarray(tensor.data).reshape(N, -1, _EXACT_INT4[kind])  # [N, K/32, bytes]
        d = blocks[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32)  # [N, K/32]
        if kind == "Q4_1":
            zero = blocks[..., 2:4].copy().view(np.float16)[..., 0].astype(np.float32) + 8 * d
        else:
            zero = np.zeros_like(d)
        packed = blocks[..., _EXACT_INT4[kind] - 16 :]  # [N, K/32, 16]: element j low four bits, j + 16 high
        codes = np.concatenate((packed & 15, packed >> 4), axis=-1).reshape(N, -1)
        # llama.cpp permutes query and key rows; the processor undoes it on any [N, ...] array
        codes, d, zero = (self.processor.process(weights=a, name=tensor.name).weights for a in (codes, d, zero))
        table = scales_zeros(torch.from_numpy(np.ascontiguousarray(d)), torch.from_numpy(np.ascontiguousarray(zero)))
        return torch.from_numpy(np.ascontiguousarray(codes)), table


def gguf_parsed(gguf: Path) -> dict:
    """transformers' reading of a GGUF file's metadata: its config (as a dict) and architecture."""
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    return load_gguf_checkpoint(str(gguf), return_tensors=False)


def quantized_from_gguf(gguf: Path, form: str, dtype) -> tuple[object, object]:
    """(tokenizer, model): the GGUF file's model with ``form`` weights, float parameters in ``dtype``, built one
    tensor at a time."""
    from transformers import CONFIG_MAPPING, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    parsed = gguf_parsed(gguf)
    config = CONFIG_MAPPING[parsed["config"]["model_type"]].from_dict(parsed["config"])  # as AutoConfig does
    model = empty_model(config, dtype)
    source = GgufSource(gguf, model, form, parsed.get("config", {}))
    missing = source.missing()
    if missing:
        raise ModelError(
            f"--quantize {form} cannot read this GGUF file: {len(missing)} of the model's tensors have no tensor in "
            f"it that longlm maps onto them (first: {missing[0]}); mixture-of-experts files are among those not read "
            "yet; --quantize none hands it to transformers' own GGUF reader"
        )
    install_weights(model, dtype, set(source.layout), source.read)
    cast_float_parameters(model, dtype)
    return tokenizer, model


def save_quantized(model, tokenizer, directory: Path, form: str, source: dict) -> None:
    """Write ``model`` (quantized) and ``tokenizer`` as a quantized directory: each tensor produced only while
    it is written (int4 unpacked from the kernel's layout into the portable one)."""
    from . import entryfile

    model.config.save_pretrained(directory)
    if model.can_generate():
        model.generation_config.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    entryfile.write(directory / QUANT_WEIGHTS, LazyTensors(tensor_makers(model)), {"format": "pt"})
    write_record(directory, form, source)


class LazyTensors(Mapping):
    """A Mapping whose values are computed when indexed (entryfile.write reads each twice: shape, then bytes)."""

    def __init__(self, makers: dict[str, Callable[[], torch.Tensor]]):
        self._makers = makers

    def __getitem__(self, name: str) -> torch.Tensor:
        return self._makers[name]()

    def __iter__(self):
        return iter(self._makers)

    def __len__(self) -> int:
        return len(self._makers)


def quantized_gguf(gguf: Path, form: str, dtype) -> tuple[Any, Any]:
    """(tokenizer, model) of a GGUF file with ``form`` weights: read from its quantized directory in the user
    cache, or built from the file tensor by tensor and written there once. A 16-bit copy of the same file from
    an earlier version is then removed, with a note."""
    target = converted_dir_for(gguf, form)
    built: list = []

    def convert() -> None:
        status(f"Converting {gguf.name} once into {target} ({form} weights; later runs load in a second)...")
        built.append(_loading(gguf, lambda: quantized_from_gguf(gguf, form, dtype)))
        tokenizer, model = built[0]
        write_into_place(gguf, target, lambda work: save_quantized(model, tokenizer, work, form, {"gguf": gguf.name}))

    def problem(directory: Path) -> str | None:
        return "it is of another format" if quantized_form(directory) != form else None

    if not convert_once(gguf, target, convert, problem=problem):
        return _loading(gguf, lambda: load_quantized_dir(target, dtype))
    _drop_16bit_copy(gguf)
    return built[0]


def _loading(gguf: Path, load):
    """``load()``, any failure but KeyboardInterrupt and longlm's own errors one ModelError naming ``gguf``."""
    try:
        return load()
    except LongLMError:
        raise
    except Exception as exc:
        raise ModelError(f"could not load the GGUF file {gguf}: {describe(exc)}") from exc


def _drop_16bit_copy(gguf: Path) -> None:
    """Remove the 16-bit copy an earlier version (or --quantize none) made of ``gguf``, once a quantized one
    exists: it is about 3x the file's size on disk."""
    old = converted_dir_for(gguf)
    if (old / COMPLETE).exists() and not old.is_symlink():
        size = sum(p.stat().st_size for p in old.rglob("*") if p.is_file())
        shutil.rmtree(old, ignore_errors=True)
        note(f"removed the 16-bit copy of {gguf.name} in {old} ({megabytes(size)}); --quantize none remakes it")
