"""Read the documents a user gives: PDF (with page markers), UTF-8 text files, and stdin. Never truncates.

This module reads the bytes and picks the reader by format: pdf.py for PDF, text.py for plain text.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ..errors import InputError
from .pdf import PDF_MAGIC, pdf_text
from .text import decode_text

STDIN_NAME = "-"
STDIN_LABEL = "<stdin>"


@dataclass(frozen=True)
class Document:
    """The text of one or more inputs joined together, and the names of those inputs in order."""

    text: str
    sources: tuple[str, ...]


def read_documents(paths: Sequence[str], *, stdin: IO[bytes] | None = None) -> Document:
    """Read every input in `paths` and join them into one Document.

    Each path is a PDF (read with pypdf, a line `[page N]` before each page), a UTF-8 text file, or "-" for
    stdin (bytes; `stdin` defaults to sys.stdin.buffer). With several inputs each one is preceded by a header
    line `### <name>`; a single input has no header. Raises InputError naming the input on any problem.
    """
    if not paths:
        raise InputError("no document given; pass one or more file paths, or '-' to read stdin")
    if list(paths).count(STDIN_NAME) > 1:
        raise InputError("stdin ('-') can be read only once; give '-' a single time")
    parts = [(_label(path), _read_one(path, stdin=stdin)) for path in paths]
    if len(parts) == 1:
        label, text = parts[0]
        return Document(text=text, sources=(label,))
    joined = "\n\n".join(f"### {label}\n\n{text}" for label, text in parts)
    return Document(text=joined, sources=tuple(label for label, _ in parts))


def _label(path: str) -> str:
    return STDIN_LABEL if path == STDIN_NAME else path


def _read_one(path: str, *, stdin: IO[bytes] | None) -> str:
    """Return the text of one input, checked to be non-empty."""
    label = _label(path)
    data = _read_stdin(stdin) if path == STDIN_NAME else _read_file(path)
    if not data.strip():
        raise _empty(label)
    if path.lower().endswith(".pdf") or data.startswith(PDF_MAGIC):
        text = pdf_text(data, label=label)
    else:
        text = decode_text(data, label=label)
    if not text.strip():
        raise _empty(label)
    return text


def _empty(label: str) -> InputError:
    return InputError(f"{label} is empty (no text, or only whitespace)")


def _read_stdin(stdin: IO[bytes] | None) -> bytes:
    stream = stdin if stdin is not None else sys.stdin.buffer
    return stream.read()


def _read_file(path: str) -> bytes:
    file = Path(path).expanduser()
    if not file.exists():
        raise InputError(f"{path} does not exist")
    if file.is_dir():
        raise InputError(f"{path} is a directory; give the files inside it instead")
    try:
        return file.read_bytes()
    except PermissionError:
        raise InputError(f"{path} cannot be read: permission denied") from None
    except OSError as exc:
        raise InputError(f"{path} cannot be read: {exc.strerror or exc}") from None
