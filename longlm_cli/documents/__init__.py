"""Read the documents a user gives: PDF (with page markers), HTML, DOCX, ODT, EPUB, text files in any text
encoding, and stdin.

Never truncates; refuses what is not a document. This module picks the reader by format: inputs.py gets the
bytes (with the size cap), pdf.py reads PDF, formats.py tells the zip containers apart (and names the ones longlm
does not read: XLSX, PPTX, gzip, ...), docx.py, odt.py and epub.py read those containers, html.py recognises and
reads HTML, text.py finds the text encoding and decodes. Text extracted from a file is held to the input cap too.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO

from ..errors import InputError
from .docx import docx_text
from .epub import epub_text
from .formats import container_kind
from .html import decode_html, html_page_text, is_html_name, looks_like_html, sniff_html_bytes
from .inputs import max_input_bytes, read_path, read_stream, too_large
from .odt import odt_text
from .pdf import PDF_MAGIC, pdf_text
from .text import decode_text, is_blank

STDIN_NAME = "-"
STDIN_LABEL = "<stdin>"
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
CONTAINER_READERS = {"docx": docx_text, "odt": odt_text, "epub": epub_text}


@dataclass(frozen=True)
class Document:
    """The text of one or more inputs joined together, the names of those inputs in order, and per input the
    text encoding assumed ("utf-8", "cp1252", "utf-16-le", ...; None for a PDF, DOCX, ODT or EPUB file)."""

    text: str
    sources: tuple[str, ...]
    encodings: tuple[str | None, ...] = ()


def read_documents(paths: Sequence[str], *, stdin: IO[bytes] | None = None, max_bytes: int | None = None) -> Document:
    """Read every input in `paths` and join them into one Document.

    Each path is a PDF (read with pypdf, a line `[page LABEL]` before each page), an HTML page, a DOCX, ODT or
    EPUB file, a text file, or "-" for stdin (bytes; `stdin` defaults to sys.stdin.buffer). With several inputs
    each one is preceded by a header line `### <name>`; a single input has no header. At most `max_bytes` are read
    from each input, and extracted from each file (None: $LONGLM_MAX_INPUT_BYTES, else 256 MiB). Raises InputError
    naming the input on any problem.
    """
    if not paths:
        raise InputError("no document given; pass one or more file paths, or '-' to read stdin")
    if list(paths).count(STDIN_NAME) > 1:
        raise InputError("stdin ('-') can be read only once; give '-' a single time")
    limit = max_bytes if max_bytes is not None else max_input_bytes()
    parts = [_read_one(path, stdin=stdin, max_bytes=limit) for path in paths]
    labels = tuple(label for label, _, _ in parts)
    if len(parts) == 1:
        text = parts[0][1]
    else:
        text = "\n\n".join(f"### {label}\n\n{part}" for label, part, _ in parts)
    return Document(text=text, sources=labels, encodings=tuple(encoding for _, _, encoding in parts))


def display_name(path: str) -> str:
    """``path`` safe to print and to give a model: undecodable bytes as U+FFFD, control characters escaped."""
    if path == STDIN_NAME:
        return STDIN_LABEL
    if not path:
        return "''"
    text = os.fsencode(path).decode("utf-8", "replace")
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def _read_one(path: str, *, stdin: IO[bytes] | None, max_bytes: int) -> tuple[str, str, str | None]:
    """(label, text, encoding) of one input, checked to hold visible text."""
    label = display_name(path)
    if path == STDIN_NAME:
        data = _read_stdin(stdin, max_bytes)
    else:
        data = read_path(path, label=label, max_bytes=max_bytes)
    if not data or data.isspace():  # an empty ".pdf" is empty, not a damaged PDF
        raise _empty(label)
    text, encoding = _text(path, data, label=label, max_bytes=max_bytes)
    if is_blank(text):
        raise _empty(label)
    return label, text, encoding


def _text(path: str, data: bytes, *, label: str, max_bytes: int) -> tuple[str, str | None]:
    """(text, encoding) of one input by its format: PDF, a zip container, HTML, else text."""
    if path.lower().endswith(".pdf") or data.startswith(PDF_MAGIC):
        return _capped(pdf_text(data, label=label), label, max_bytes), None
    kind = container_kind(data, label=label, name=path)
    if kind is not None:
        return _capped(CONTAINER_READERS[kind](data, label=label, max_bytes=max_bytes), label, max_bytes), None
    if is_html_name(path) or sniff_html_bytes(data):
        text, encoding = decode_html(data, label=label)
        return html_page_text(text, label=label), encoding
    text, encoding = decode_text(data, label=label)
    if looks_like_html(text):  # HTML in UTF-16 or UTF-32, seen only once decoded
        return html_page_text(text, label=label), encoding
    return text, encoding


def _capped(text: str, label: str, max_bytes: int) -> str:
    """``text`` when its UTF-8 size is within the cap; a PDF or a package can hold more text than its size."""
    if len(text) * 4 > max_bytes and len(text.encode("utf-8", "replace")) > max_bytes:
        raise too_large(label, max_bytes, what="holds text larger than")
    return text


def _empty(label: str) -> InputError:
    return InputError(f"{label} is empty (no text, or only whitespace)")


def _read_stdin(stdin: IO[bytes] | None, max_bytes: int) -> bytes:
    stream = stdin if stdin is not None else getattr(sys.stdin, "buffer", None)
    if stream is None:  # started with stdin closed (`<&-`)
        raise InputError(f"{STDIN_LABEL} is closed; give the document as a file")
    return read_stream(stream, label=STDIN_LABEL, max_bytes=max_bytes)
