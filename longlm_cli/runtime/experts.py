"""Mixture-of-experts layers whose experts transformers keeps as 3D tensors (Mixtral, Qwen-MoE and the like in
transformers 5), split into one linear layer per expert so that quantize.py quantizes them as it does any layer.

Without the split, ``--quantize int4`` left every expert (nearly all of an MoE model's weights) in float, and a
quantized directory kept them in float32. The split layers run through transformers' ExpertsInterface under
PER_EXPERT, registered here: each expert routed to takes its tokens, as transformers' eager experts do. No
forward method is touched. A model that is not quantized keeps transformers' own experts.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers.integrations.moe import ExpertsInterface

PER_EXPERT = "longlm_per_expert"


def fused_experts(module: nn.Module) -> bool:
    """Whether ``module`` is a transformers experts module holding its weights as 3D tensors [experts, ...]."""
    down = module._parameters.get("down_proj")
    return hasattr(module, "is_transposed") and hasattr(module, "config") and down is not None and down.dim() == 3


def split_experts(model: nn.Module) -> int:
    """Replace the 3D weights of every fused experts module of ``model`` with per-expert nn.Linear layers
    (``longlm_up``: [gate; up] or up, ``longlm_down``), views of the same storage (a meta skeleton stays on
    meta), and run those modules under PER_EXPERT. Returns the number of modules split."""
    split = 0
    module: Any  # an experts module: transformers sets has_gate, is_transposed and config on it
    for module in list(model.modules()):
        if not fused_experts(module):
            continue
        module.longlm_up = _per_expert(module, "gate_up_proj" if module.has_gate else "up_proj")
        module.longlm_down = _per_expert(module, "down_proj")
        module.config._experts_implementation = PER_EXPERT
        split += 1
    return split


def _per_expert(module: Any, name: str) -> nn.ModuleList:
    """The 3D parameter ``name`` (and its ``name_bias``) of ``module`` as one nn.Linear per expert, taken off
    the module. Weights are [experts, out, in], or [experts, in, out] when the module says is_transposed."""
    weight: torch.Tensor = module._parameters.pop(name)
    bias: torch.Tensor | None = module._parameters.pop(f"{name}_bias", None)
    layers = []
    for e in range(weight.shape[0]):
        w = weight[e].t() if module.is_transposed else weight[e]  # [out, in]
        layer = nn.Linear(w.shape[1], w.shape[0], bias=bias is not None, device="meta", dtype=w.dtype)
        layer.weight = nn.Parameter(w, requires_grad=False)
        if bias is not None:
            layer.bias = nn.Parameter(bias[e], requires_grad=False)
        layers.append(layer)
    return nn.ModuleList(layers)


def per_expert_forward(self, hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor):
    """hidden_states [T, H]; top_k_index, top_k_weights [T, k] -> [T, H]: each routed expert's layers on its
    tokens, weighted by the router and summed per token."""
    final = torch.zeros_like(hidden_states)
    for expert in top_k_index.unique().tolist():
        if expert >= len(self.longlm_up):  # an expert-parallel placeholder: none here
            continue
        tokens, slots = torch.where(top_k_index == expert)
        h = self.longlm_up[expert](hidden_states[tokens])  # [n, 2I] or [n, I]
        h = self._apply_gate(h) if self.has_gate else self.act_fn(h)  # [n, I]
        out = self.longlm_down[expert](h)  # [n, H]
        if self.has_post_expert_norm:
            out = self.post_expert_norm(out)
        final.index_add_(0, tokens, (out * top_k_weights[tokens, slots, None]).to(final.dtype))
    return final


ExpertsInterface.register(PER_EXPERT, per_expert_forward)
