"""longlm: read documents far longer than a local LLM's context window, with SelfExtend (arXiv 2401.01325).

Importing the package is cheap: torch is only imported when an engine function is first used.
"""

from .errors import InputError, LongLMError, ModelError, PlanError, UnsupportedModelError

__version__ = "0.1.0"

_LAZY = {
    "apply_selfextend": "engine.selfextend",
    "remove_selfextend": "engine.selfextend",
    "SelfExtendConfig": "engine.selfextend",
    "GroupedKeyCache": "engine.selfextend",
    "make_plan": "planning.plan",
    "Plan": "planning.plan",
}

__all__ = ["LongLMError", "InputError", "ModelError", "PlanError", "UnsupportedModelError", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
