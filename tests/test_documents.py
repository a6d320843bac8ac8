"""Reading documents: PDFs with page markers, text files, stdin, and every way an input can be unusable."""

import io
from pathlib import Path

import pytest
from click.testing import CliRunner
from pypdf import PdfWriter

from longlm_cli.cli import cli
from longlm_cli.documents import Document, read_documents
from longlm_cli.errors import InputError

from helpers import blank_pdf, text_pdf


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
    assert read_documents([path]) == Document(text="# Title\n\nSome text.\n", sources=(path,))


def test_any_utf8_file_is_text_and_bom_is_dropped(tmp_path):
    path = write(tmp_path, "data.csv", "\ufeffa,b\n1,2\n")
    assert read_documents([path]).text == "a,b\n1,2\n"


def test_several_inputs_are_joined_with_headers(tmp_path):
    first = write(tmp_path, "a.txt", "alpha")
    second = write(tmp_path, "b.pdf", text_pdf(["beta"]))
    document = read_documents([first, second])
    assert document.text == f"### {first}\n\nalpha\n\n### {second}\n\n[page 1]\nbeta"
    assert document.sources == (first, second)


def test_stdin_dash(tmp_path):
    document = read_documents(["-"], stdin=io.BytesIO("héllo from stdin\n".encode()))
    assert document == Document(text="héllo from stdin\n", sources=("<stdin>",))


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


@pytest.mark.parametrize("content", ["", "  \n\t\n"])
def test_empty_file(tmp_path, content):
    path = write(tmp_path, "empty.txt", content)
    assert plan_error(path) == f"Error: {path} is empty (no text, or only whitespace)\n"


def test_empty_stdin():
    with pytest.raises(InputError, match=r"^<stdin> is empty"):
        read_documents(["-"], stdin=io.BytesIO(b""))


def test_binary_file_with_nul_bytes(tmp_path):
    path = write(tmp_path, "image.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    assert plan_error(path) == (
        f"Error: {path} is a binary file (it contains NUL bytes); give a PDF or a UTF-8 text file\n"
    )


def test_file_that_is_not_utf8(tmp_path):
    path = write(tmp_path, "latin1.txt", "café".encode("latin-1"))
    assert plan_error(path) == (
        f"Error: {path} is binary or not UTF-8 text (invalid byte at offset 3); "
        "give a PDF or convert it to UTF-8 text\n"
    )


def test_unreadable_file(tmp_path, monkeypatch):
    path = write(tmp_path, "secret.txt", "hidden")

    def refuse(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", refuse)  # chmod 000 does not stop root, so simulate it
    assert plan_error(path) == f"Error: {path} cannot be read: permission denied\n"


def test_no_inputs():
    with pytest.raises(InputError, match="no document given"):
        read_documents([])


def test_stdin_only_once():
    with pytest.raises(InputError, match=r"stdin \('-'\) can be read only once"):
        read_documents(["-", "-"], stdin=io.BytesIO(b"x"))
