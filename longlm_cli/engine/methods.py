"""Which extension method runs beyond a model's window, and with what: the settings the user chose
(ExtensionSettings), the model's own default (Dual Chunk Attention for a config that carries its settings, else
SelfExtend), the settings shown in -v and --json, and switching the model to the method a plan needs.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..defaults import DEFAULT_EXTENSION, DEFAULT_PREFILL_CHUNK
from ..errors import UnsupportedModelError
from ..models.catalogue import dual_chunk_settings, text_config
from ..planning.plan import Plan


@dataclass(frozen=True)
class ExtensionSettings:
    """What runs when the prompt and the answer exceed L: ``method`` "selfextend" (window and group size from the
    plan unless given, optional query log-scaling) or "dca" (Dual Chunk Attention with the official chunk
    settings for L, or the model's own; nothing to choose). ``method`` None: the model's own (default_method)."""

    window: int | None = None  # None: chosen by the plan
    group_size: int | None = None
    prefill_chunk: int = DEFAULT_PREFILL_CHUNK
    scale_base: float | None = None  # query log-scaling base while SelfExtend is on; None: off
    extend_from: float | None = None  # SelfExtend on above this fraction of L; None: only beyond L
    method: str | None = None  # None: the model's own (default_method)
    use_tuned: bool = True  # take `longlm tune`'s winner for this model and length when the user chose nothing

    def chosen_by_user(self) -> bool:
        return self.selfextend_chosen() or self.method is not None

    def selfextend_chosen(self) -> bool:
        return (self.window, self.group_size, self.scale_base, self.extend_from) != (None, None, None, None)

    def method_on(self, plan: Plan) -> str | None:
        """The method that runs with ``plan``: None when the plan needs no extension."""
        return (self.method or DEFAULT_EXTENSION) if plan.needs_extension else None


def default_method(model_config, extension: ExtensionSettings) -> str:
    """The method ``extension`` runs beyond L: the one chosen, else SelfExtend when a SelfExtend setting was
    given, else Dual Chunk Attention for a model whose config carries its settings (Qwen2.5-7B/14B-Instruct-1M
    were released to run with it), else SelfExtend."""
    if extension.method is not None:
        return extension.method
    if not extension.selfextend_chosen() and dual_chunk_settings(text_config(model_config).to_dict()) is not None:
        return "dca"
    return DEFAULT_EXTENSION


def method_settings(model, plan: Plan, extension: ExtensionSettings) -> dict | None:
    """The settings the method beyond L runs with, for -v and --json: SelfExtend's window, group size and query
    scaling, or Dual Chunk Attention's chunk size, local window and chunk length; None inside L."""
    method = extension.method_on(plan)
    if method == "dca":
        from .dca import DcaConfig

        dca = DcaConfig.for_model(model.config, plan.L)
        return {"chunk_size": dca.chunk_size, "local_window": dca.local_window, "chunk_len": dca.chunk_len}
    if method is not None:
        return {"window": plan.W, "group_size": plan.G, "scale_base": extension.scale_base}
    return None


def configure(model, plan: Plan, extension: ExtensionSettings = ExtensionSettings()) -> None:
    """The extension method with the plan's settings when the plan needs extension, else the model's own
    attention: SelfExtend with the plan's W and G (and query log-scaling at ``extension.scale_base`` unless
    None), or Dual Chunk Attention with the model's own settings (its config's dual_chunk_attention_config) or the
    official ones for the plan's L."""
    from .dca import DcaConfig, apply_dca
    from .selfextend import apply_selfextend
    from .switch import detach, sliding_only

    method = extension.method_on(plan)
    window = sliding_only(model) if method is not None else None
    if window is not None:
        raise UnsupportedModelError(
            f"every layer of this model attends only to its last {window:,} tokens (a sliding window): beyond its "
            f"window of {plan.L:,} it would not read the document, and SelfExtend and Dual Chunk Attention have no "
            "full-attention layer to extend; use a model with full attention for a document this long"
        )
    if method == "dca":
        dca = DcaConfig.for_model(model.config, plan.L)
        apply_dca(model, chunk_size=dca.chunk_size, local_window=dca.local_window)
    elif method is not None:
        apply_selfextend(model, group_size=plan.G, window=plan.W, scale_base=extension.scale_base)
    else:
        detach(model)
