"""A Hub or local checkpoint read tensor by tensor straight into a quantized model (``--quantize int4|int8``).

No 16-bit copy of the whole model is made: each tensor is read alone from the safetensors files with plain reads
(entryfile.py; a memory map would leave the whole file's pages counted in the process), and a linear layer's
weight is quantized (qlinear.quantized_parts: a block of rows at a time in float32) before the next is read, as
ggufquant.py does for a GGUF file. The peak is the quantized model plus one tensor in the file's type. A
checkpoint whose tensor names are not the model's own (a conversion transformers applies while loading), or that
has no safetensors files, is left to the 16-bit path (loader.py), which loads it whole and then quantizes it.
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch

from .entryfile import open_tensors
from .qlinear import quantized_parts
from .quantize import QUANTIZED_PARTS, cast_float_parameters, empty_model, install_weights, layout, source_tensor

SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"
MAX_HEADER = 64 * 1024**2  # bytes of a shard's safetensors header (a few thousand tensors)


def checkpoint_files(directory: Path) -> list[Path] | None:
    """The safetensors files of a checkpoint directory: the one file, or the shards its index names; None when
    it has neither (or its index cannot be read)."""
    if (directory / INDEX).is_file():
        try:
            shards = sorted(set(json.loads((directory / INDEX).read_text(encoding="utf-8"))["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None
        files = [directory / shard for shard in shards if isinstance(shard, str)]
        return files if files and all(f.is_file() and f.parent == directory for f in files) else None
    return [directory / SINGLE] if (directory / SINGLE).is_file() else None


class CheckpointSource:
    """The tensors install_weights asks for (quantize.layout's names), from a checkpoint's safetensors: float
    tensors as they are, in float32; a quantized module's parts computed from its weight when first asked for
    (install_weights reads a module's parts one after another, so only the last module's are kept)."""

    def __init__(self, readers: list, model, form: str):
        self._where = {key: reader for reader in readers for key in reader}
        self.layout = layout(model, form)
        self._last: tuple[str, dict[str, torch.Tensor]] | None = None

    def missing(self) -> list[str]:
        """Checkpoint tensors the model needs that the files do not hold under the model's names."""
        return sorted({source_tensor(name) for name in self.layout} - set(self._where))

    def read(self, name: str) -> torch.Tensor:
        if name not in self.layout:
            raise KeyError(name)
        module, _, part = name.rpartition(".")
        if part not in QUANTIZED_PARTS:
            return self._float(name)
        if self._last is None or self._last[0] != module:
            self._last = (module, self._quantized(module))
        return self._last[1][part]

    def _float(self, name: str) -> torch.Tensor:
        return self._where[name].read(name).float()  # one tensor; a 16-bit file's values are exact in float32

    def _quantized(self, module: str) -> dict[str, torch.Tensor]:
        name = f"{module}.weight"
        form = "int4" if f"{module}.nibbles" in self.layout else "int8"
        return quantized_parts(self._where[name].read(name), form)  # read in the file's type


def quantized_checkpoint(directory: Path, form: str, dtype, *, trust_remote_code: bool) -> tuple[Any, Any] | None:
    """(tokenizer, model) of the checkpoint in ``directory`` with ``form`` linear layers and float parameters in
    ``dtype``, built one tensor at a time; None when it cannot be streamed (no safetensors files, tensors under
    other names, or a model with its own code), for the 16-bit path to load."""
    from transformers import AutoConfig, AutoTokenizer

    files = checkpoint_files(directory)
    if files is None or trust_remote_code:  # a model's own code may build its layers otherwise: the 16-bit path
        return None
    config = AutoConfig.from_pretrained(str(directory), trust_remote_code=trust_remote_code)
    model = empty_model(config, dtype)
    with ExitStack() as stack:
        try:
            readers = [stack.enter_context(open_tensors(f, MAX_HEADER)) for f in files]
        except (OSError, ValueError):  # a header this reader does not take (another dtype): the 16-bit path
            return None
        source = CheckpointSource(readers, model, form)
        if source.missing():
            return None
        tokenizer = AutoTokenizer.from_pretrained(str(directory), trust_remote_code=trust_remote_code)
        install_weights(model, dtype, set(source.layout), source.read)
    cast_float_parameters(model, dtype)
    model.config._name_or_path = str(directory)
    return tokenizer, model
