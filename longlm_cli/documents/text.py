"""Plain text documents: UTF-8 (with or without a BOM), line endings normalised."""

from __future__ import annotations

from ..errors import InputError


def decode_text(data: bytes, *, label: str) -> str:
    """Decode UTF-8 bytes (a leading BOM is dropped, CRLF becomes LF); raise InputError for binary data."""
    if b"\x00" in data:
        raise InputError(f"{label} is a binary file (it contains NUL bytes); give a PDF or a UTF-8 text file")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{label} is binary or not UTF-8 text (invalid byte at offset {exc.start}); "
            "give a PDF or convert it to UTF-8 text"
        ) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")
