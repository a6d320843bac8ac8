"""Document formats beyond text: HTML (boilerplate dropped), DOCX, ODT and EPUB, PDF page labels, the optional
`formats` extra, and packages that unpack past the input cap."""

import io
import json
import sys
import zipfile
from pathlib import Path

import pytest
from pypdf import PdfWriter

from longlm_cli.documents import read_documents
from longlm_cli.errors import InputError
from longlm_cli.models.tokens import count_tokens

from helpers import run, text_pdf

EXTRA = "pip install 'longlm-cli[formats]'"


def write(tmp_path: Path, name: str, data: bytes | str) -> str:
    path = tmp_path / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return str(path)


def read(tmp_path: Path, name: str, data: bytes | str, **kwargs) -> str:
    return read_documents([write(tmp_path, name, data)], **kwargs).text


def error(tmp_path: Path, name: str, data: bytes | str, **kwargs) -> str:
    with pytest.raises(InputError) as caught:
        read(tmp_path, name, data, **kwargs)
    return str(caught.value)


def package(members: dict[str, str | bytes]) -> bytes:
    """A zip with these members, deflated (a `mimetype` member first and stored, as ODF and EPUB require)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            archive.writestr(name, content, zipfile.ZIP_STORED if name == "mimetype" else zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


# --- HTML ------------------------------------------------------------------------------------------------------

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Site | Story</title>
<style>body { font: 16px serif } .nav a { color: red }</style>
<script>window.dataLayer = [{"event": "page_view", "section": "news"}];</script>
</head><body>
<header class="site"><a href="/">The Site</a>
  <nav><ul><li><a href="/a">World</a></li><li><a href="/b">Sport</a></li></ul></nav></header>
<div role="navigation"><a href="/">Home</a> / <a href="/news">News</a></div>
<main><article>
  <header><h1>The   Story</h1><p>By <a href="/me">A. Writer</a></p></header>
  <p>First paragraph, with <em>inline</em>
     markup and a line<br>break.</p>
  <h2>Details</h2>
  <ul><li>one<ul><li>one and a half</li></ul></li><li>two</li></ul>
  <ol start="3"><li>three</li><li>four</li></ol>
  <table><caption>Costs</caption><tr><th>Item</th><th>Euros</th></tr>
    <tr><td><p>Track</p><p>and wires</p></td> <td>12</td></tr><tr><td></td><td></td></tr></table>
  <pre>  x = 1
    y = 2</pre>
  <p hidden>hidden text</p><p style="display:none">undisplayed text</p>
  <aside>A note inside the article.</aside>
  <footer>Filed under: Cities</footer>
</article></main>
<aside class="sidebar"><h2>Most read</h2><ol><li>Other story</li></ol></aside>
<footer>&copy; 2026 The Site. <a href="/privacy">Privacy</a></footer>
<dialog id="cookies">We use cookies. <button>Accept</button></dialog>
<noscript>Please enable JavaScript.</noscript><script>track();</script>
</body></html>
"""
PAGE_TEXT = """The Story

By A. Writer

First paragraph, with inline markup and a line
break.

Details

- one
  - one and a half
- two

3. three
4. four

Costs
Item | Euros
Track and wires | 12

  x = 1
    y = 2

A note inside the article.

Filed under: Cities"""


def test_html_text_keeps_structure_and_drops_boilerplate(tmp_path):
    document = read_documents([write(tmp_path, "story.html", PAGE)])
    assert document.text == PAGE_TEXT
    assert document.encodings == ("utf-8",)


@pytest.mark.parametrize("name", ["page.htm", "page.xhtml", "page.txt", "noextension"])
def test_html_by_extension_or_by_its_doctype(tmp_path, name):
    assert read(tmp_path, name, PAGE) == PAGE_TEXT


def test_html_on_stdin_and_in_utf16_is_sniffed():
    document = read_documents(["-"], stdin=io.BytesIO(("\ufeff" + PAGE).encode("utf-16-le")))
    assert document.text == PAGE_TEXT
    assert document.encodings == ("utf-16-le",)


