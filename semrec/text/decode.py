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


def decode_bytes(data: bytes) -> tuple[str, str]:
    """``(text, encoding)`` of a text file's bytes by the rule in the module docstring.

    ``encoding`` is ``"utf-8"``, ``"latin-1"``, ``"cp1252"``, ``"utf-16"`` or ``"utf-32"``; a leading BOM is
    not part of ``text``. Raises :class:`TextDecodeError` for mixed encodings or NUL bytes.
    """
    for bom, codec in _BOMS:
        if data.startswith(bom):
            try:
                return data[len(bom):].decode(codec), codec[:6]
            except UnicodeDecodeError as exc:
                raise TextDecodeError(f"invalid {codec[:6]} data ({exc.reason})", exc.start + len(bom)) from None
    nul = data.find(b"\x00")
    if nul >= 0:
        raise TextDecodeError("NUL byte", nul, ": not a UTF-8 or latin-1 text file (UTF-16 without a byte-order mark?)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        mixed = _UTF8_MULTIBYTE.search(data)
        if mixed is not None:
            line = data.count(b"\n", 0, mixed.start()) + 1
            char = data[mixed.start():mixed.end()].decode("utf-8")
            raise TextDecodeError(
                f"invalid utf-8 byte 0x{data[exc.start]:02x}", exc.start,
                f", but line {line} holds UTF-8 text ({char!r}): the file mixes encodings, so neither UTF-8 nor "
                "latin-1 reads all of it right; re-save it in one encoding") from None
        if _C1.search(data):
            try:
                return data.decode("cp1252"), "cp1252"
            except UnicodeDecodeError:
                pass
        return data.decode("latin-1"), "latin-1"
    return (text[1:] if text.startswith("\ufeff") else text), "utf-8"
