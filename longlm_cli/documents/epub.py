"""EPUB e-books (EPUB 2 and 3): the text of every chapter in reading (spine) order, titled from the contents.

The package is read with zipfile under the input cap (containers.Package): container.xml names the package
document, whose spine gives the reading order. A spine document listed in the book's table of contents (the EPUB 3
navigation document, else the EPUB 2 NCX) is preceded by a line `[chapter: TITLE]`, as a PDF page is by
`[page N]`; one not listed (a cover, a copyright page) follows without a title, and one with no text (a cover
image) is left out. Chapters are XHTML, rendered by htmlrender.py with everything visible kept: in a book, a
`nav` or an `aside` is content (the printed contents, a footnote). Needs lxml, like HTML; DRM-encrypted books are
refused.
"""

from __future__ import annotations

import posixpath
from urllib.parse import unquote, urlsplit

from ..errors import InputError
from .containers import Package
from .html import decode_html, parse_html, require_lxml
from .htmlrender import render
from .text import is_blank

WHAT = "an EPUB e-book"
CHAPTER = "a document of an EPUB e-book"
CONTAINER = "META-INF/container.xml"
ENCRYPTION = "META-INF/encryption.xml"
CONTAINER_NS = "{urn:oasis:names:tc:opendocument:xmlns:container}"
OPF = "{http://www.idpf.org/2007/opf}"
NCX = "{http://www.daisy.org/z3986/2005/ncx/}"
CIPHER_REFERENCE = "{http://www.w3.org/2001/04/xmlenc#}CipherReference"


def epub_text(data: bytes, *, label: str, max_bytes: int) -> str:
    """The chapters of an EPUB in spine order, each titled when the contents list it; InputError otherwise."""
    require_lxml(label=label, what=WHAT)
    package = Package(data, label=label, what=WHAT, max_bytes=max_bytes)
    opf_path = _package_document(package)
    opf = package.xml(opf_path)
    items = _manifest(opf, opf_path)
    spine = _spine(package, opf, items, opf_path)
    _refuse_drm(package, spine)
    titles = _titles(package, opf, items)
    chapters = []
    for path in spine:
        text = _chapter_text(package, path)
        if not is_blank(text):
            title = titles.get(path)
            chapters.append(f"[chapter: {title}]\n{text}" if title else text)
    if not chapters:
        raise InputError(f"{label} is an EPUB e-book with no text in its chapters")
    return "\n\n".join(chapters)


def _package_document(package: Package) -> str:
    for rootfile in package.xml(CONTAINER).iter(CONTAINER_NS + "rootfile"):
        if rootfile.get("media-type", "application/oebps-package+xml") == "application/oebps-package+xml":
            return _resolve("", rootfile.get("full-path", ""))
    raise package.unreadable(f"{CONTAINER} names no package document")


def _manifest(opf, opf_path: str) -> dict[str, tuple[str, str, str]]:
    """id: (path in the zip, media type, properties) of each manifest item."""
    items = {}
    for item in opf.iter(OPF + "item"):
        href = item.get("href")
        if item.get("id") and href:
            items[item.get("id")] = (_resolve(opf_path, href), item.get("media-type", ""), item.get("properties", ""))
    return items


def _spine(package: Package, opf, items: dict, opf_path: str) -> list[str]:
    """The paths of the spine's (X)HTML documents in reading order (non-linear ones too: they are the book's)."""
    spine = opf.find(OPF + "spine")
    if spine is None:
        raise package.unreadable(f"{opf_path} has no spine (no reading order)")
    paths = []
    for itemref in spine.iter(OPF + "itemref"):
        path, media_type, _ = items.get(itemref.get("idref", ""), ("", "", ""))
        if path and "html" in media_type:
            paths.append(path)
    return paths


def _refuse_drm(package: Package, spine: list[str]) -> None:
    """InputError when the chapters are encrypted (DRM); obfuscated fonts alone are harmless."""
    if ENCRYPTION not in package.names:
        return
    encrypted = {_resolve("", ref.get("URI", "")) for ref in package.xml(ENCRYPTION).iter(CIPHER_REFERENCE)}
    if encrypted & set(spine):
        raise InputError(f"{package.label} is a DRM-protected EPUB e-book (its chapters are encrypted)")


def _titles(package: Package, opf, items: dict) -> dict[str, str]:
    """path: title of the first contents entry that points into that document."""
    nav = next((path for path, _, properties in items.values() if "nav" in properties.split()), None)
    if nav is not None and nav in package.names:
        nav_titles = _nav_titles(package, nav)
        if nav_titles:
            return nav_titles
    spine = opf.find(OPF + "spine")
    ncx = items.get(spine.get("toc", "") if spine is not None else "")
    ncx = ncx or next((item for item in items.values() if item[1] == "application/x-dtbncx+xml"), None)
    if ncx is None or ncx[0] not in package.names:
        return {}
    titles: dict[str, str] = {}
    for point in package.xml(ncx[0]).iter(NCX + "navPoint"):
        text, content = point.find(f"{NCX}navLabel/{NCX}text"), point.find(NCX + "content")
        if text is not None and content is not None and (src := content.get("src")):
            _add_title(titles, _resolve(ncx[0], src), "".join(text.itertext()))
    return titles


def _nav_titles(package: Package, nav: str) -> dict[str, str]:
    """Titles from the EPUB 3 navigation document's `nav epub:type="toc"` (else its first nav)."""
    text, _ = decode_html(package.read(nav), label=f"{package.label} ({nav})")
    root = parse_html(text, label=f"{package.label} ({nav})", what=CHAPTER)
    navs = list(root.iter("nav"))
    toc = next((n for n in navs if "toc" in (n.get("epub:type") or n.get("type") or "").split()), None)
    titles: dict[str, str] = {}
    for link in (toc if toc is not None else navs[0]).iter("a") if navs else ():
        if link.get("href"):
            _add_title(titles, _resolve(nav, link.get("href")), link.text_content())
    return titles


def _add_title(titles: dict[str, str], path: str, title: str) -> None:
    title = " ".join(title.split())
    if path and title and path not in titles:
        titles[path] = title


def _chapter_text(package: Package, path: str) -> str:
    label = f"{package.label} ({path})"
    text, _ = decode_html(package.read(path), label=label)
    return render(parse_html(text, label=label, what=CHAPTER), drop_landmarks=False)


def _resolve(base: str, href: str) -> str:
    """The zip path ``href`` (relative to the member ``base``, URL-escaped) names; "" for another site's URL."""
    parts = urlsplit(href)
    if parts.scheme or parts.netloc:
        return ""
    path = posixpath.normpath(posixpath.join(posixpath.dirname(base), unquote(parts.path)))
    return "" if path in (".", "") or path.startswith("../") else path
