"""Word documents (DOCX, Office Open XML): the text of the body, then its footnotes and endnotes.

Read with the standard library (zipfile and xml.etree, through containers.Package). Paragraphs are separated by a
blank line; a table is one line per row, its cells joined by " | "; a footnote's reference is `[^N]` in the text
and its body `[^N]: ...` after the body (N is the note's id in the file). Text inside content controls, fields,
hyperlinks, text boxes and tracked insertions is kept; tracked deletions, field codes, comments, and page headers
and footers are not part of the text. Both the usual (transitional) and the strict OOXML namespaces are read.
"""

from __future__ import annotations

import posixpath
from xml.etree.ElementTree import Element

from .containers import Package, join_blocks, table_row

WHAT = "a Word document (DOCX)"
W_NAMESPACES = (
    "http://schemas.openxmlformats.org/wordprocessingml/2006/main",
    "http://purl.oclc.org/ooxml/wordprocessingml/main",
)
MC_FALLBACK = "{http://schemas.openxmlformats.org/markup-compatibility/2006}Fallback"
RELS = "{http://schemas.openxmlformats.org/package/2006/relationships}Relationship"
DEFAULT_MAIN = "word/document.xml"
# Run content that is not visible text: deleted text, field codes, and the marks of notes and comments.
_SKIPPED = {"delText", "delInstrText", "instrText", "moveFrom", "pPr", "rPr", "footnoteRef", "endnoteRef"}
_SKIPPED |= {"commentReference", "annotationRef", "del", "sectPr", "tblPr", "trPr", "tcPr", "sdtPr"}
_CHARACTERS = {"tab": "\t", "ptab": "\t", "br": "\n", "cr": "\n", "noBreakHyphen": "-"}


def docx_text(data: bytes, *, label: str, max_bytes: int) -> str:
    """The text of a DOCX file's main document and its notes; InputError when the package cannot be read."""
    package = Package(data, label=label, what=WHAT, max_bytes=max_bytes)
    main = _main_part(package)
    body = _find(package.xml(main), "body")
    if body is None:
        raise package.unreadable(f"{main} has no document body")
    blocks = list(_blocks(body))
    folder = posixpath.dirname(main)
    for part, note in (("footnotes.xml", "footnote"), ("endnotes.xml", "endnote")):
        path = posixpath.join(folder, part)
        if path in package.names:
            blocks.extend(_notes(package.xml(path), note))
    return join_blocks(blocks)


def _main_part(package: Package) -> str:
    """The main document's path from the package relationships, else the usual word/document.xml."""
    if "_rels/.rels" not in package.names:
        return DEFAULT_MAIN
    for relation in package.xml("_rels/.rels").iter(RELS):
        if relation.get("Type", "").endswith("/officeDocument") and relation.get("TargetMode") != "External":
            return relation.get("Target", DEFAULT_MAIN).lstrip("/")
    return DEFAULT_MAIN


def _local(element: Element) -> str:
    """The element's name without a WordprocessingML namespace; other namespaces stay ("{ns}name")."""
    namespace, _, name = element.tag.rpartition("}")
    return name if namespace[1:] in W_NAMESPACES else element.tag


def _find(element: Element, name: str) -> Element | None:
    return next((child for child in element if _local(child) == name), None)


def _blocks(container: Element):
    """The paragraphs and tables of a body, cell, note or text box, in order, through content controls."""
    for child in container:
        name = _local(child)
        if name == "p":
            yield _paragraph(child)
        elif name == "tbl":
            yield _table(child)
        elif name not in _SKIPPED:  # sdt, sdtContent, customXml, ins, moveTo: containers of blocks
            yield from _blocks(child)


def _paragraph(paragraph: Element) -> str:
    parts: list[str] = []
    _runs(paragraph, parts)
    return "".join(parts)


def _runs(element: Element, parts: list[str]) -> None:
    """Append the visible text under ``element`` (a paragraph or anything inside one) to ``parts``."""
    for child in element:
        name = _local(child)
        if name == "t":
            parts.append(child.text or "")
        elif name in _CHARACTERS:
            parts.append(_CHARACTERS[name])
        elif name in ("footnoteReference", "endnoteReference"):
            parts.append(f"[^{child.get(child.tag.rpartition('}')[0] + '}id', '?')}]")
        elif name == "txbxContent":  # a text box: its paragraphs on lines of their own
            parts.append("\n" + "\n".join(block for block in _blocks(child) if block.strip()) + "\n")
        elif name in _SKIPPED or child.tag == MC_FALLBACK:  # Fallback repeats the Choice beside it
            continue
        else:  # runs, hyperlinks, fields, smart tags, inline content controls, tracked insertions, drawings
            _runs(child, parts)


def _table(table: Element) -> str:
    rows = []
    for row in _descendants(table, "tr", stop="tbl"):
        cells = [" ".join(_blocks(cell)) for cell in _descendants(row, "tc", stop="tbl")]
        rows.append(table_row(cells))
    return "\n".join(row for row in rows if row)


def _descendants(element: Element, name: str, *, stop: str):
    """The ``name`` elements under ``element`` (rows may sit inside content controls), not inside a ``stop``."""
    for child in element:
        local = _local(child)
        if local == name:
            yield child
        elif local != stop and local not in _SKIPPED:
            yield from _descendants(child, name, stop=stop)


def _notes(root: Element, kind: str):
    """`[^N]: text` for each footnote or endnote (the separators Word keeps among them have no text)."""
    for note in root:
        if _local(note) != kind:
            continue
        text = " ".join(" ".join(_blocks(note)).split())
        if text:
            namespace = note.tag.rpartition("}")[0] + "}"
            yield f"[^{note.get(namespace + 'id', '?')}]: {text}"
