import math

import emoji
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from semrec.text.clean import _EMOJI_CHARS, clean_text, clean_title, remove_emoji


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Hello world", "Hello world."),
        ("Hello world...", "Hello world."),
        ("  padded  ", "padded."),
        ("Tom &amp; Jerry", "Tom & Jerry."),
        ("<b>bold</b> text<br/>", "bold text."),
        ('say "hi"\nthere\r', "say hithere."),
        (".", ""),
        ("...", ""),
        ("", ""),
        (None, ""),
        (math.nan, ""),
        (["first.", "second"], "first. second."),
        (["", "<p>x</p>"], "x."),
        ([], ""),
        ({"Brand": "Acme"}, "'Brand': 'Acme'."),
        ("Great gift \U0001F381", "Great gift."),
    ],
)
def test_clean_text(value, expected):
    assert clean_text(value) == expected


def test_clean_title_strips_punctuation_at_both_ends():
    assert clean_title("!Super Glue, 2 pack.") == "Super Glue, 2 pack"
    assert clean_title("`quoted`?") == "quoted"
    assert clean_title("") == ""


_EMOJI_SAMPLE = sorted(_EMOJI_CHARS)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.one_of(st.characters(codec="ascii"), st.sampled_from(_EMOJI_SAMPLE),
                                  st.characters(min_codepoint=0x80, max_codepoint=0x2FFFF)), max_size=25))
def test_remove_emoji_skips_only_texts_without_emoji_characters(text):
    assert remove_emoji(text) == emoji.replace_emoji(text, replace="")


def test_remove_emoji_cases():
    assert remove_emoji("gift 🎁 box") == "gift  box"
    assert remove_emoji("keycap 1\ufe0f\u20e3 and 1") == "keycap  and 1"
    assert remove_emoji("café 10%") == "café 10%"
    assert remove_emoji("stray \ufe0f selector") == "stray  selector"
