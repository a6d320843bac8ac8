"""HTML pages (and XHTML): recognising them, decoding them, and their visible text.

An input is HTML when its name ends in .html, .htm or .xhtml, or when it clearly is an HTML document whatever its
name: it begins (after a BOM, an XML declaration and comments) with `<!DOCTYPE html` or `<html`. A fragment that
merely starts with a tag (a README opening with `<p align="center">`) stays text. The bytes are decoded like any
text, except that a `<meta charset>` declaration is believed when the bytes are not UTF-8. The page is parsed with
lxml (libxml2's HTML parser; the optional `formats` extra) and rendered to text by htmlrender.py; a page the
parser could not read to its end (a resource limit) is refused rather than silently cut.
"""

from __future__ import annotations

import codecs
import re

from ..errors import InputError
from .htmlrender import render
from .text import decode_text, is_blank

EXTENSIONS = (".html", ".htm", ".xhtml")
WHAT = "an HTML page"
EXTRA = "pip install 'longlm-cli[formats]'"
SNIFF_BYTES = 2048  # where the doctype or <html> of a page must begin
_HTML_START = re.compile(r"\s*(?:<\?xml[^>]*>\s*)?(?:<!--.*?-->\s*)*<(?:!doctype\s+html|html)[\s>]", re.I | re.S)
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([a-z0-9_:.-]+)""", re.I)
# WHATWG: these labels mean windows-1252, which is what pages labelled so are really written in.
_AS_CP1252 = {"iso-8859-1", "iso8859-1", "latin1", "latin-1", "l1", "us-ascii", "ascii", "iso-ir-100"}
_BOMS = (codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
# The WHATWG Encoding Standard's single- and multi-byte encodings, as Python's codecs name them: the only ones a
# declared charset may choose. Labels Python does not know by the standard's name are mapped first.
_WHATWG_CODECS = frozenset(
    ["utf-8", "cp866", "koi8-r", "koi8-u", "mac-roman", "mac-cyrillic", "cp874", "gbk", "gb18030", "big5"]
    + [f"iso8859-{n}" for n in (2, 3, 4, 5, 6, 7, 8, 10, 13, 14, 15, 16)]
    + [f"cp{n}" for n in range(1250, 1259)]
    + ["euc_jp", "iso2022_jp", "shift_jis", "euc_kr"]
)
_WHATWG_LABELS = {"windows-874": "cp874", "x-mac-cyrillic": "mac-cyrillic", "gb2312": "gbk", "x-gbk": "gbk"}


def is_html_name(name: str) -> bool:
    return name.lower().endswith(EXTENSIONS)


def looks_like_html(head: str) -> bool:
    """True when ``head`` (the start of a text) is clearly an HTML document: a doctype or an <html> start tag."""
    return _HTML_START.match(head[:SNIFF_BYTES].removeprefix("\ufeff")) is not None  # slice first: no copy


def sniff_html_bytes(data: bytes) -> bool:
    """looks_like_html on the start of undecoded bytes in an ASCII-compatible encoding (UTF-8, cp1252, ...)."""
    return looks_like_html(data[:SNIFF_BYTES].removeprefix(codecs.BOM_UTF8).decode("latin-1"))


def decode_html(data: bytes, *, label: str) -> tuple[str, str]:
    """(text, encoding) of HTML bytes: as decode_text, except that bytes that are not UTF-8 (and have no BOM) are
    decoded in the page's declared `<meta charset>` when it fits them."""
    declared = _declared_codec(data)
    if declared and not data.startswith(_BOMS) and not _is_utf8(data):
        try:
            text = data.decode(declared)
        except (UnicodeError, LookupError):
            pass  # the declaration is wrong: guess as for any text
        else:
            return text.replace("\r\n", "\n").replace("\r", "\n"), declared
    return decode_text(data, label=label)


def html_page_text(text: str, *, label: str) -> str:
    """The visible text of an HTML page without its navigation, banner, footer and sidebars (the page's text with
    them when nothing else is left); InputError when there is no visible text or lxml is missing."""
    root = parse_html(text, label=label, what=WHAT)
    result = render(root, drop_landmarks=True)
    if is_blank(result):
        result = render(root, drop_landmarks=False)
    if is_blank(result):
        raise InputError(f"{label} is an HTML page with no visible text (only markup, scripts or styles)")
    return result


def parse_html(text: str, *, label: str, what: str):
    """The lxml tree of an HTML or XHTML text; InputError when lxml is missing or the parser gave up."""
    lxml_html, etree = require_lxml(label=label, what=what)
    # Given as UTF-8 bytes with the encoding named, so libxml2 neither guesses nor trusts a stale <meta charset>;
    # huge_tree lifts libxml2's limits on text size (the input cap bounds the size already).
    parser = lxml_html.HTMLParser(encoding="utf-8", huge_tree=True, remove_comments=True, remove_pis=True)
    try:
        root = lxml_html.document_fromstring(text.encode("utf-8", "replace"), parser=parser)
    except etree.ParserError:  # "Document is empty": nothing but whitespace or comments
        return lxml_html.fromstring("<html></html>", parser=parser)
    except (etree.LxmlError, ValueError) as exc:
        raise InputError(f"{label} is {what} that cannot be parsed: {' '.join(str(exc).split())}") from None
    fatal = [error for error in parser.error_log if error.level_name == "FATAL"]
    if fatal:  # libxml2 stopped early (e.g. nested over 2048 elements deep): its tree lacks the rest
        reason = " ".join(fatal[0].message.split())
        raise InputError(f"{label} is {what} that cannot be read to its end (line {fatal[0].line}: {reason})")
    return root


def require_lxml(*, label: str, what: str):
    """(lxml.html, lxml.etree); InputError with the extra to install when lxml is not installed."""
    try:
        import lxml.etree as etree
        import lxml.html as lxml_html
    except ImportError:
        raise InputError(f"{label} is {what}; reading it needs longlm's optional formats support: {EXTRA}") from None
    return lxml_html, etree


def _declared_codec(data: bytes) -> str | None:
    match = _META_CHARSET.search(data[:SNIFF_BYTES])
    if match is None:
        return None
    name = match.group(1).decode("ascii").lower()
    if name in _AS_CP1252:
        return "cp1252"
    try:
        info = codecs.lookup(_WHATWG_LABELS.get(name, name))
    except LookupError:
        return None
    # Only an encoding of the web's: Python's codec registry also names transforms (rot13, base64, zlib),
    # "undefined", and text codecs no page is written in (utf-7, unicode_escape, idna); a page declaring one is
    # guessed at like any text. UTF-16 and UTF-32 are not in the list: a <meta> is not read from them.
    return info.name if info.name in _WHATWG_CODECS else None


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