@pytest.mark.parametrize(
    "text",
    [
        '<p align="center"><img src="logo.png"></p>\n\n# Project\n\nSome *markdown*.\n',  # a README's banner
        "Compare <html> and <body> tags in this note.\n",
        "<?xml version='1.0'?><feed><title>not a page</title></feed>\n",
    ],
)
def test_text_that_only_contains_tags_stays_text(tmp_path, text):
    assert read(tmp_path, "notes.md", text) == text


def test_xhtml_with_an_xml_declaration_is_html(tmp_path):
    page = '<?xml version="1.0" encoding="utf-8"?>\n<html xmlns="http://www.w3.org/1999/xhtml"><body>'
    page += "<p>One<br/>two</p><div/><p>three&#160;four</p></body></html>"
    assert read(tmp_path, "page.dat", page) == "One\ntwo\n\nthree four"


def test_html_declared_charset_is_used_when_not_utf8(tmp_path):
    """A page labelled iso-8859-1 is windows-1252 (as browsers read it); guessing alone reads it as cp1250 here."""
    page = '<html><head><meta charset="iso-8859-1"></head><body><p>“Año” 20 €</p></body></html>'
    document = read_documents([write(tmp_path, "es.html", page.encode("cp1252"))])
    assert (document.text, document.encodings) == ("“Año” 20 €", ("cp1252",))


@pytest.mark.parametrize(
    "charset",
    ["rot13", "zlib", "base64", "undefined", "hex", "bz2", "uu", "no-such-codec", "utf-7", "unicode_escape", "idna"],
)
def test_a_declared_charset_that_is_no_text_encoding_is_ignored(tmp_path, charset):
    """A <meta charset> naming anything but one of the web's encodings (WHATWG) is not believed: the bytes are
    guessed at. utf-7 and unicode_escape are text codecs to Python, and would turn "+ADw-" or "\\u003c" into "<"."""
    page = f'<html><head><meta charset="{charset}"></head><body><p>“Año” 20 € +ADw- \\u003c</p></body></html>'
    document = read_documents([write(tmp_path, "odd.html", page.encode("cp1252"))])
    assert document.text == "“Año” 20 € +ADw- \\u003c"


def test_a_page_banner_with_the_title_is_kept_without_its_nav(tmp_path):
    page = (
        "<html><body><header><h1>My blog post</h1><nav><a href=/>Home</a></nav></header>"
        "<div role='banner'><a href=/>Logo</a></div><p>Body text.</p><footer>Footer</footer></body></html>"
    )
    assert read(tmp_path, "post.html", page) == "My blog post\n\nBody text."


def test_html_made_only_of_navigation_keeps_it(tmp_path):
    page = "<html><body><nav><ul><li><a href=a>Alpha</a></li><li><a href=b>Beta</a></li></ul></nav></body></html>"
    assert read(tmp_path, "links.html", page) == "- Alpha\n- Beta"


def test_html_without_visible_text(tmp_path):
    page = "<!doctype html><html><head><title>T</title><script>run()</script></head><body> </body></html>"
    path = write(tmp_path, "app.html", page)
    with pytest.raises(InputError) as caught:
        read_documents([path])
    assert str(caught.value) == f"{path} is an HTML page with no visible text (only markup, scripts or styles)"


def test_html_the_parser_cannot_read_to_its_end_is_refused_not_cut(tmp_path):
    page = "<html><body>" + "<div>" * 3000 + "deep" + "</div>" * 3000 + "<p>after</p></body></html>"
    message = error(tmp_path, "deep.html", page)
    assert message.startswith(f"{tmp_path / 'deep.html'} is an HTML page that cannot be read to its end (line 1: ")
    assert "Excessive depth" in message


def test_plan_counts_the_extracted_text_of_a_page(tmp_path):
    bloat = "<script>" + "var config = {'a': [1, 2, 3], 'b': 'xyz'};\n" * 200 + "</script>"
    page = PAGE.replace("</head>", bloat + "</head>")
    path = write(tmp_path, "page.html", page)
    result = run("plan", "--file", path, "-m", "llama2")
    assert result.exit_code == 0, result.output
    extracted = count_tokens(PAGE_TEXT, model="llama2").count
    assert f"Document length N:    {extracted} tokens (estimate)" in result.stdout
    assert count_tokens(page, model="llama2").count > 20 * extracted


# --- the optional formats extra --------------------------------------------------------------------------------


