"""RoPE re-rotation for SelfExtend: the per-layer inverse frequencies and rotations by a position shift.

RoPE rotations compose (R(a) R(b) = R(a + b)), so a query or key already rotated at its true position is taken
to its grouped position by rotating again by the difference, in float32 with the angles computed in float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LayerRope:
    """What a layer needs to re-rotate: the RoPE inverse frequencies (rotate-half over the first 2*F dims)."""

    inv_freq: torch.Tensor  # [F] float32

    @property
    def rotary_dim(self) -> int:
        return 2 * self.inv_freq.numel()


def rotate(x: torch.Tensor, delta: torch.Tensor, rope: LayerRope) -> torch.Tensor:
    """Rotate ``x`` (already rotated at some positions) by ``delta`` more positions, per row.

    x: [B, H, S, D]; delta: [S] integer. Angles are computed in float64, the rotation in float32.
    """
    half = rope.inv_freq.numel()
    angles = delta.to(torch.float64)[:, None] * rope.inv_freq.to(x.device, torch.float64)[None, :]  # [S, F]
    cos = angles.cos().to(torch.float32)
    sin = angles.sin().to(torch.float32)
    xr = x[..., : 2 * half].float()
    x1, x2 = xr[..., :half], xr[..., half:]
    rotated = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).to(x.dtype)
    if 2 * half == x.shape[-1]:
        return rotated
    return torch.cat((rotated, x[..., 2 * half :]), dim=-1)


def grouped_query_delta(pos: torch.Tensor, group: int, window: int) -> torch.Tensor:
    """Shift taking a query from its true position i to ``i // G + W - W // G``."""
    return pos // group + window - window // group - pos


def grouped_key_delta(pos: torch.Tensor, group: int) -> torch.Tensor:
    """Shift taking a key from its true position j to ``j // G``."""
    return pos // group - pos
