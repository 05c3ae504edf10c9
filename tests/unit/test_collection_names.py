"""Collection names are free text but printable: nothing that breaks a terminal line or makes a
name display as another."""

from __future__ import annotations

import re

import pytest

from embedplat.collections import validate_collection_name
from embedplat.errors import InvalidInputError


@pytest.mark.parametrize(
    "name",
    ["docs", "Mes documents", "[/bold]", "a;b'c\"d", "日本語のメモ", "x" * 200, "tab-free_name.v2"],
)
def test_printable_names_are_accepted(name: str) -> None:
    assert validate_collection_name(name) == name


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("a\nb", "U+000A"),
        ("a\tb", "U+0009"),
        ("a\x00b", "U+0000"),
        ("a\x1b[31mred", "U+001B"),
        ("evil\u202etxt.exe", "U+202E"),  # right-to-left override
        ("zero\u200bwidth", "U+200B"),
        ("line\u2028sep", "U+2028"),
        ("lone\ud800surrogate", "U+D800"),
        ("\x7fdel", "U+007F"),
    ],
)
def test_control_and_format_characters_are_refused(name: str, problem: str) -> None:
    with pytest.raises(InvalidInputError, match=re.escape(problem)):
        validate_collection_name(name)


@pytest.mark.parametrize("name", ["", "   ", " docs", "docs ", "x" * 201])
def test_blank_padded_or_long_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidInputError):
        validate_collection_name(name)
