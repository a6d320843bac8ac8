"""PDF documents: the text of every page, each preceded by a `[page N]` line, read with pypdf.

N is the page's label, the number printed on it (`[page iv]` in a preface, `[page A-3]` in an appendix) where the
PDF defines page labels, else its 1-based position. A label that several pages share (two parts each starting at
1) gets the position beside it, `[page 1 (file page 7)]`, so every marker names one page.
"""

from __future__ import annotations

import io
import logging
from collections import Counter
from contextlib import contextmanager

from ..errors import InputError

PDF_MAGIC = b"%PDF-"


def pdf_text(data: bytes, *, label: str) -> str:
    """Extract the text of a PDF, a line `[page LABEL]` before each page; raise InputError when that is impossible."""
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
    labels = _page_labels(reader, len(pages))
    return "\n\n".join(f"[page {label}]\n{page.strip()}" for label, page in zip(labels, pages))


def _page_labels(reader, count: int) -> list[str]:
    """Each page's label (its 1-based number where it has none), with its position added where labels repeat."""
    numbers = [str(number) for number in range(1, count + 1)]
    try:
        with _quiet_pypdf():
            found = list(reader.page_labels)
    except Exception:  # a malformed /PageLabels tree: the positions are still right
        return numbers
    if len(found) != count:
        return numbers
    labels = [" ".join(str(label).split()) or number for label, number in zip(found, numbers)]
    seen = Counter(labels)
    return [f"{label} (file page {number})" if seen[label] > 1 else label for label, number in zip(labels, numbers)]


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
