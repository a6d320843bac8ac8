"""transformers' own training-free RoPE scalings (YaRN, dynamic NTK), switched on for a run and restored after.

They are what SelfExtend is compared with in `longlm passkey`.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager

from ..errors import LongLMError, UnsupportedModelError
from ..models.architecture import text_config


def _rotary_owner(model):
    inner = getattr(model, "model", None)
    if inner is None or getattr(inner, "rotary_emb", None) is None:
        raise UnsupportedModelError(
            f"{type(model).__name__} has no model.rotary_emb module; YaRN and dynamic NTK scaling need a RoPE model"
        )
    return inner


@contextmanager
def rope_scaling(model, rope_type: str, *, factor: float, context_window: int):
    """Run the model with transformers' ``yarn`` or ``dynamic`` RoPE scaling, then restore it exactly.

    The text config's ``rope_parameters`` are set for ``factor`` (target length / L) and the model's rotary
    embedding module is replaced by a new instance of the same class built from that config. On exit the
    original module instance and the original ``rope_parameters`` come back.
    """
    if rope_type not in ("yarn", "dynamic"):
        raise LongLMError(f"unknown RoPE scaling {rope_type!r}")
    owner = _rotary_owner(model)
    config = text_config(model.config)
    original_params = config.rope_parameters
    params = copy.deepcopy(original_params)
    if not isinstance(params, dict) or "rope_theta" not in params:
        raise UnsupportedModelError(
            "YaRN and dynamic scaling are only set up for one global rope_parameters "
            "section; this model has per-layer RoPE settings"
        )
    if params.get("rope_type", "default") != "default":
        raise UnsupportedModelError(
            f"the model already uses rope type {params['rope_type']!r}; YaRN and dynamic "
            f"scaling are compared only on plain RoPE models"
        )
    new = {"rope_type": rope_type, "factor": float(factor), "rope_theta": params["rope_theta"]}
    if "partial_rotary_factor" in params:
        new["partial_rotary_factor"] = params["partial_rotary_factor"]
    if rope_type == "yarn":
        new["original_max_position_embeddings"] = int(context_window)
    original_module = owner.rotary_emb
    device = next(iter(original_module.buffers()), None)
    try:
        config.rope_parameters = new
        module = type(original_module)(config=config)
        if device is not None:
            module = module.to(device.device)
        owner.rotary_emb = module
        yield new
    finally:
        owner.rotary_emb = original_module
        config.rope_parameters = original_params
