"""Plain text documents in any text encoding: finding the encoding, decoding, line endings normalised to LF.

The order: UTF-8 (exact and fast; a BOM is dropped), a UTF-32/UTF-16 byte-order mark, UTF-32/UTF-16 without one
(recognised by where the NUL bytes fall), then charset-normalizer's guess for 8-bit and CJK encodings. Only data
that no encoding fits is refused as binary; which encoding was assumed is returned beside the text.
"""

from __future__ import annotations

import codecs
import logging
import re
import unicodedata

from ..errors import InputError

_BOMS = (  # UTF-32-LE's mark begins with UTF-16-LE's, so the longer marks are tried first
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_WIDE = (("utf-32-le", 4, 0), ("utf-32-be", 4, 3), ("utf-16-le", 2, 0), ("utf-16-be", 2, 1))  # codec, width, LSB
# UTF-16/32 are recognised above, by their BOM or NUL pattern; charset-normalizer also offers them for short
# 8-bit text without any NUL byte ("café" in Latin-1 as two CJK characters), so they are kept out of its guesses.
_NOT_GUESSED = ["utf_16", "utf_16_le", "utf_16_be", "utf_32", "utf_32_le", "utf_32_be", "utf_7"]
_CLOSE = 0.1  # how much worse (chaos, coherence) cp1252 may read than charset-normalizer's first choice
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")
# Anything but whitespace, control characters and invisible format characters (soft hyphen, zero-width, BOM).
_NOT_SPACE = re.compile(r"\S")
MOSTLY_UTF8 = 4  # valid multi-byte characters per bad sequence for a file to be read as UTF-8 with replacements
_log = logging.getLogger(__name__)
_VISIBLE_CATEGORIES = ("L", "N", "P", "S", "Co")  # letters, numbers, punctuation, symbols, private-use glyphs
# Letters (category Lo) that Unicode makes Default_Ignorable_Code_Point (DerivedCoreProperties.txt): the Hangul
# fillers. Every other default-ignorable code point is a mark, a format or control character, or unassigned, which
# the categories above leave out already.
_IGNORABLE_LETTERS = frozenset("\u115f\u1160\u3164\uffa0")


def is_blank(text: str) -> bool:
    """True when ``text`` has nothing visible: no letter, number, punctuation or symbol that is not default
    ignorable. Whitespace, control and format characters (zero-width spaces, bidi controls, U+180E), combining
    marks on their own (CGJ, variation selectors) and the Hangul fillers are not text to read."""
    for match in _NOT_SPACE.finditer(text):
        char = match.group()
        category = unicodedata.category(char)
        if (category[0] in _VISIBLE_CATEGORIES or category in _VISIBLE_CATEGORIES) and char not in _IGNORABLE_LETTERS:
            return False
    return True


def decode_text(data: bytes, *, label: str) -> tuple[str, str]:
    """(text, encoding) of text bytes: CRLF and CR become LF; InputError when the data is binary.

    ``encoding`` is a Python codec name ("utf-8", "utf-16-le", "cp1252", ...).
    """
    text, encoding = _decode(data, label)
    return text.replace("\r\n", "\n").replace("\r", "\n"), encoding


def _decode(data: bytes, label: str) -> tuple[str, str]:
    has_nul = b"\x00" in data
    if not has_nul:
        body = data.removeprefix(codecs.BOM_UTF8)
        try:
            return body.decode("utf-8"), "utf-8"
        except UnicodeDecodeError as exc:
            if exc.reason == "unexpected end of data" and exc.end == len(body) and not body[: exc.start].isascii():
                # UTF-8 cut inside its last character (`head -c`): the partial character is dropped. Only after
                # other multi-byte characters: "caf\xe9" ends the same way, and is Latin-1.
                return body[: exc.start].decode("utf-8"), "utf-8"
            mostly = _mostly_utf8(body)
            if mostly is not None:
                text, bad = mostly
                _log.warning(f"{label} is UTF-8 but for {bad} byte sequence(s), read with U+FFFD in their place")
                return text, "utf-8"
    for bom, codec in _BOMS:
        if data.startswith(bom):
            return _strict(data[len(bom) :], codec, label, f"it starts with a {codec.upper()} byte-order mark"), codec
    if has_nul:
        for codec in _wide_candidates(data):
            decoded = _text_or_none(data, codec)
            if decoded is not None:
                return decoded, codec
        raise InputError(f"{label} is a binary file (it contains NUL bytes); give a PDF or a text file")
    return _guess(data, label)


def _mostly_utf8(body: bytes) -> tuple[str, int] | None:
    """(text with U+FFFD for the bad sequences, their count) when ``body`` is plainly UTF-8 but for a few bad
    sequences (a pasted Latin-1 run): its valid multi-byte characters outnumber the bad sequences MOSTLY_UTF8 to
    one, and the bad ones are under 1% of its bytes. None when the bytes may well be another encoding."""
    text = body.decode("utf-8", "replace")
    written = body.count("\ufffd".encode())  # replacement characters the file itself holds
    bad = text.count("\ufffd") - written
    multibyte = sum(1 for char in text if ord(char) > 127) - bad - written
    if bad and multibyte >= MOSTLY_UTF8 * bad and bad * 100 < len(body):
        return text, bad
    return None


def _wide_candidates(data: bytes):
    """UTF-32/16 codecs whose pattern ``data`` shows: many NUL bytes, almost all in the high bytes of code units
    (the high bytes of Latin characters), hardly any in the lowest byte. A stray NUL in 8-bit data fails this."""
    zeros = data.count(0)
    for codec, width, low in _WIDE:
        if len(data) % width:
            continue
        low_zeros = data[low::width].count(0)
        high_zeros = zeros - low_zeros
        if high_zeros * 10 >= len(data) // width and low_zeros * 16 <= high_zeros:
            yield codec


def _text_or_none(data: bytes, codec: str) -> str | None:
    """``data`` decoded with ``codec`` when that gives text: no NUL, hardly any other control character."""
    try:
        text = data.decode(codec)
    except UnicodeDecodeError:
        return None
    if "\x00" in text or len(_CONTROL.findall(text)) * 100 > len(text):
        return None
    # Real text is almost all in the Basic Multilingual Plane and assigned; regular binary data decoded as
    # UTF-32 is not (b"\x00\x01\x02\x03" repeated is U+10203, an unassigned code point, over and over).
    odd = sum(1 for c in text if ord(c) > 0xFFFF or unicodedata.category(c) in ("Cn", "Co", "Cs"))
    return None if odd * 10 > len(text) else text


def _strict(data: bytes, codec: str, label: str, why: str) -> str:
    try:
        return data.decode(codec)
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{label} is not valid {codec.upper()} text, though {why} (invalid data at byte {exc.start}); "
            "convert it to UTF-8"
        ) from None


