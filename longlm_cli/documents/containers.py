"""Zip-packaged documents (DOCX, ODT, EPUB): their members read under the input cap, their XML parsed safely.

A package is small on disk but its members may unpack to anything (a zip bomb), and a member's declared size can
lie: every member is decompressed in a stream that stops one byte past what is left of the input cap, counted over
all the members read, so the unpacked whole never exceeds what longlm would accept as a plain text file. XML with
entity declarations (the "billion laughs" expansion) is refused; Word and OpenDocument parts never declare
entities. Every failure is one InputError naming the input, what it was taken for, and why.
"""

from __future__ import annotations

import io
import zipfile
import zlib
from collections.abc import Iterator
from typing import cast
from xml.etree import ElementTree

from ..errors import InputError
from .inputs import too_large

ENTITY_DECLARATION = b"<!ENTITY"
MAX_XML_DEPTH = 100  # elements within elements; Word and OpenDocument parts nest a few dozen deep at most


class Package:
    """The members of one zip container, read with a shared budget of unpacked bytes."""

    def __init__(self, data: bytes, *, label: str, what: str, max_bytes: int) -> None:
        """``what`` names the format in messages ("a Word document (DOCX)"); ``max_bytes`` caps everything read."""
        self.label, self.what, self.max_bytes, self.left = label, what, max_bytes, max_bytes
        try:
            self._zip = zipfile.ZipFile(io.BytesIO(data))
        except Exception as exc:  # zipfile raises many types on damaged archives
            raise self.unreadable(_one_line(exc)) from None
        self.names = set(self._zip.namelist())

    def read(self, name: str) -> bytes:
        """The unpacked bytes of member ``name``; InputError when it is missing, encrypted, damaged or too large."""
        try:
            info = self._zip.getinfo(name)
        except KeyError:
            raise self.unreadable(f"it has no {name}") from None
        if info.flag_bits & 0x1:
            raise InputError(f"{self.label} is {self.what} with encrypted contents; save it without a password")
        if info.file_size > self.left:
            raise self.bomb()
        try:
            with self._zip.open(info) as member:
                data = member.read(self.left + 1)  # the declared size may lie: never unpack past the budget
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, ValueError) as exc:
            raise self.unreadable(f"{name}: {_one_line(exc)}") from None
        if len(data) > self.left:
            raise self.bomb()
        self.left -= len(data)
        return data

    def xml(self, name: str) -> ElementTree.Element:
        """Member ``name`` parsed as XML (xml.etree: no external entities, no DTD loading)."""
        return self.parse_xml(self.read(name), name)

    def parse_xml(self, data: bytes, name: str) -> ElementTree.Element:
        """``data`` parsed as XML, refused when it declares entities or nests deeper than MAX_XML_DEPTH (the
        readers walk the tree recursively: a 1 kB file nested 500 deep would exhaust Python's stack)."""
        if ENTITY_DECLARATION in data:
            raise self.unreadable(f"{name} declares XML entities, which longlm refuses (they can expand unboundedly)")
        parser: ElementTree.XMLPullParser[ElementTree.Element] = ElementTree.XMLPullParser(events=("start", "end"))
        depth, root = 0, None
        try:
            parser.feed(data)
            parser.close()
        except ElementTree.ParseError as exc:
            raise self.unreadable(f"{name} is not well-formed XML ({exc})") from None
        # Only start and end events were asked for, and each of those is (event, element).
        events = cast("Iterator[tuple[str, ElementTree.Element]]", parser.read_events())
        for event, element in events:
            depth += 1 if event == "start" else -1
            if depth > MAX_XML_DEPTH:
                raise self.unreadable(f"{name} nests its XML more than {MAX_XML_DEPTH} levels deep")
            root = element if root is None else root
        if root is None:
            raise self.unreadable(f"{name} is not well-formed XML (no element)")
        return root

    def unreadable(self, why: str) -> InputError:
        return InputError(f"{self.label} is {self.what} that cannot be read (it may be corrupt): {why}")

    def bomb(self) -> InputError:
        return too_large(self.label, self.max_bytes, what="unpacks to more than")


def join_blocks(blocks) -> str:
    """Paragraphs and tables (strings) separated by a blank line, each stripped, empty ones left out."""
    return "\n\n".join(block for block in (b.strip() for b in blocks) if block)


def table_row(cells) -> str:
    """One table row as a line: its cells' text, whitespace collapsed, joined by " | "; "" for an empty row."""
    texts = [" ".join(cell.split()) for cell in cells]
    return " | ".join(texts) if any(texts) else ""


def _one_line(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