@pytest.fixture
def without_lxml(monkeypatch):
    for module in ("lxml", "lxml.html", "lxml.etree"):
        monkeypatch.setitem(sys.modules, module, None)  # `import lxml...` now raises ImportError


def test_html_without_the_extra_says_which_to_install(tmp_path, without_lxml):
    path = write(tmp_path, "page.html", PAGE)
    result = run("plan", "--file", path, "-m", "llama2")
    assert result.exit_code == 1
    assert (
        result.stderr == f"Error: {path} is an HTML page; reading it needs longlm's optional formats support: {EXTRA}\n"
    )


def test_epub_without_the_extra_says_which_to_install(tmp_path, without_lxml):
    path = write(tmp_path, "book.epub", epub3())
    result = run("plan", "--file", path, "-m", "llama2")
    assert result.exit_code == 1
    assert (
        result.stderr
        == f"Error: {path} is an EPUB e-book; reading it needs longlm's optional formats support: {EXTRA}\n"
    )


def test_docx_and_odt_need_no_extra(tmp_path, without_lxml):
    assert read(tmp_path, "a.docx", docx(DOCX_BODY)).startswith("Annual report")
    assert read(tmp_path, "a.odt", odt(ODT_BODY)).startswith("Minutes")


# --- DOCX ------------------------------------------------------------------------------------------------------

W = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
DOCX_BODY = """
<w:p><w:pPr><w:pStyle w:val="Heading1"/></w:pPr><w:r><w:t>Annual report</w:t></w:r></w:p>
<w:p><w:r><w:t xml:space="preserve">Sales rose </w:t></w:r><w:r><w:rPr><w:b/></w:rPr><w:t>12%</w:t></w:r>
  <w:del><w:r><w:delText>11%</w:delText></w:r></w:del><w:ins><w:r><w:t> this year</w:t></w:r></w:ins>
  <w:r><w:t>.</w:t></w:r><w:r><w:footnoteReference w:id="2"/></w:r></w:p>
<w:p><w:r><w:t>Name:</w:t><w:tab/><w:t>Ada</w:t><w:br/><w:t>Role:</w:t><w:tab/><w:t>CEO</w:t></w:r></w:p>
<w:p><w:hyperlink r:id="rId9"><w:r><w:t>Our website</w:t></w:r></w:hyperlink>
  <w:r><w:fldChar w:fldCharType="begin"/></w:r><w:r><w:instrText> PAGE </w:instrText></w:r>
  <w:r><w:fldChar w:fldCharType="separate"/></w:r><w:r><w:t xml:space="preserve"> page 3</w:t></w:r>
  <w:r><w:fldChar w:fldCharType="end"/></w:r></w:p>
<w:p/>
<w:tbl><w:tblPr/><w:tr><w:tc><w:p><w:r><w:t>Region</w:t></w:r></w:p></w:tc><w:tc><w:p><w:r><w:t>Sales</w:t></w:r></w:p></w:tc></w:tr>
  <w:tr><w:tc><w:p><w:r><w:t>North</w:t></w:r></w:p><w:p><w:r><w:t>and East</w:t></w:r></w:p></w:tc>
  <w:tc><w:p><w:r><w:t>40</w:t></w:r></w:p></w:tc></w:tr>
  <w:tr><w:tc><w:p/></w:tc><w:tc><w:p/></w:tc></w:tr></w:tbl>
<w:sdt><w:sdtPr/><w:sdtContent><w:p><w:r><w:t>Inside a content control.</w:t></w:r></w:p></w:sdtContent></w:sdt>
<w:p><w:r><mc:AlternateContent><mc:Choice Requires="wps"><w:drawing><wps:txbx><w:txbxContent>
  <w:p><w:r><w:t>Text box line</w:t></w:r></w:p></w:txbxContent></wps:txbx></w:drawing></mc:Choice>
  <mc:Fallback><w:pict><w:txbxContent><w:p><w:r><w:t>Text box line</w:t></w:r></w:p></w:txbxContent></w:pict>
  </mc:Fallback></mc:AlternateContent></w:r><w:r><w:t>After the box.</w:t></w:r></w:p>
<w:sectPr/>
"""
DOCX_TEXT = """Annual report

Sales rose 12% this year.[^2]

Name:\tAda
Role:\tCEO

Our website page 3

Region | Sales
North and East | 40

Inside a content control.

Text box line
After the box.

[^2]: Unaudited figures."""
FOOTNOTES = f"""<w:footnotes xmlns:w="{W}">
<w:footnote w:type="separator" w:id="-1"><w:p><w:r><w:separator/></w:r></w:p></w:footnote>
<w:footnote w:id="2"><w:p><w:r><w:footnoteRef/></w:r>
<w:r><w:t xml:space="preserve"> Unaudited figures.</w:t></w:r></w:p></w:footnote></w:footnotes>"""


