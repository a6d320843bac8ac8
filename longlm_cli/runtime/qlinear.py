"""Weights held in 4 or 8 bits on the CPU: the two formats, the layers that compute with them, and quantizing a
float matrix into them.

- int4: asymmetric, groups of GROUP_SIZE input features (the block size of GGUF's Q4_0/Q4_1/Q4_K): a weight is
  ``(q - 8) * scale + zero`` with q in 0..15; scales and zeros in bfloat16, as torch's CPU kernel takes them.
- int8: symmetric, one bfloat16 scale per output feature (row).

A forward of a few rows (a decoding step) runs torch's weight-only kernels on the packed weights
(``_weight_int4pack_mm_for_cpu``, ``_weight_int8pack_mm``) with bfloat16 activations: those kernels are fast on
the CPU only in bfloat16 (float32 activations took 30x longer: ``python benchmarks/quant.py --kernels``). A
forward of many rows (a prefill chunk) is faster as a float matrix product, so the layer's weights are unpacked
into a scratch buffer shared by every quantized layer of the model and multiplied in the activations' own dtype:
only one layer is ever unpacked at a time, and a large one in blocks of output rows (UNPACK_ELEMENTS), so the
buffer stays at 64 MiB in float32 whatever the layer (an 8B model's MLP matrix would take 224 MiB, its output
head 1.96 GiB).

The int4 kernel's packed layout is torch's and may differ between processors; it is made at load time from the
portable layout written to disk (``nibbles``: two 4-bit codes a byte, the even input feature in the low half)
and unpacked by ``unpack_kernel_int4``, whose reading of the layout is checked once per shape against a
matrix packed by torch (a shape whose check fails is not taken in int4: int4_fits).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

GROUP_SIZE = 32  # input features per int4 scale and zero (GGUF's blocks)
KERNEL_MAX_ROWS = 16  # forwards of at most this many rows use the packed kernel; more rows unpack the layer
INT4_ROW_MULTIPLE = 16  # torch's int4 packing needs the output features in multiples of 16
COMPUTE = torch.bfloat16  # the kernels' activation, scale and output dtype
FORMS = ("int4", "int8")
ROW_BLOCK = 4096  # rows quantized at a time by quantized_parts
UNPACK_ELEMENTS = 1 << 24  # weights unpacked at a time for a many-row forward (a multiple of whole output rows)
_LAYOUT_CHECKED: dict[
    tuple[int, int], int | None
] = {}  # (N, K) -> the block rows unpack_kernel_int4 reads torch's layout with (None: none)


class Scratch:
    """One buffer per dtype, grown to the largest layer unpacked into it, shared by a model's quantized layers
    (they run one after another)."""

    def __init__(self) -> None:
        self._buffers: dict[torch.dtype, torch.Tensor] = {}

    def matrix(self, rows: int, cols: int, dtype: torch.dtype) -> torch.Tensor:
        buffer = self._buffers.get(dtype)
        if buffer is None or buffer.numel() < rows * cols:
            self._buffers.pop(dtype, None)  # freed before the larger one is allocated
            buffer = self._buffers[dtype] = torch.empty(rows * cols, dtype=dtype)
        return buffer[: rows * cols].view(rows, cols)


def int4_fits(out_features: int, in_features: int) -> bool:
    """Whether a [out, in] matrix can be held in int4: torch's packing and the group size both divide it, and
    its packed layout on this processor reads back (prefill unpacks it; quantize.py falls back to int8)."""
    shaped = out_features % INT4_ROW_MULTIPLE == 0 and in_features % GROUP_SIZE == 0
    return shaped and kernel_block(out_features, in_features) is not None


# --- quantizing float weights -------------------------------------------------------------------------------


def quantize_int4(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes uint8 [N, K] in 0..15, scales_zeros bfloat16 [K / GROUP_SIZE, N, 2]) of ``weight`` [N, K]: each
    group's minimum and maximum map to codes 0 and 15."""
    N, K = weight.shape
    groups = weight.float().reshape(N, K // GROUP_SIZE, GROUP_SIZE)
    low, high = groups.amin(-1), groups.amax(-1)  # [N, K/gs]
    scale = ((high - low) / 15).clamp_min(torch.finfo(torch.float32).tiny)
    codes = ((groups - low[..., None]) / scale[..., None]).round_().clamp_(0, 15).to(torch.uint8)
    return codes.reshape(N, K), scales_zeros(scale, low + 8 * scale)


def scales_zeros(scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    """The int4 kernel's [K / GROUP_SIZE, N, 2] bfloat16 table from per-group ``scale`` and ``zero`` [N, K/gs]
    (a weight is (code - 8) * scale + zero)."""
    return torch.stack((scale, zero), dim=-1).transpose(0, 1).to(COMPUTE).contiguous()


def quantize_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes int8 [N, K], scales bfloat16 [N]) of ``weight`` [N, K]: each row's largest magnitude maps to 127.
    The scale is rounded to bfloat16 before the codes are chosen, so codes and scale agree."""
    rows = weight.float()
    scale = (rows.abs().amax(-1) / 127).clamp_min(torch.finfo(torch.float32).tiny).to(COMPUTE)
    codes = (rows / scale.float()[:, None]).round_().clamp_(-127, 127).to(torch.int8)
    return codes, scale


# --- the portable int4 layout and torch's kernel layout -----------------------------------------------------


def to_nibbles(codes: torch.Tensor) -> torch.Tensor:
    """Codes uint8 [N, K] -> bytes uint8 [N, K/2], the even feature in the low four bits (the layout on disk)."""
    return codes[:, 0::2] | (codes[:, 1::2] << 4)


def from_nibbles(nibbles: torch.Tensor) -> torch.Tensor:
    """The inverse of to_nibbles: uint8 [N, K/2] -> codes uint8 [N, K]."""
    return torch.stack((nibbles & 15, nibbles >> 4), dim=-1).reshape(nibbles.shape[0], -1)


def pack_for_kernel(codes: torch.Tensor) -> torch.Tensor:
    """Codes uint8 [N, K] -> torch's CPU int4 kernel layout, uint8 [N, K/2]."""
    return torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes.to(torch.int32), 1)


