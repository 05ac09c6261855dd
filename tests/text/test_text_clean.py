import math

import pytest

from semrec.text.clean import clean_text, clean_title


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