def docx(body: str, **extra: str) -> bytes:
    namespaces = (
        f'xmlns:w="{W}" xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships" '
        'xmlns:mc="http://schemas.openxmlformats.org/markup-compatibility/2006" '
        'xmlns:wps="http://schemas.microsoft.com/office/word/2010/wordprocessingShape"'
    )
    rels = (
        '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" '
        'Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" '
        'Target="word/document.xml"/></Relationships>'
    )
    return package(
        {
            "[Content_Types].xml": '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"/>',
            "_rels/.rels": rels,
            "word/document.xml": f"<w:document {namespaces}><w:body>{body}</w:body></w:document>",
            **extra,
        }
    )


def test_docx_text(tmp_path):
    document = read_documents([write(tmp_path, "report.docx", docx(DOCX_BODY, **{"word/footnotes.xml": FOOTNOTES}))])
    assert document.text == DOCX_TEXT
    assert document.encodings == (None,)


def test_docx_is_recognised_by_its_parts_not_its_name(tmp_path):
    assert read(tmp_path, "report.bin", docx(DOCX_BODY)).startswith("Annual report\n\nSales rose")


def test_docx_that_is_damaged(tmp_path):
    path = str(tmp_path / "broken.docx")
    assert error(tmp_path, "broken.docx", b"PK\x03\x04 not a zip") == (
        f"{path} is a Word document (DOCX) that cannot be read (it may be corrupt): File is not a zip file"
    )
    assert error(tmp_path, "broken.docx", package({"[Content_Types].xml": "<Types/>", "word/x.xml": "<x/>"})) == (
        f"{path} is a Word document (DOCX) that cannot be read (it may be corrupt): it has no word/document.xml"
    )


# --- ODT -------------------------------------------------------------------------------------------------------

ODT_NAMESPACES = " ".join(
    f'xmlns:{prefix}="urn:oasis:names:tc:opendocument:xmlns:{name}:1.0"'
    for prefix, name in [("office", "office"), ("text", "text"), ("table", "table"), ("draw", "drawing")]
)
ODT_BODY = """
<text:sequence-decls><text:sequence-decl text:name="Table"/></text:sequence-decls>
<text:tracked-changes><text:changed-region><text:deletion><text:p>deleted words</text:p></text:deletion>
</text:changed-region></text:tracked-changes>
<text:h text:outline-level="1">Minutes</text:h>
<text:p>Present:<text:s text:c="3"/>Ada,<text:tab/>Grace<text:line-break/>and <text:span>Alan</text:span>.</text:p>
<text:p>Budget agreed<office:annotation><text:p>check this</text:p></office:annotation>.<text:note text:id="n1"
  text:note-class="footnote"><text:note-citation>1</text:note-citation><text:note-body><text:p>By a vote of
  5 to 2.</text:p></text:note-body></text:note></text:p>
<text:list><text:list-item><text:p>First item</text:p><text:list><text:list-item><text:p>Sub item</text:p>
  </text:list-item></text:list></text:list-item><text:list-item><text:p>Second item</text:p></text:list-item>
</text:list>
<text:section text:name="S1"><table:table table:name="T"><table:table-column table:number-columns-repeated="2"/>
  <table:table-header-rows><table:table-row><table:table-cell><text:p>Task</text:p></table:table-cell>
  <table:table-cell><text:p>Owner</text:p></table:table-cell></table:table-row></table:table-header-rows>
  <table:table-row><table:table-cell table:number-columns-spanned="2"><text:p>Review</text:p><text:p>all</text:p>
  </table:table-cell><table:covered-table-cell/></table:table-row></table:table></text:section>
<text:p/>
"""
ODT_TEXT = """Minutes

Present:   Ada,\tGrace
and Alan.

Budget agreed.[^1]

- First item
  - Sub item
- Second item

Task | Owner
Review all

[^1]: By a vote of 5 to 2."""


