"""The extension settings a user chooses for inputs beyond a model's window (torch-free): the method, SelfExtend's
window, group size, query log-scaling and start, the prefill chunk, and whether `longlm tune`'s winner applies.
One predicate, ``chosen_by_user``, says whether the user chose a setting (then `tune`'s is not taken)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..defaults import DEFAULT_EXTENSION, DEFAULT_PREFILL_CHUNK
from .plan import Plan


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

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> ExtensionSettings:
        """From the parsed --extension, --no-tuned, -w, -g, --extend-from and --log-scale (absent: off)."""
        return cls(
            method=options["extension"],
            use_tuned=not options["no_tuned"],
            window=options["window"],
            group_size=options["group_size"],
            extend_from=options["extend_from"],
            scale_base=options.get("log_scale"),
        )

    def chosen_by_user(self) -> bool:
        return self.selfextend_chosen() or self.method is not None

    def selfextend_chosen(self) -> bool:
        return (self.window, self.group_size, self.scale_base, self.extend_from) != (None, None, None, None)

    def method_on(self, plan: Plan) -> str | None:
        """The method that runs with ``plan``: None when the plan needs no extension."""
        return (self.method or DEFAULT_EXTENSION) if plan.needs_extension else None
