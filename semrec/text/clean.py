"""Text cleaning of item metadata, following the CCFRec preprocessing (spec ccfrec section 1.2).

Steps for one field value:
* a list: each element is HTML-unescaped, tags removed, ``"``/newlines deleted, stripped, and the
  elements joined with one space; a dict: its Python string form without the outer braces;
  a string: the same unescape / tag / quote / newline removal;
* emojis are removed;
* the end is normalised: trailing periods removed and exactly one appended; a lone "." becomes "".
Deviation: the reference removes emojis after appending the period ("gift 🎁" -> "gift ."); we remove
them first ("gift.").
Titles additionally lose leading and trailing ``. ! ? , ; : ``` characters (``clean_title``).
"""

from __future__ import annotations

import html
import math
import re
from typing import Any

import emoji

_TAG = re.compile(r"</?\w+[^>]*>")
# Every character any emoji of the emoji package is made of; whether each of them holds a non-ASCII character.
_EMOJI_CHARS = frozenset(c for key in emoji.EMOJI_DATA for c in key)
_EMOJI_NEED_NON_ASCII = all(not key.isascii() for key in emoji.EMOJI_DATA)
_TITLE_STRIP = ".!?,;:`"


def _clean_piece(text: str) -> str:
    text = html.unescape(text)
    text = _TAG.sub("", text)
    text = text.replace('"', "").replace("\n", "").replace("\r", "")
    return text.strip()


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def remove_emoji(text: str) -> str:
    """``emoji.replace_emoji(text, replace="")``, skipped when ``text`` holds no character an emoji is made of (all
    ASCII, or none of the emoji characters): ``replace_emoji`` walks every character in Python, 70% of the time of
    reading 10^6 items' metadata, and finds nothing in most texts. Same result for every text (property-tested)."""
    if (_EMOJI_NEED_NON_ASCII and text.isascii()) or _EMOJI_CHARS.isdisjoint(text):
        return text
    return emoji.replace_emoji(text, replace="")


def clean_text(value: Any) -> str:
    """Clean one metadata field (str, list of str, dict or missing) into a single string."""
    if _is_missing(value):
        return ""
    if isinstance(value, (list, tuple)):
        text = " ".join(piece for piece in (_clean_piece(str(v)) for v in value if not _is_missing(v)) if piece)
    elif isinstance(value, dict):
        text = _clean_piece(str(value)[1:-1])
    else:
        text = _clean_piece(str(value))
    text = remove_emoji(text).strip()
    text = text.rstrip(".").rstrip()
    return text + "." if text else ""


def clean_title(value: Any) -> str:
    """Clean a title, then strip the punctuation set ``.!?,;:``` from both ends (reference behaviour)."""
    return clean_text(value).strip(_TITLE_STRIP).strip()