def odt(body: str) -> bytes:
    content = f"<office:document-content {ODT_NAMESPACES}><office:body><office:text>{body}"
    content += "</office:text></office:body></office:document-content>"
    return package({"mimetype": "application/vnd.oasis.opendocument.text", "content.xml": content})


def test_odt_text(tmp_path):
    document = read_documents([write(tmp_path, "minutes.odt", odt(ODT_BODY))])
    assert (document.text, document.encodings) == (ODT_TEXT, (None,))


# --- EPUB ------------------------------------------------------------------------------------------------------

CONTAINER = """<?xml version="1.0"?><container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container">
<rootfiles><rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/></rootfiles>
</container>"""


def xhtml(body: str, doctype: str = "<!DOCTYPE html>") -> str:
    return (
        f'<?xml version="1.0" encoding="utf-8"?>\n{doctype}\n<html xmlns="http://www.w3.org/1999/xhtml" '
        f'xmlns:epub="http://www.idpf.org/2007/ops"><head><title>Book</title><link rel="stylesheet" href="s.css"/>'
        f"</head><body>{body}</body></html>"
    )


def opf(manifest: str, spine: str, toc: str = "") -> str:
    return (
        '<?xml version="1.0"?><package xmlns="http://www.idpf.org/2007/opf" version="3.0"><metadata/>'
        f"<manifest>{manifest}</manifest><spine{toc}>{spine}</spine></package>"
    )


CHAPTER_1 = xhtml(
    '<section epub:type="chapter"><h1>Chapter One</h1><p>It was a bright cold day.</p>'
    '<p>The clocks<a epub:type="noteref" href="#n1">1</a> were striking.</p>'
    '<aside epub:type="footnote" id="n1"><p>Thirteen, in fact.</p></aside></section>'
)
CHAPTER_2 = xhtml("<h1>Chapter Two</h1><p>Winston made for the stairs.</p><p><a id='x'/>He rested.</p>")
NAV = xhtml(
    '<nav epub:type="toc"><h2>Contents</h2><ol><li><a href="text/ch1.xhtml">Chapter One: The Day</a></li>'
    '<li><a href="text/ch2.xhtml#start">Chapter Two</a></li></ol></nav>'
)


def epub3(**extra: str | bytes) -> bytes:
    manifest = (  # listed out of reading order: the spine decides
        '<item id="c2" href="text/ch2.xhtml" media-type="application/xhtml+xml"/>'
        '<item id="c1" href="text/ch1.xhtml" media-type="application/xhtml+xml"/>'
        '<item id="cover" href="cover.xhtml" media-type="application/xhtml+xml"/>'
        '<item id="nav" href="nav.xhtml" media-type="application/xhtml+xml" properties="nav"/>'
        '<item id="css" href="s.css" media-type="text/css"/><item id="img" href="c.jpg" media-type="image/jpeg"/>'
    )
    spine = '<itemref idref="cover"/><itemref idref="c1"/><itemref idref="c2"/>'
    return package(
        {
            "mimetype": "application/epub+zip",
            "META-INF/container.xml": CONTAINER,
            "OEBPS/content.opf": opf(manifest, spine),
            "OEBPS/nav.xhtml": NAV,
            "OEBPS/cover.xhtml": xhtml('<div><img src="c.jpg" alt="Cover"/></div>'),
            "OEBPS/text/ch1.xhtml": CHAPTER_1,
            "OEBPS/text/ch2.xhtml": CHAPTER_2,
            "OEBPS/s.css": "p { margin: 0 }",
            **extra,
        }
    )


EPUB_TEXT = """[chapter: Chapter One: The Day]
Chapter One

It was a bright cold day.

The clocks1 were striking.

Thirteen, in fact.

[chapter: Chapter Two]
Chapter Two

Winston made for the stairs.

He rested."""


def test_epub3_chapters_in_spine_order_with_titles_from_the_nav(tmp_path):
    document = read_documents([write(tmp_path, "book.epub", epub3())])
    assert (document.text, document.encodings) == (EPUB_TEXT, (None,))


