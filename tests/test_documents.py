"""Reading documents: PDFs with page markers, text files, stdin, and every way an input can be unusable."""

import gzip
import io
import os
import random
import socket
import threading
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from pypdf import PdfWriter

from longlm_cli.cli import cli
from longlm_cli.documents import Document, read_documents
from longlm_cli.errors import InputError

from helpers import CORPUS, blank_pdf, run, text_pdf


def write(tmp_path: Path, name: str, data: bytes | str) -> str:
    path = tmp_path / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return str(path)


def plan_error(path: str) -> str:
    """Run `longlm plan --file PATH`, expect failure, and return stderr."""
    result = CliRunner().invoke(cli, ["plan", "--model", "llama2", "--file", path])
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    return result.stderr


# --- text inputs -----------------------------------------------------------------------------------------------


def test_single_text_file_has_no_header(tmp_path):
    path = write(tmp_path, "notes.md", "# Title\r\n\r\nSome text.\n")
    assert read_documents([path]) == Document(text="# Title\n\nSome text.\n", sources=(path,), encodings=("utf-8",))


def test_any_utf8_file_is_text_and_bom_is_dropped(tmp_path):
    path = write(tmp_path, "data.csv", "\ufeffa,b\n1,2\n")
    assert read_documents([path]).text == "a,b\n1,2\n"


def test_several_inputs_are_joined_with_headers(tmp_path):
    first = write(tmp_path, "a.txt", "alpha")
    second = write(tmp_path, "b.pdf", text_pdf(["beta"]))
    document = read_documents([first, second])
    assert document.text == f"### {first}\n\nalpha\n\n### {second}\n\n[page 1]\nbeta"
    assert document.sources == (first, second)
    assert document.encodings == ("utf-8", None)


def test_stdin_dash(tmp_path):
    document = read_documents(["-"], stdin=io.BytesIO("héllo from stdin\n".encode()))
    assert document == Document(text="héllo from stdin\n", sources=("<stdin>",), encodings=("utf-8",))


def test_stdin_can_be_a_pdf():
    document = read_documents(["-"], stdin=io.BytesIO(text_pdf(["piped"])))
    assert document.text == "[page 1]\npiped"


def test_stdin_and_file_joined(tmp_path):
    path = write(tmp_path, "a.txt", "file text")
    document = read_documents([path, "-"], stdin=io.BytesIO(b"stdin text"))
    assert document.text == f"### {path}\n\nfile text\n\n### <stdin>\n\nstdin text"


def test_stdin_through_the_cli():
    result = CliRunner().invoke(cli, ["plan", "--model", "llama2", "--file", "-", "--json"], input="one two three")
    assert result.exit_code == 0, result.output
    assert '"sources": [\n    "<stdin>"\n  ]' in result.stdout


def test_long_text_is_never_truncated(tmp_path):
    text = "word " * 200_000
    assert read_documents([write(tmp_path, "long.txt", text)]).text == text


# --- PDFs ------------------------------------------------------------------------------------------------------


def test_pdf_with_text_keeps_page_markers(tmp_path):
    path = write(tmp_path, "report.pdf", text_pdf(["First page (intro)", "Second page"]))
    assert read_documents([path]).text == "[page 1]\nFirst page (intro)\n\n[page 2]\nSecond page"


def test_pdf_with_one_blank_page_keeps_numbering(tmp_path):
    # a page without text still gets its marker, so later page numbers stay right
    pdf = text_pdf(["one", " ", "three"])
    assert read_documents([write(tmp_path, "gap.pdf", pdf)]).text == "[page 1]\none\n\n[page 2]\n\n\n[page 3]\nthree"


def test_pdf_encrypted_with_empty_user_password_is_read(tmp_path):
    writer = PdfWriter(clone_from=io.BytesIO(text_pdf(["secret-free"])))
    writer.encrypt(user_password="", owner_password="owner")
    buffer = io.BytesIO()
    writer.write(buffer)
    assert read_documents([write(tmp_path, "open.pdf", buffer.getvalue())]).text == "[page 1]\nsecret-free"


def test_encrypted_pdf(tmp_path):
    path = write(tmp_path, "locked.pdf", blank_pdf(password="pw"))
    assert plan_error(path) == (
        f"Error: {path} is an encrypted (password-protected) PDF; "
        "decrypt it first (e.g. `qpdf --password=... --decrypt in.pdf out.pdf`)\n"
    )


