"""Rendering a parsed HTML tree (lxml) to the text a reader sees, laid out for a model to read.

Paragraphs, headings, block quotes, tables and lists are separated by a blank line; a `div`, a list item, a table
row and a `br` start a new line. A table row is one line, its cells joined by " | "; list items are `- ` lines
(`1. ` in ordered lists, nested lists indented); `pre` keeps its own lines and spaces; elsewhere runs of
whitespace are one space, as a browser shows them. Never shown, so never rendered: scripts, styles, the head,
form controls, embedded media, and anything hidden (`hidden`, `display: none`, a closed `dialog`). With
``drop_landmarks`` the page's own navigation is left out too: `nav`, the page's banner `header` (unless it holds
the page's `h1`) and `footer` (not those of an article or section), its sidebar `aside`, and elements whose ARIA
role names such a landmark.
"""

from __future__ import annotations

import re

_DROP = frozenset(
    "script style noscript template head title meta link base svg canvas iframe frame frameset object embed "
    "applet audio video map area select datalist button input textarea".split()
)
_PARAGRAPH = frozenset(
    "p h1 h2 h3 h4 h5 h6 blockquote pre table ul ol dl figure hr address article section main aside header footer "
    "nav form fieldset details center".split()
)
_LINE = frozenset("div li tr dt dd br caption figcaption summary legend body".split())
_LANDMARK_ROLES = frozenset({"navigation", "banner", "contentinfo", "search", "complementary", "menubar"})
_SECTIONING = frozenset({"article", "aside", "main", "nav", "section"})  # a header or footer in these is theirs
_HIDDEN_STYLE = re.compile(r"(?:^|;)\s*(?:display\s*:\s*none|visibility\s*:\s*hidden)\b", re.I)


def render(root, *, drop_landmarks: bool) -> str:
    """The visible text of the tree at ``root`` (an lxml element)."""
    from lxml import etree

    writer = _Writer()
    walk = etree.iterwalk(root, events=("start", "end"))
    skipping = None  # the element whose subtree is being left out
    for event, element in walk:
        if not isinstance(element.tag, str):  # a comment or processing instruction: only its tail is text
            if event == "end":
                writer.text(element.tail)
            continue
        tag = element.tag.lower()
        if event == "start":
            if tag in _DROP or _hidden(element) or (drop_landmarks and _landmark(element, tag)):
                walk.skip_subtree()
                skipping = element
                writer.brk(writer.level(tag))
            else:
                writer.open(element, tag)
        else:
            if element is skipping:
                skipping = None
            else:
                writer.close(tag)
            writer.text(element.tail)
    return writer.result()


def _hidden(element) -> bool:
    hidden = element.get("hidden")
    if hidden is not None and hidden.lower() != "until-found":  # until-found: a collapsed section, found by search
        return True
    if element.tag == "dialog" and element.get("open") is None:
        return True
    style = element.get("style")
    return bool(style) and _HIDDEN_STYLE.search(style) is not None


def _landmark(element, tag: str) -> bool:
    """True for the page's navigation, banner, footer and sidebars (per HTML-AAM: a header or footer in an
    article or section belongs to that, as does an aside in an article, main or section). A banner holding the
    page's `h1` is kept: that heading is the page's title (its `nav`, if any, is still left out)."""
    roles = (element.get("role") or "").lower().split()
    role = roles[0] if roles else ""  # ARIA: the first role listed is the one that counts
    if tag == "nav" or (role in _LANDMARK_ROLES and role != "banner"):
        return True
    if role == "banner" or (tag == "header" and _page_level(element)):
        return next(element.iter("h1"), None) is None
    if tag == "footer":
        return _page_level(element)
    if tag == "aside":
        return not any(ancestor.tag in ("article", "main", "section") for ancestor in element.iterancestors())
    return False


def _page_level(element) -> bool:
    return not any(ancestor.tag in _SECTIONING for ancestor in element.iterancestors())


class _Writer:
    """Text and line breaks in document order; the breaks between two texts are the widest asked for there."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.pending = 0  # newlines due before the next text: 0, 1 (a new line) or 2 (a new paragraph)
        self.space = False  # a space is due before the next text on the same line
        self.pre = 0  # depth in <pre>: whitespace kept
        self.cells = 0  # depth in table cells: breaks become spaces, to keep a row on one line
        self.rows: list[int] = []  # cells so far in each open row
        self.lists: list[int | None] = []  # for each open list: the last number of an <ol>, None for a <ul>

    def brk(self, level: int) -> None:
        if self.cells:
            self.space = self.space or level > 0
        else:
            self.pending = max(self.pending, level)

    def open(self, element, tag: str) -> None:
        if tag == "pre":
            self.pre += 1
        self.brk(self.level(tag))
        if tag == "tr":
            self.rows.append(0)
        elif tag in ("td", "th"):
            if self.rows and self.rows[-1]:
                self.space = False
                self.emit(" | ")
            if self.rows:
                self.rows[-1] += 1
            self.cells += 1
        elif tag in ("ul", "ol"):
            self.lists.append(_start(element) - 1 if tag == "ol" else None)
        elif tag == "li":
            self.emit(self._bullet())
        self.text(element.text)

    def close(self, tag: str) -> None:
        if tag == "pre":
            self.pre = max(0, self.pre - 1)
        elif tag == "tr" and self.rows:
            self.rows.pop()
        elif tag in ("td", "th"):
            self.cells = max(0, self.cells - 1)
        elif tag in ("ul", "ol") and self.lists:
            self.lists.pop()
        if tag != "br":  # <br> breaks where it stands, once
            self.brk(self.level(tag))

    def level(self, tag: str) -> int:
        """The break around ``tag``: a list inside a list item starts a line, not a paragraph."""
        if tag in ("ul", "ol") and self.lists:
            return 1
        return 2 if tag in _PARAGRAPH else 1 if tag in _LINE else 0

    def _bullet(self) -> str:
        indent = "  " * max(0, len(self.lists) - 1)
        if not self.lists or self.lists[-1] is None:
            return indent + "- "
        self.lists[-1] += 1
        return f"{indent}{self.lists[-1]}. "

    def text(self, text: str | None) -> None:
        if not text:
            return
        if self.pre and not self.cells:
            self.emit(text)
            return
        words = " ".join(text.split())
        self.space = self.space or text[0].isspace()
        if words:
            self.emit(words)
            self.space = text[-1].isspace()

    def emit(self, text: str) -> None:
        """Write ``text`` as it is, after the breaks or the space due before it."""
        if self.pending:
            if self.parts:
                self.parts.append("\n" * self.pending)
        elif self.space and self.parts and not self.parts[-1].endswith((" ", "\n")):
            self.parts.append(" ")
        self.pending, self.space = 0, False
        self.parts.append(text)

    def result(self) -> str:
        # rstrip, and a row of empty cells (a layout table's spacer) is no line at all
        lines = [line.rstrip() if line.strip(" |") else "" for line in "".join(self.parts).split("\n")]
        return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n")


def _start(element) -> int:
    try:
        return int(element.get("start") or 1)
    except ValueError:
        return 1
