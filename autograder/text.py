"""Text from a submission or its child, made safe for any file, page or terminal.

A child may send a lone surrogate (not valid UTF-8), control characters or a
megabyte of text in an error message; a notebook may hold the same. Every
string that reaches a result, feedback, report or CSV goes through `clean`.
"""
from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\x80-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def clean(text: object, limit: int = 4000) -> str:
    """`text` as a str of valid UTF-8 without control characters (newlines and tabs stay),
    cut to `limit` characters with a note saying so."""
    s = text if isinstance(text, str) else str(text)
    s = s.encode("utf-8", "replace").decode("utf-8", "replace")  # lone surrogates become '?'
    s = _CONTROL.sub("\ufffd", s)
    if len(s) > limit:
        s = s[:limit] + f" ... [{len(s) - limit} characters cut]"
    return s