def test_image_only_pdf(tmp_path):
    path = write(tmp_path, "scan.pdf", blank_pdf())
    assert plan_error(path) == (
        f"Error: {path} has no extractable text; it may be a scanned image. "
        "Run OCR first (e.g. `ocrmypdf in.pdf out.pdf`) and give the result\n"
    )


def test_corrupt_pdf(tmp_path):
    path = write(tmp_path, "broken.pdf", b"%PDF-1.4\nthis is not really a pdf\n")
    stderr = plan_error(path)
    assert stderr.startswith(f"Error: {path} is not a readable PDF (it may be corrupt): ")
    assert stderr.count("\n") == 1


# --- unusable inputs -------------------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    path = str(tmp_path / "nope.txt")
    assert plan_error(path) == f"Error: {path} does not exist\n"


def test_directory(tmp_path):
    assert plan_error(str(tmp_path)) == f"Error: {tmp_path} is a directory; give the files inside it instead\n"


@pytest.mark.parametrize(
    "content",
    [
        "",
        "  \n\t\n",
        "\ufeff",
        bytes(c for c in range(1, 32) if c not in b"\t\n\v\f\r ") * 20,  # only control characters
        "\u200b\x7f\u00ad \x1b\n",  # zero-width space, DEL, soft hyphen, ESC
        # Mongolian vowel separator, bidi controls, CGJ, a variation selector, a tag, Hangul fillers, word joiner
        "\u180e\u202e\u2066\u034f\ufe0f\U000e0041\u3164\u115f\uffa0\u2060" * 200,
        " \n".encode("utf-16"),
    ],
)
def test_empty_file(tmp_path, content):
    path = write(tmp_path, "empty.txt", content)
    assert plan_error(path) == f"Error: {path} is empty (no text, or only whitespace)\n"


def test_empty_stdin():
    with pytest.raises(InputError, match=r"^<stdin> is empty"):
        read_documents(["-"], stdin=io.BytesIO(b""))


