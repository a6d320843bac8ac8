"""Typed errors. The CLI turns every LongLMError into one line `Error: ...` and exit code 1."""


class LongLMError(Exception):
    """Base class for every error longlm reports to a user."""


class InputError(LongLMError):
    """A document could not be read: missing, unreadable, empty, encrypted, scanned or binary."""


class ModelError(LongLMError):
    """A model could not be found, loaded or used (unknown name, missing path, hub unreachable)."""


class UnsupportedModelError(ModelError):
    """The model's attention cannot be extended: no RoPE, or a rope type whose rotation does not compose."""


class PlanError(LongLMError):
    """No sensible SelfExtend setting exists: W >= L, G < 1, or the document is too long even when extended."""


class CacheError(LongLMError):
    """The document cache cannot be used as asked (a bad size limit, an unwritable cache directory)."""


class ConversationTooLongError(PlanError):
    """A chat conversation has outgrown the capacity of the SelfExtend plan chosen when it started."""