def test_epub2_titles_from_the_ncx_and_html_entities(tmp_path):
    ncx = (
        '<?xml version="1.0"?><!DOCTYPE ncx PUBLIC "-//NISO//DTD ncx 2005-1//EN" '
        '"http://www.daisy.org/z3986/2005/ncx-2005-1.dtd"><ncx xmlns="http://www.daisy.org/z3986/2005/ncx/">'
        '<navMap><navPoint id="p1"><navLabel><text>I. Down the Rabbit-Hole</text></navLabel>'
        '<content src="ch%201.html"/></navPoint></navMap></ncx>'
    )
    doctype = '<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.1//EN" "http://www.w3.org/TR/xhtml11/DTD/xhtml11.dtd">'
    chapter = xhtml("<p>Alice&nbsp;was beginning to get very tired&hellip;</p>", doctype)
    book = package(
        {
            "mimetype": "application/epub+zip",
            "META-INF/container.xml": CONTAINER,
            "OEBPS/content.opf": opf(
                '<item id="ncx" href="toc.ncx" media-type="application/x-dtbncx+xml"/>'
                '<item id="c1" href="ch%201.html" media-type="application/xhtml+xml"/>',
                '<itemref idref="c1"/>',
                ' toc="ncx"',
            ),
            "OEBPS/toc.ncx": ncx,
            "OEBPS/ch 1.html": chapter,
        }
    )
    assert read(tmp_path, "alice.epub", book) == (
        "[chapter: I. Down the Rabbit-Hole]\nAlice was beginning to get very tired\u2026"
    )


def test_epub_with_encrypted_chapters_is_refused(tmp_path):
    encryption = (
        '<encryption xmlns="urn:oasis:names:tc:opendocument:xmlns:container" '
        'xmlns:enc="http://www.w3.org/2001/04/xmlenc#"><enc:EncryptedData><enc:CipherData>'
        '<enc:CipherReference URI="OEBPS/text/ch1.xhtml"/></enc:CipherData></enc:EncryptedData></encryption>'
    )
    path = str(tmp_path / "drm.epub")
    assert error(tmp_path, "drm.epub", epub3(**{"META-INF/encryption.xml": encryption})) == (
        f"{path} is a DRM-protected EPUB e-book (its chapters are encrypted)"
    )


# --- packages past the input cap ---------------------------------------------------------------------------------


def test_a_package_that_unpacks_past_the_cap_is_refused(tmp_path):
    bomb = docx("<w:p><w:r><w:t>" + "la " * 1_400_000 + "</w:t></w:r></w:p>")
    assert len(bomb) < 20_000  # the file itself is far under the cap
    path = str(tmp_path / "bomb.docx")
    assert error(tmp_path, "bomb.docx", bomb, max_bytes=1 << 20) == (
        f"{path} unpacks to more than the input limit of 1 MiB; set LONGLM_MAX_INPUT_BYTES to a larger number of "
        "bytes to read it"
    )
    assert read(tmp_path, "bomb.docx", bomb, max_bytes=8 << 20) == ("la " * 1_400_000).strip()  # under a larger cap


def test_a_package_is_refused_through_the_environment_cap(tmp_path, monkeypatch):
    monkeypatch.setenv("LONGLM_MAX_INPUT_BYTES", str(1 << 20))
    path = write(tmp_path, "big.epub", epub3(**{"OEBPS/text/ch2.xhtml": xhtml("<p>" + "a " * 1_000_000 + "</p>")}))
    result = run("plan", "--file", path, "-m", "llama2")
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: {path} unpacks to more than the input limit of 1 MiB; set LONGLM_MAX_INPUT_BYTES to a larger "
        "number of bytes to read it\n"
    )


def test_xml_entity_declarations_are_refused(tmp_path):
    laughs = '<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;">]>'
    data = package({"mimetype": "application/vnd.oasis.opendocument.text", "content.xml": laughs + "<d>&b;</d>"})
    assert error(tmp_path, "laughs.odt", data) == (
        f"{tmp_path / 'laughs.odt'} is an OpenDocument text (ODT) that cannot be read (it may be corrupt): "
        "content.xml declares XML entities, which longlm refuses (they can expand unboundedly)"
    )


