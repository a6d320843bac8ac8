"""Read the documents a user gives: PDF (with page markers), UTF-8 text files, and stdin. Never truncates."""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from .errors import InputError

STDIN_NAME = "-"
STDIN_LABEL = "<stdin>"
PDF_MAGIC = b"%PDF-"


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


def pdf_text(data: bytes, *, label: str) -> str:
    """Extract the text of a PDF, a line `[page N]` before each page; raise InputError when that is impossible."""
    reader = _open_pdf(data, label=label)
    try:
        with _quiet_pypdf():
            pages = [page.extract_text() or "" for page in reader.pages]
    except Exception as exc:  # pypdf raises many exception types on damaged files
        raise InputError(f"{label} is not a readable PDF (it may be corrupt): {_one_line(exc)}") from None
    if not any(page.strip() for page in pages):
        raise InputError(
            f"{label} has no extractable text; it may be a scanned image. "
            "Run OCR first (e.g. `ocrmypdf in.pdf out.pdf`) and give the result"
        )
    return "\n\n".join(f"[page {number}]\n{page.strip()}" for number, page in enumerate(pages, start=1))


def _open_pdf(data: bytes, *, label: str):
    """Open PDF bytes with pypdf, decrypting with the empty password when the file is encrypted."""
    from pypdf import PasswordType, PdfReader

    try:
        with _quiet_pypdf():
            reader = PdfReader(io.BytesIO(data))
            encrypted = reader.is_encrypted
    except Exception as exc:  # pypdf raises many exception types on damaged files
        raise InputError(f"{label} is not a readable PDF (it may be corrupt): {_one_line(exc)}") from None
    if encrypted and _try_empty_password(reader) == PasswordType.NOT_DECRYPTED:
        raise InputError(
            f"{label} is an encrypted (password-protected) PDF; "
            "decrypt it first (e.g. `qpdf --password=... --decrypt in.pdf out.pdf`)"
        )
    return reader


def _try_empty_password(reader):
    from pypdf import PasswordType

    try:
        with _quiet_pypdf():
            return reader.decrypt("")
    except Exception:  # e.g. an AES file without the `cryptography` package: treat as not decrypted
        return PasswordType.NOT_DECRYPTED


@contextmanager
def _quiet_pypdf():
    """Silence pypdf's logged warnings about damaged files; our own error says what matters."""
    logger = logging.getLogger("pypdf")
    previous = logger.level
    logger.setLevel(logging.ERROR + 1)
    try:
        yield
    finally:
        logger.setLevel(previous)


def _one_line(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
