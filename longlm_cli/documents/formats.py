"""Which zip container or compressed file an input is: the ones longlm reads (DOCX, ODT, EPUB) and the ones it
only names (XLSX, PPTX, ODS, ODP, other zip archives, gzip).

A zip is recognised by its magic `PK\\x03\\x04`, its kind by the zip's `mimetype` member (OpenDocument, EPUB) or
`[Content_Types].xml` and part folders (Office Open XML), else by the file's extension. A readable kind goes to its
reader (docx.py, odt.py, epub.py); for the others, naming the format says what to do instead (save it as PDF or
text, extract it, decompress it), where the file would otherwise be called "binary".
"""

from __future__ import annotations

import io
import zipfile

from ..errors import InputError

ZIP_MAGIC = b"PK\x03\x04"
GZIP_MAGIC = b"\x1f\x8b\x08"
READS = "longlm reads PDF, HTML, DOCX, ODT, EPUB and text files"
SAVE_AS_TEXT = f"{READS}: save it as PDF or text"
READABLE = frozenset({"docx", "odt", "epub"})  # the kinds a reader module reads

KINDS = {  # extension: what the file is, in a message (the readable kinds name themselves in their readers)
    "xlsx": "an Excel workbook (XLSX)",
    "pptx": "a PowerPoint presentation (PPTX)",
    "ods": "an OpenDocument spreadsheet (ODS)",
    "odp": "an OpenDocument presentation (ODP)",
}
MIMETYPES = {
    "application/vnd.oasis.opendocument.text": "odt",
    "application/vnd.oasis.opendocument.spreadsheet": "ods",
    "application/vnd.oasis.opendocument.presentation": "odp",
    "application/epub+zip": "epub",
}
OOXML_PARTS = {"word/": "docx", "xl/": "xlsx", "ppt/": "pptx"}


def container_kind(data: bytes, *, label: str, name: str) -> str | None:
    """The kind of a zip container longlm reads ("docx", "odt" or "epub"), or None when ``data`` is no zip or gzip;
    InputError naming the format for any other container or compressed file. ``name`` is the file name."""
    if data.startswith(GZIP_MAGIC):
        raise InputError(f"{label} is gzip-compressed; {READS}: decompress it first (gunzip)")
    if not data.startswith(ZIP_MAGIC):
        return None
    kind = _zip_kind(data) or _extension(name)
    if kind in READABLE:
        return kind  # a damaged one is reported by its reader, which says what it was taken for
    if kind in KINDS:
        raise InputError(f"{label} is {KINDS[kind]}; {SAVE_AS_TEXT}")
    raise InputError(f"{label} is a zip archive; {READS}: extract it and give the files inside")


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