def test_pdf_text_past_the_cap_is_refused(tmp_path):
    writer = PdfWriter(clone_from=io.BytesIO(text_pdf(["word " * 40_000])))
    for page in writer.pages:
        page.compress_content_streams()
    buffer = io.BytesIO()
    writer.write(buffer)
    assert len(buffer.getvalue()) < 100_000
    message = error(tmp_path, "dense.pdf", buffer.getvalue(), max_bytes=100_000)
    assert message == (
        f"{tmp_path / 'dense.pdf'} holds text larger than the input limit of 100,000 bytes; set "
        "LONGLM_MAX_INPUT_BYTES to a larger number of bytes to read it"
    )


# --- PDF page labels ---------------------------------------------------------------------------------------------


def labelled_pdf(pages: list[str], ranges: list[tuple[int, int, dict]]) -> bytes:
    writer = PdfWriter(clone_from=io.BytesIO(text_pdf(pages)))
    for first, last, label in ranges:
        writer.set_page_label(first, last, **label)
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def test_pdf_page_markers_use_the_printed_page_labels(tmp_path):
    data = labelled_pdf(
        ["Preface", "Thanks", "Intro", "Results", "Appendix"],
        [(0, 1, {"style": "/r", "start": 3}), (2, 3, {"style": "/D"}), (4, 4, {"style": "/A", "prefix": "App. "})],
    )
    assert read(tmp_path, "book.pdf", data) == (
        "[page iii]\nPreface\n\n[page iv]\nThanks\n\n[page 1]\nIntro\n\n[page 2]\nResults\n\n[page App. A]\nAppendix"
    )


def test_pdf_labels_that_repeat_name_the_file_page_too(tmp_path):
    data = labelled_pdf(["Part one", "Part two"], [(0, 0, {"style": "/D"}), (1, 1, {"style": "/D"})])
    assert read(tmp_path, "parts.pdf", data) == ("[page 1 (file page 1)]\nPart one\n\n[page 1 (file page 2)]\nPart two")


def test_pdf_without_labels_numbers_pages_from_one(tmp_path):
    assert read(tmp_path, "plain.pdf", text_pdf(["a", "b"])) == "[page 1]\na\n\n[page 2]\nb"


@pytest.mark.parametrize("kind", ["docx", "odt"])
def test_xml_nested_deeper_than_the_limit_is_one_error_and_a_batch_goes_on(tmp_path, kind, tiny_dir):
    """A 1 kB file nesting 500 levels deep is refused in one line (no RecursionError); with --each the other
    files are still read."""
    from longlm_cli.documents.containers import MAX_XML_DEPTH

    if kind == "docx":
        deep, member = (
            docx("<w:p><w:r>" + "<w:ins>" * 500 + "<w:t>x</w:t>" + "</w:ins>" * 500 + "</w:r></w:p>"),
            "word/document.xml",
        )
        fine = docx("<w:p><w:r>" + "<w:ins>" * 30 + "<w:t>fine</w:t>" + "</w:ins>" * 30 + "</w:r></w:p>")
        what = "a Word document (DOCX)"
    else:
        deep, member = odt("<text:p>" + "<text:span>" * 500 + "x" + "</text:span>" * 500 + "</text:p>"), "content.xml"
        fine = odt("<text:p>" + "<text:span>" * 30 + "fine" + "</text:span>" * 30 + "</text:p>")
        what = "an OpenDocument text (ODT)"
    assert len(deep) < 2000
    path = tmp_path / f"deep.{kind}"
    assert error(tmp_path, path.name, deep) == (
        f"{path} is {what} that cannot be read (it may be corrupt): {member} nests its XML more than "
        f"{MAX_XML_DEPTH} levels deep"
    )
    assert "fine" in read(tmp_path, f"fine.{kind}", fine)
    other = write(tmp_path, "other.txt", "The keeper counted the ships.")
    result = run("ask", path, other, "Who?", "--each", "--json", "--model", tiny_dir, "--max-new-tokens", 2)
    assert result.stderr.count("nests its XML more than") == 1 and "Traceback" not in result.output
    assert [json.loads(line).get("error") is None for line in result.stdout.splitlines()] == [False, True]
