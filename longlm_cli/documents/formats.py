"""Formats longlm does not read but can name: zip containers (DOCX, XLSX, PPTX, ODT, ODS, ODP, EPUB) and gzip.

Such a file would otherwise be called "binary"; naming its format says what to do instead (save it as PDF or
text, extract it, decompress it). A zip is recognised by its magic `PK\\x03\\x04`, its kind by the zip's
`mimetype` member (OpenDocument, EPUB) or `[Content_Types].xml` and part folders (Office Open XML), else by the
file's extension.
"""

from __future__ import annotations

import io
import zipfile

from ..errors import InputError

ZIP_MAGIC = b"PK\x03\x04"
GZIP_MAGIC = b"\x1f\x8b\x08"
SAVE_AS_TEXT = "longlm reads PDF and text files: save it as PDF or text"

KINDS = {  # extension: what the file is, in a message
    "docx": "a Word document (DOCX)",
    "xlsx": "an Excel workbook (XLSX)",
    "pptx": "a PowerPoint presentation (PPTX)",
    "odt": "an OpenDocument text (ODT)",
    "ods": "an OpenDocument spreadsheet (ODS)",
    "odp": "an OpenDocument presentation (ODP)",
    "epub": "an EPUB e-book",
}
MIMETYPES = {
    "application/vnd.oasis.opendocument.text": "odt",
    "application/vnd.oasis.opendocument.spreadsheet": "ods",
    "application/vnd.oasis.opendocument.presentation": "odp",
    "application/epub+zip": "epub",
}
OOXML_PARTS = {"word/": "docx", "xl/": "xlsx", "ppt/": "pptx"}


def refuse_unreadable_format(data: bytes, *, label: str, name: str) -> None:
    """Raise InputError naming the format when ``data`` is a zip container or gzip; ``name`` is the file name."""
    if data.startswith(GZIP_MAGIC):
        raise InputError(f"{label} is gzip-compressed; longlm reads PDF and text files: decompress it first (gunzip)")
    if not data.startswith(ZIP_MAGIC):
        return
    kind = _zip_kind(data) or _extension(name)
    if kind in KINDS:
        raise InputError(f"{label} is {KINDS[kind]}; {SAVE_AS_TEXT}")
    raise InputError(f"{label} is a zip archive; longlm reads PDF and text files: extract it and give the files inside")


def _zip_kind(data: bytes) -> str | None:
    """The container's kind from its own members, or None (not a readable zip, or an ordinary archive)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = archive.namelist()
            if "mimetype" in names:
                with archive.open("mimetype") as member:
                    mimetype = member.read(100).decode("ascii", "replace").strip()
                if mimetype in MIMETYPES:
                    return MIMETYPES[mimetype]
            if "[Content_Types].xml" in names:
                return next(
                    (kind for part, kind in OOXML_PARTS.items() if any(n.startswith(part) for n in names)), None
                )
    except Exception:  # zipfile raises many types on damaged, encrypted or odd archives
        pass  # the extension may still say what the file was meant to be
    return None


def _extension(name: str) -> str:
    return name.rsplit(".", 1)[-1].lower() if "." in name else ""
