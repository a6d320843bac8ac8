"""The one switch between a model's own attention and an extension method beyond its window: ``attach`` and
``detach``, used by answers, chat, the server, evaluation, passkey and tune alike; which method runs by default
(Dual Chunk Attention for a config that carries its settings, else SelfExtend); the settings shown in -v and
--json; and ``configure``, which attaches what a plan needs.
"""

from __future__ import annotations

from typing import cast

from ..defaults import DEFAULT_EXTENSION
from ..errors import UnsupportedModelError
from ..models.architecture import dual_chunk_settings, text_config
from ..planning.extension import ExtensionSettings
from ..planning.plan import Plan

__all__ = ["ExtensionSettings", "attach", "configure", "dca_settings", "default_method", "detach", "method_settings"]


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
        return dca_settings(model.config, plan.L)
    if method is not None:
        return {"window": plan.W, "group_size": plan.G, "scale_base": extension.scale_base}
    return None


def dca_settings(config, L: int) -> dict:
    """Dual Chunk Attention's settings for a model of window ``L``: its config's own, else the official ones for
    L (``{"chunk_size", "local_window", "chunk_len"}``)."""
    from .dca import DcaConfig

    dca = DcaConfig.for_model(config, L)
    return {"chunk_size": dca.chunk_size, "local_window": dca.local_window, "chunk_len": dca.chunk_len}


def attach(
    model,
    method: str | None,
    *,
    L: int,
    window: int | None = None,
    group_size: int | None = None,
    scale_base: float | None = None,
) -> None:
    """Switch ``model`` (window ``L``) to ``method``: "selfextend" with ``window``, ``group_size`` and query
    log-scaling at ``scale_base`` (None: off), "dca" with dca_settings, or None for its own attention. A model
    whose every layer only sees a sliding window cannot be extended: UnsupportedModelError."""
    from .dca import apply_dca
    from .selfextend import apply_selfextend
    from .switch import sliding_only

    if method is None:
        detach(model)
        return
    sliding = sliding_only(model)
    if sliding is not None:
        raise UnsupportedModelError(
            f"every layer of this model attends only to its last {sliding:,} tokens (a sliding window): beyond its "
            f"window of {L:,} it would not read the document, and SelfExtend and Dual Chunk Attention have no "
            "full-attention layer to extend; use a model with full attention for a document this long"
        )
    if method == "dca":
        dca = dca_settings(model.config, L)
        apply_dca(model, chunk_size=dca["chunk_size"], local_window=dca["local_window"])
    elif method == "selfextend":
        # cast: a None W or G reaches apply_selfextend's own check, which refuses it with a LongLMError.
        apply_selfextend(model, group_size=cast(int, group_size), window=cast(int, window), scale_base=scale_base)
    else:
        raise ValueError(f"unknown extension method {method!r}")


def detach(model) -> None:
    """Give ``model`` its own attention back (nothing happens when no method is attached)."""
    from .switch import detach as switch_off

    switch_off(model)


def configure(model, plan: Plan, extension: ExtensionSettings = ExtensionSettings()) -> None:
    """Attach the method ``plan`` needs with its settings (SelfExtend with the plan's W and G, and the query
    log-scaling of ``extension``; Dual Chunk Attention as dca_settings), or detach when it needs none."""
    attach(
        model, extension.method_on(plan), L=plan.L, window=plan.W, group_size=plan.G, scale_base=extension.scale_base
    )
