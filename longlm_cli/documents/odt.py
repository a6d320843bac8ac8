"""OpenDocument text (ODT): the text of content.xml's body, then its footnotes and endnotes.

Read with the standard library (zipfile and xml.etree, through containers.Package), in the same shape as
docx.py: paragraphs and headings separated by a blank line, list items as `- ` lines (indented when nested), a
table as one line per row with its cells joined by " | ", a note as `[^N]` where it is cited and `[^N]: ...`
after the body (N is the citation the document shows). Comments, deleted tracked changes and index templates are
not part of the text.
"""

from __future__ import annotations

from xml.etree.ElementTree import Element

from .containers import Package, join_blocks, table_row

WHAT = "an OpenDocument text (ODT)"
TEXT = "{urn:oasis:names:tc:opendocument:xmlns:text:1.0}"
TABLE = "{urn:oasis:names:tc:opendocument:xmlns:table:1.0}"
OFFICE = "{urn:oasis:names:tc:opendocument:xmlns:office:1.0}"
_SKIPPED = {
    TEXT + "tracked-changes",  # the deleted text of tracked changes
    TEXT + "sequence-decls",
    TEXT + "variable-decls",
    TEXT + "user-field-decls",
    TEXT + "note-citation",  # cited by _Reader._note
    OFFICE + "annotation",  # comments
    OFFICE + "annotation-end",
    OFFICE + "forms",
}
_PARAGRAPHS = {TEXT + "p", TEXT + "h"}
_ROWS = {TABLE + "table-rows", TABLE + "table-header-rows", TABLE + "table-row-group"}


def odt_text(data: bytes, *, label: str, max_bytes: int) -> str:
    """The text of an ODT file's body and notes; InputError when the package cannot be read."""
    package = Package(data, label=label, what=WHAT, max_bytes=max_bytes)
    root = package.xml("content.xml")
    body = root.find(f"{OFFICE}body/{OFFICE}text")
    if body is None:
        raise package.unreadable("content.xml has no text body")
    reader = _Reader()
    blocks = list(reader.blocks(body))
    return join_blocks([*blocks, *reader.notes])


class _Reader:
    """Walks a body once, collecting the notes it meets for after the body."""

    def __init__(self) -> None:
        self.notes: list[str] = []

    def blocks(self, container: Element, depth: int = 0):
        """The paragraphs, lists and tables under ``container``, in order, through sections and indexes."""
        for child in container:
            if child.tag in _PARAGRAPHS:
                yield self.inline(child)
            elif child.tag == TEXT + "list":
                yield "\n".join(self.list_items(child, depth))
            elif child.tag == TABLE + "table":
                yield "\n".join(row for row in map(self.row, self.rows(child)) if row)
            elif child.tag not in _SKIPPED and not child.tag.endswith("-source"):  # an index's template
                yield from self.blocks(child, depth)

    def list_items(self, container: Element, depth: int):
        """`- item` lines for a list, nested lists indented two spaces a level."""
        for item in container:
            if item.tag not in (TEXT + "list-item", TEXT + "list-header"):
                continue
            for child in item:
                if child.tag == TEXT + "list":
                    yield from self.list_items(child, depth + 1)
                else:
                    for block in self.blocks(_wrap(child), depth):
                        if block.strip():
                            yield "  " * depth + "- " + block.strip()

    def rows(self, table: Element):
        for child in table:
            if child.tag == TABLE + "table-row":
                yield child
            elif child.tag in _ROWS:
                yield from self.rows(child)

    def row(self, row: Element) -> str:
        cells = [cell for cell in row if cell.tag == TABLE + "table-cell"]  # not the covered parts of merged cells
        return table_row(" ".join(self.blocks(cell)) for cell in cells)

    def inline(self, element: Element) -> str:
        """The text of a paragraph or heading, with its spaces, tabs, line breaks and note citations."""
        parts = [element.text or ""]
        for child in element:
            parts.append(self.inline_child(child))
            parts.append(child.tail or "")
        return "".join(parts)

    def inline_child(self, child: Element) -> str:
        tag = child.tag
        if tag == TEXT + "s":
            return " " * _count(child.get(TEXT + "c"))
        if tag == TEXT + "tab":
            return "\t"
        if tag == TEXT + "line-break":
            return "\n"
        if tag == TEXT + "note":
            return self._note(child)
        if tag in _SKIPPED:
            return ""
        if any(grandchild.tag in _PARAGRAPHS for grandchild in child):  # a text box or frame: lines of their own
            return "\n" + "\n".join(block for block in self.blocks(child) if block.strip()) + "\n"
        return self.inline(child)

    def _note(self, note: Element) -> str:
        cited = note.find(TEXT + "note-citation")
        mark = " ".join("".join(cited.itertext()).split()) if cited is not None else ""
        mark = mark or str(len(self.notes) + 1)
        body = note.find(TEXT + "note-body")
        text = " ".join(" ".join(self.blocks(body)).split()) if body is not None else ""
        self.notes.append(f"[^{mark}]: {text}")
        return f"[^{mark}]"


def _wrap(element: Element) -> Element:
    """A parent holding only ``element``, so blocks() can read one child on its own."""
    parent = Element("wrapper")
    parent.append(element)
    return parent


def _count(value: str | None) -> int:
    try:
        return max(1, min(int(value or 1), 1000))  # text:c is a count of spaces; a huge one is a broken file
    except ValueError:
        return 1
