"""Decoding of user text files: strict UTF-8 first, then latin-1, never a silent mix (mojibake).

Rule (:func:`decode_bytes`):

* a UTF-16/32 byte-order mark decodes with that codec; a UTF-8 BOM is dropped;
* else strict UTF-8 when every byte sequence is valid UTF-8;
* else latin-1 (``cp1252`` when the bytes 0x80-0x9f occur and cp1252 decodes them: those are Windows quotes and
  dashes, which latin-1 would turn into invisible control characters);
* refused (:class:`TextDecodeError`) when the bytes are invalid UTF-8 but also hold valid UTF-8 multi-byte
  characters (a file mixing two encodings: either reading would garble part of it), or hold NUL bytes (UTF-16
  without a byte-order mark, or not a text file).
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterable

# a well-formed UTF-8 multi-byte character (RFC 3629): its presence next to an invalid byte means mixed encodings
_UTF8_MULTIBYTE = re.compile(
    rb"[\xc2-\xdf][\x80-\xbf]|\xe0[\xa0-\xbf][\x80-\xbf]|[\xe1-\xec\xee\xef][\x80-\xbf]{2}|\xed[\x80-\x9f][\x80-\xbf]"
    rb"|\xf0[\x90-\xbf][\x80-\xbf]{2}|[\xf1-\xf3][\x80-\xbf]{3}|\xf4[\x80-\x8f][\x80-\xbf]{2}")
_C1 = re.compile(rb"[\x80-\x9f]")
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32-le"), (codecs.BOM_UTF32_BE, "utf-32-be"),  # UTF-32 LE first: it starts
         (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))  # with the UTF-16 LE mark


class TextDecodeError(ValueError):
    """Bytes that are neither UTF-8 nor latin-1 text: ``reason`` is about the byte at ``offset``, ``detail`` (may be
    empty) explains what to do; ``str()`` joins them."""

    def __init__(self, reason: str, offset: int, detail: str = ""):
        super().__init__(reason + detail)
        self.reason, self.offset, self.detail = reason, offset, detail


_CP1252_UNDEFINED = re.compile(rb"[\x81\x8d\x8f\x90\x9d]")  # the five bytes cp1252 cannot decode


def bom_codec(head: bytes) -> tuple[str, int] | None:
    """``(codec, BOM length)`` when ``head`` (a file's first bytes, at least 4 when the file has them) starts with
    a UTF-16/32 byte-order mark, else None."""
    for bom, codec in _BOMS:
        if head.startswith(bom):
            return codec, len(bom)
    return None


def detect_encoding(chunks: Iterable[bytes]) -> str:
    """The encoding of a text file without a UTF-16/32 byte-order mark, read as consecutive byte ``chunks`` (a whole
    file is one chunk; a large one streams in pieces, in constant memory): ``"utf-8"``, ``"cp1252"`` or
    ``"latin-1"`` by the rule in the module docstring. Raises :class:`TextDecodeError` (offset in the whole file) for
    NUL bytes or mixed encodings."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = newlines = 0
    bad: tuple[int, int] | None = None  # (offset, byte) of the first invalid UTF-8 byte
    multibyte: tuple[int, int, bytes] | None = None  # (offset, line, bytes) of the first valid multi-byte character
    c1 = undefined = False
    tail = b""
    for chunk in chunks:
        nul = chunk.find(b"\x00")
        if nul >= 0:
            raise TextDecodeError("NUL byte", offset + nul,
                                  ": not a UTF-8 or latin-1 text file (UTF-16 without a byte-order mark?)")
        if bad is None:
            pending = decoder.getstate()[0]
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                at = offset - len(pending) + exc.start
                bad = (at, (pending + chunk)[exc.start])
        if multibyte is None:
            found = _UTF8_MULTIBYTE.search(tail + chunk)
            if found is not None:
                start = offset - len(tail) + found.start()
                line = newlines - tail.count(b"\n") + (tail + chunk).count(b"\n", 0, found.start()) + 1
                multibyte = (start, line, found.group())
        c1 = c1 or _C1.search(chunk) is not None
        undefined = undefined or _CP1252_UNDEFINED.search(chunk) is not None
        offset += len(chunk)
        newlines += chunk.count(b"\n")
        tail = (tail + chunk)[-3:]  # the stream's last bytes, also when a piece is shorter than 3
    if bad is None:
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            bad = (offset - len(decoder.getstate()[0]), decoder.getstate()[0][0])
    if bad is None:
        return "utf-8"
    if multibyte is not None:
        raise TextDecodeError(
            f"invalid utf-8 byte 0x{bad[1]:02x}", bad[0],
            f", but line {multibyte[1]} holds UTF-8 text ({multibyte[2].decode('utf-8')!r}): the file mixes "
            "encodings, so neither UTF-8 nor latin-1 reads all of it right; re-save it in one encoding")
    return "cp1252" if c1 and not undefined else "latin-1"


def decode_bytes(data: bytes) -> tuple[str, str]:
    """``(text, encoding)`` of a text file's bytes by the rule in the module docstring.

    ``encoding`` is ``"utf-8"``, ``"latin-1"``, ``"cp1252"``, ``"utf-16"`` or ``"utf-32"``; a leading BOM is
    not part of ``text``. Raises :class:`TextDecodeError` for mixed encodings or NUL bytes.
    """
    found = bom_codec(data)
    if found is not None:
        codec, skip = found
        try:
            return data[skip:].decode(codec), codec[:6]
        except UnicodeDecodeError as exc:
            raise TextDecodeError(f"invalid {codec[:6]} data ({exc.reason})", exc.start + skip) from None
    used = detect_encoding([data])
    text = data.decode(used)
    return (text[1:] if text.startswith("\ufeff") else text), used
