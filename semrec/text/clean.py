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
_TITLE_STRIP = ".!?,;:`"


def _clean_piece(text: str) -> str:
    text = html.unescape(text)
    text = _TAG.sub("", text)
    text = text.replace('"', "").replace("\n", "").replace("\r", "")
    return text.strip()


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


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
    text = emoji.replace_emoji(text, replace="").strip()
    text = text.rstrip(".").rstrip()
    return text + "." if text else ""


def clean_title(value: Any) -> str:
    """Clean a title, then strip the punctuation set ``.!?,;:``` from both ends (reference behaviour)."""
    return clean_text(value).strip(_TITLE_STRIP).strip()