def _guess(data: bytes, label: str) -> tuple[str, str]:
    """An 8-bit or CJK encoding, found by charset-normalizer; InputError when no encoding gives plausible text."""
    from charset_normalizer import from_bytes

    matches = from_bytes(data, cp_exclusion=_NOT_GUESSED)
    best = matches.best()
    if best is None:
        raise InputError(f"{label} is a binary file (no text encoding fits it); give a PDF or a text file")
    codec = codecs.lookup(_prefer_cp1252(matches, best)).name
    # charset-normalizer checks only samples of a large single-byte file: the whole must decode too.
    return _strict(data, codec, label, f"it looks like {codec} text"), codec


def _prefer_cp1252(matches, best) -> str:
    """cp1252 when it reads (nearly) as well as the first choice, else the first choice.

    On short Western text charset-normalizer often ranks a rare code page first (Latin-1 "Café crème" as cp775
    "Cafķ crĶme", German as mac_turkish); cp1252, the usual 8-bit encoding and Latin-1's printable superset, is
    the far likelier source when its reading is about as clean and coherent.
    """
    for match in matches:
        if (
            "cp1252" in match.could_be_from_charset
            and match.chaos <= best.chaos + _CLOSE
            and match.coherence >= best.coherence - _CLOSE
        ):
            return "cp1252"
    return best.encoding