def unpack_kernel_int4(packed: torch.Tensor, K: int, block: int) -> torch.Tensor:
    """torch's CPU layout -> codes uint8 [N, K], reading it as blocks of ``block`` output rows, each stored as
    [K, block / 2] bytes whose low halves hold the block's first half of rows and high halves the second."""
    N = packed.shape[0]
    bytes_ = packed.view(N // block, K, block // 2)
    codes = torch.cat((bytes_ & 15, bytes_ >> 4), dim=2)  # [N/block, K, block]
    return codes.transpose(1, 2).reshape(N, K)


def kernel_block(N: int, K: int) -> int | None:
    """The block of torch's int4 layout for [N, K] on this processor (64 with AVX-512, found by packing a known
    matrix), or None when no reading matches it."""
    key = (N, K)
    if key not in _LAYOUT_CHECKED:
        probe = torch.randint(0, 16, (N, K), dtype=torch.uint8, generator=torch.Generator().manual_seed(N * 7 + K))
        packed = pack_for_kernel(probe)
        found = None
        for block in (64, 32, 16):
            if N % block == 0 and torch.equal(unpack_kernel_int4(packed, K, block), probe):
                found = block
                break
        _LAYOUT_CHECKED[key] = found
    return _LAYOUT_CHECKED[key]


def quantized_parts(weight: torch.Tensor, form: str) -> dict[str, torch.Tensor]:
    """``weight`` [N, K] (any float type) as a quantized directory names its tensors: int4 ``nibbles`` and
    ``scales_zeros``, or int8 ``codes`` and ``scale``. Quantized ROW_BLOCK rows at a time in float32 (each row's
    scales are its own, so the blocks give the whole's result): the float32 copy and the work stay a block, not
    the whole of a 128k-row embedding."""
    rows = range(0, weight.shape[0], ROW_BLOCK)
    if form == "int4":
        blocks = [quantize_int4(weight[i : i + ROW_BLOCK].float()) for i in rows]
        codes, table = torch.cat([c for c, _ in blocks]), torch.cat([t for _, t in blocks], dim=1)  # [K/gs, N, 2]
        return {"nibbles": to_nibbles(codes), "scales_zeros": table}
    blocks8 = [quantize_int8(weight[i : i + ROW_BLOCK].float()) for i in rows]
    return {"codes": torch.cat([c for c, _ in blocks8]), "scale": torch.cat([s for _, s in blocks8])}


# --- the layers ---------------------------------------------------------------------------------------------


class QuantizedLinear(nn.Module):
    """``y = x W^T + b`` with W in int4 or int8 (see the module docstring); ``bias`` stays in float."""

    # buffers, by form (registered in __init__): int4 packed + scales_zeros, int8 codes + scale
    packed: torch.Tensor
    scales_zeros: torch.Tensor
    codes: torch.Tensor
    scale: torch.Tensor
    out_features: int
    in_features: int
    _block: int  # int4: the output rows of the kernel layout's blocks

    def __init__(self, form: str, tensors: dict[str, torch.Tensor], bias: torch.Tensor | None, scratch: Scratch):
        super().__init__()
        if form not in FORMS:
            raise ValueError(f"unknown weight form {form!r}")
        self.form = form
        self.scratch = scratch
        for name, tensor in tensors.items():
            self.register_buffer(name, tensor)
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)
        if form == "int4":
            self.out_features, self.in_features = self.packed.shape[0], self.packed.shape[1] * 2
            block = kernel_block(self.out_features, self.in_features)
            if block is None:
                raise ValueError(f"an int4 layer of shape {self.out_features}x{self.in_features} (see int4_fits)")
            self._block = block
        else:
            self.out_features, self.in_features = self.codes.shape

    @classmethod
    def from_float(cls, form: str, weight: torch.Tensor, bias: torch.Tensor | None, scratch: Scratch):
        """Quantize a float ``weight`` [out, in]."""
        if form == "int4":
            codes, table = quantize_int4(weight)
            return cls.from_int4_codes(codes, table, bias, scratch)
        codes, scale = quantize_int8(weight)
        return cls("int8", {"codes": codes, "scale": scale}, bias, scratch)

    @classmethod
    def from_int4_codes(cls, codes: torch.Tensor, table: torch.Tensor, bias, scratch: Scratch):
        """From codes uint8 [N, K] and their scales_zeros table."""
        return cls("int4", {"packed": pack_for_kernel(codes), "scales_zeros": table}, bias, scratch)

    def portable_parts(self) -> dict:
        """How to produce each tensor as written to disk (int4 codes in the portable nibble layout)."""
        if self.form == "int8":
            return {"codes": lambda: self.codes, "scale": lambda: self.scale}
        codes = functools.partial(unpack_kernel_int4, self.packed, self.in_features, self._block)
        return {"nibbles": lambda: to_nibbles(codes()), "scales_zeros": lambda: self.scales_zeros}

    def unpack_into(self, out: torch.Tensor, first: int = 0) -> torch.Tensor:
        """Write the float weight's output rows [first, first + len(out)) into ``out`` [n, K] (in its dtype) and
        return it; for int4, ``first`` and the row count are multiples of the layout's block (or reach N)."""
        rows = slice(first, first + out.shape[0])
        if self.form == "int8":
            out.copy_(self.codes[rows])
            return out.mul_(self.scale[rows].to(out.dtype)[:, None])
        n, K = out.shape
        out.copy_(unpack_kernel_int4(self.packed[rows], K, self._block))
        table = self.scales_zeros[:, rows].to(out.dtype)  # [K/gs, n, 2]
        scale, zero = table[..., 0].t(), table[..., 1].t()  # [n, K/gs]
        groups = out.view(n, K // GROUP_SIZE, GROUP_SIZE)
        return groups.mul_(scale[..., None]).add_((zero - 8 * scale)[..., None]).view(n, K)

    def unpack_rows(self) -> int:
        """Output rows unpacked at a time: all of them, or as many whole layout blocks as UNPACK_ELEMENTS holds."""
        block = self._block if self.form == "int4" else 1
        rows = max(block, UNPACK_ELEMENTS // self.in_features // block * block)
        return min(self.out_features, rows)

    def _unpacked_product(self, rows: torch.Tensor) -> torch.Tensor:
        """rows [M, K] -> [M, N] as float matrix products, the weights unpacked into the shared scratch buffer one
        block of output rows at a time (unpack_rows)."""
        N, K, step = self.out_features, self.in_features, self.unpack_rows()
        if step == N:
            return F.linear(rows, self.unpack_into(self.scratch.matrix(N, K, rows.dtype)))
        y = rows.new_empty(rows.shape[0], N)
        for first in range(0, N, step):
            n = min(step, N - first)
            y[:, first : first + n] = F.linear(rows, self.unpack_into(self.scratch.matrix(n, K, rows.dtype), first))
        return y

    def _kernel(self, rows: torch.Tensor) -> torch.Tensor:
        """rows [M, K] in bfloat16 -> [M, N] in bfloat16 on the packed weights."""
        if self.form == "int4":
            return torch.ops.aten._weight_int4pack_mm_for_cpu(rows, self.packed, GROUP_SIZE, self.scales_zeros)
        return torch.ops.aten._weight_int8pack_mm(rows, self.codes, self.scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)  # [M, K]
        if rows.shape[0] <= KERNEL_MAX_ROWS:
            y = self._kernel(rows.to(COMPUTE).contiguous()).to(x.dtype)
        else:
            y = self._unpacked_product(rows)
        if self.bias is not None:
            y = y + self.bias
        return y.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, form={self.form}, bias={self.bias is not None}"


class QuantizedEmbedding(nn.Module):
    """An embedding table in int8 (one scale per row); looked-up rows come back in ``dtype``. Its tensors may be
    shared with a tied output head (a QuantizedLinear of form int8)."""

    codes: torch.Tensor
    scale: torch.Tensor

    def __init__(self, codes: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype, padding_idx: int | None = None):
        super().__init__()
        self.register_buffer("codes", codes)
        self.register_buffer("scale", scale)
        self.num_embeddings, self.embedding_dim = codes.shape
        self.dtype = dtype
        self.padding_idx = padding_idx

    def portable_parts(self) -> dict:
        return {"codes": lambda: self.codes, "scale": lambda: self.scale}

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.codes[ids].to(self.dtype) * self.scale[ids].to(self.dtype)[..., None]

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, form=int8"