def test_binary_file_with_nul_bytes(tmp_path):
    path = write(tmp_path, "image.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    assert plan_error(path) == (f"Error: {path} is a binary file (it contains NUL bytes); give a PDF or a text file\n")


def test_unreadable_file(tmp_path, monkeypatch):
    path = write(tmp_path, "secret.txt", "hidden")

    original = Path.open

    def refuse(self, *args, **kwargs):
        if str(self) == path:
            raise PermissionError(13, "Permission denied", str(self))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", refuse)  # chmod 000 does not stop root, so simulate it
    assert plan_error(path) == f"Error: {path} cannot be read: permission denied\n"


def test_no_inputs():
    with pytest.raises(InputError, match="no document given"):
        read_documents([])


def test_stdin_only_once():
    with pytest.raises(InputError, match=r"stdin \('-'\) can be read only once"):
        read_documents(["-", "-"], stdin=io.BytesIO(b"x"))


# --- text in other encodings ----------------------------------------------------------------------------------

GERMAN = "Größe und Übermaß, schön ärgerlich. Straße."
RUSSIAN = "Привет, как дела? Это тест русского текста в кодировке."


@pytest.mark.parametrize(
    "data, text, encoding",
    [
        (CORPUS.encode("utf-16"), CORPUS, "utf-16-le"),  # with a BOM
        (b"\xfe\xff" + CORPUS.encode("utf-16-be"), CORPUS, "utf-16-be"),
        (CORPUS.encode("utf-32"), CORPUS, "utf-32-le"),
        (CORPUS.encode("utf-16-le"), CORPUS, "utf-16-le"),  # no BOM: told by where the NUL bytes fall
        (CORPUS.encode("utf-32-be"), CORPUS, "utf-32-be"),
        (("Café crème. " + CORPUS).encode("latin-1"), "Café crème. " + CORPUS, "cp1252"),
        (("\u201cquoted\u201d " + CORPUS).encode("cp1252"), "\u201cquoted\u201d " + CORPUS, "cp1252"),
        (GERMAN.encode("latin-1"), GERMAN, "cp1252"),  # charset-normalizer alone says mac_turkish
        ("café".encode("latin-1"), "café", "cp1252"),  # ... and here UTF-16-BE
        (RUSSIAN.encode("cp1251"), RUSSIAN, "cp1251"),
        ("line one\r\nline two".encode("utf-16"), "line one\nline two", "utf-16-le"),
        ("Привет мир".encode()[:-1], "Привет ми", "utf-8"),  # UTF-8 cut inside its last character
    ],
)
def test_text_in_other_encodings_is_read_and_the_encoding_named(tmp_path, data, text, encoding):
    document = read_documents([write(tmp_path, "doc.txt", data)])
    assert (document.text, document.encodings) == (text, (encoding,))


def test_stdin_in_utf16_is_read():
    document = read_documents(["-"], stdin=io.BytesIO("piped text".encode("utf-16")))
    assert (document.text, document.encodings) == ("piped text", ("utf-16-le",))


def test_nul_bytes_in_8bit_text_are_binary(tmp_path):
    path = write(tmp_path, "doc.txt", CORPUS.encode() + b"\0tail")  # a stray NUL is no UTF-16 pattern
    assert plan_error(path) == f"Error: {path} is a binary file (it contains NUL bytes); give a PDF or a text file\n"


def test_data_no_encoding_fits_is_binary(tmp_path):
    path = write(tmp_path, "noise.txt", bytes(b for b in random.Random(1).randbytes(5000) if b))
    assert plan_error(path) == f"Error: {path} is a binary file (no text encoding fits it); give a PDF or a text file\n"


def test_broken_utf16_after_its_bom(tmp_path):
    path = write(tmp_path, "odd.txt", b"\xff\xfea\x00b")
    assert plan_error(path) == (
        f"Error: {path} is not valid UTF-16-LE text, though it starts with a UTF-16-LE byte-order mark "
        "(invalid data at byte 2); convert it to UTF-8\n"
    )


def zip_bytes(members: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in members.items():
            archive.writestr(name, text)
    return buffer.getvalue()


READS = "longlm reads PDF, HTML, DOCX, ODT, EPUB and text files"
SAVE = f"{READS}: save it as PDF or text"
XLSX = {"[Content_Types].xml": "<Types/>", "xl/workbook.xml": "<w/>"}


@pytest.mark.parametrize(
    "name, data, message",
    [
        ("sheet.bin", zip_bytes(XLSX), f"an Excel workbook (XLSX); {SAVE}"),  # the zip's parts, not the name
        (
            "sheet.odt",  # the mimetype member, not the name
            zip_bytes({"mimetype": "application/vnd.oasis.opendocument.spreadsheet"}),
            f"an OpenDocument spreadsheet (ODS); {SAVE}",
        ),
        ("damaged.pptx", b"PK\x03\x04 not really a zip", f"a PowerPoint presentation (PPTX); {SAVE}"),
        ("files.zip", zip_bytes({"a.txt": "alpha"}), f"a zip archive; {READS}: extract it and give the files inside"),
        ("notes.txt.gz", gzip.compress(CORPUS.encode()), f"gzip-compressed; {READS}: decompress it first (gunzip)"),
    ],
)
def test_containers_and_compressed_files_are_named(tmp_path, name, data, message):
    """Containers longlm does not read are named (DOCX, ODT and EPUB are read: tests/test_formats.py)."""
    path = write(tmp_path, name, data)
    assert plan_error(path) == f"Error: {path} is {message}\n"


def test_text_named_docx_is_text(tmp_path):
    assert read_documents([write(tmp_path, "notes.docx", "plain words")]).text == "plain words"


# --- the size cap ---------------------------------------------------------------------------------------------


def test_input_over_the_cap_is_refused_and_at_the_cap_is_read(tmp_path):
    path = write(tmp_path, "doc.txt", "x" * 11)
    assert read_documents([path], max_bytes=11).text == "x" * 11
    with pytest.raises(InputError) as error:
        read_documents([path], max_bytes=10)
    assert str(error.value) == (
        f"{path} is larger than the input limit of 10 bytes; set LONGLM_MAX_INPUT_BYTES to a larger number of bytes "
        "to read it"
    )


class Endless(io.RawIOBase):
    """An endless stream of b"a" that counts what was read from it."""

    def __init__(self):
        self.served = 0

    def readable(self):
        return True

    def readinto(self, buffer):
        buffer[:] = b"a" * len(buffer)
        self.served += len(buffer)
        return len(buffer)


def test_an_endless_stream_stops_one_byte_past_the_cap():
    stream = Endless()
    with pytest.raises(InputError, match=r"^<stdin> is larger than the input limit of 3 MiB; "):
        read_documents(["-"], stdin=stream, max_bytes=3 * 1024**2)
    assert stream.served == 3 * 1024**2 + 1


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero")
def test_dev_zero_stops_at_the_limit_from_the_environment(monkeypatch):
    monkeypatch.setenv("LONGLM_MAX_INPUT_BYTES", str(2 * 1024**2))
    assert plan_error("/dev/zero") == (
        "Error: /dev/zero is larger than the input limit of 2 MiB; set LONGLM_MAX_INPUT_BYTES to a larger number "
        "of bytes to read it\n"
    )


@pytest.mark.parametrize(
    "value, message", [("lots", "is not a whole number of bytes"), ("0", "must be at least 1 (byte)")]
)
def test_bad_max_input_bytes(tmp_path, monkeypatch, value, message):
    monkeypatch.setenv("LONGLM_MAX_INPUT_BYTES", value)
    assert plan_error(write(tmp_path, "a.txt", "alpha")) == f"Error: LONGLM_MAX_INPUT_BYTES={value!r} {message}\n"


# --- paths that are not plain files ---------------------------------------------------------------------------


def test_symlinks_that_lead_nowhere_and_a_path_through_a_file(tmp_path):
    loop, link, doc = tmp_path / "loop", tmp_path / "link.txt", write(tmp_path, "doc.txt", "text")
    loop.symlink_to(loop)
    link.symlink_to(tmp_path / "gone.txt")
    loop_message = "is a symbolic link loop (following its links leads back to where they start)"
    assert plan_error(str(loop)) == f"Error: {loop} {loop_message}\n"
    assert (
        plan_error(str(link))
        == f"Error: {link} is a broken symbolic link: its target {tmp_path}/gone.txt does not exist\n"
    )
    assert plan_error(f"{doc}/in.txt") == f"Error: {doc}/in.txt does not exist: {doc} is a file, not a directory\n"


def test_empty_path_and_unknown_user():
    assert plan_error("") == "Error: '' is an empty path; give a file path\n"
    assert plan_error("~longlm_no_such_user/a.txt") == "Error: ~longlm_no_such_user/a.txt does not exist\n"


def test_socket(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a short relative name: socket paths are limited to about 100 bytes
    with socket.socket(socket.AF_UNIX) as server:
        server.bind("sock")
        assert plan_error("sock") == "Error: sock is a socket or a device that cannot be read; give a file\n"


def test_named_pipe_is_read_as_a_stream(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_bytes("through a pipe".encode("utf-16")))
    writer.start()
    document = read_documents([str(fifo)])
    writer.join()
    assert (document.text, document.encodings) == ("through a pipe", ("utf-16-le",))


def test_control_characters_in_a_name_are_escaped(tmp_path):
    path = str(tmp_path / "x\x1b[31mred.txt")
    assert plan_error(path) == f"Error: {tmp_path}/x\\x1b[31mred.txt does not exist\n"


def test_the_encoding_read_is_on_the_document(tmp_path):
    path = write(tmp_path, "a.txt", "Café".encode("cp1252"))
    assert read_documents([path]).encodings == ("cp1252",)


def test_a_utf8_file_with_a_latin1_run_is_read_as_utf8_with_one_warning(tmp_path):
    """Plainly UTF-8 but for one pasted Latin-1 word: UTF-8 with U+FFFD there and one warning (it was guessed
    as a legacy code page, every other character wrong); a file that is all Latin-1 is still guessed at."""
    path = tmp_path / "mixed.txt"
    path.write_bytes(("Ünïcödé text, “quotes”, naïve café. " * 20).encode() + b"caf\xe9 au lait.")
    result = run("plan", "--file", path, "-m", "llama2")
    assert result.exit_code == 0, result.output
    assert result.stderr == f"Warning: {path} is UTF-8 but for 1 byte sequence(s), read with U+FFFD in their place\n"
    document = read_documents([str(path)])
    assert document.encodings == ("utf-8",) and document.text.endswith("naïve café. caf\ufffd au lait.")
    latin = tmp_path / "latin.txt"
    latin.write_bytes("Un café, voilà. Très bien, ça marche à Noël.".encode("latin-1"))
    assert read_documents([str(latin)]).text == "Un café, voilà. Très bien, ça marche à Noël."
