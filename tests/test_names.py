"""Tests for async_image_save.names: upload names made safe."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from async_image_save.names import MAX_NAME_LENGTH, sanitize_name


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("../../etc/passwd", "passwd"),
        ("/etc/passwd", "passwd"),
        ("..\\..\\windows\\system32\\evil.jpg", "evil.jpg"),
        ("C:\\Users\\me\\photo.jpg", "photo.jpg"),
        ("ph\x00oto.jpg", "photo.jpg"),
        ("line\nbreak\r.jpg", "linebreak.jpg"),
        ("tab\there\x7f.jpg", "tabhere.jpg"),
        ("...hidden.jpg", "hidden.jpg"),
        (".htaccess", "htaccess"),
        ("  . spaced.jpg  ", "spaced.jpg"),
        ("", "upload"),
        (None, "upload"),
        ("..", "upload"),
        ("../", "upload"),
        ("\x00\x01", "upload"),
        ("e\u0301t\u00e9.jpg", "\u00e9t\u00e9.jpg"),  # NFC
    ],
)
def test_sanitize_name(raw, expected):
    assert sanitize_name(raw) == expected


def test_sanitize_name_overlong_keeps_extension():
    name = "a" * 300 + ".jpeg"
    result = sanitize_name(name)
    assert len(result) == MAX_NAME_LENGTH
    assert result.endswith(".jpeg")
    assert result == "a" * (MAX_NAME_LENGTH - 5) + ".jpeg"


def test_sanitize_name_overlong_without_usable_extension_is_cut():
    name = "b" * 300
    assert sanitize_name(name) == "b" * MAX_NAME_LENGTH
    name = "c" * 150 + "." + "d" * 150  # "extension" too long to be one
    assert sanitize_name(name) == name[:MAX_NAME_LENGTH]


@given(name=st.text(max_size=300))
@example(name="a" * 199 + " " + "b" * 100)
@example(name="e\u200b\u0301.jpg")
def test_sanitize_name_is_idempotent(name):
    once = sanitize_name(name)
    assert sanitize_name(once) == once
    assert 0 < len(once.encode("utf-8")) <= MAX_NAME_LENGTH
    assert "/" not in once and "\\" not in once and "\x00" not in once
    assert not once.startswith(".")


def test_sanitize_name_multibyte_keeps_extension():
    result = sanitize_name("\u6f22" * 300 + ".jpg")
    assert result.endswith(".jpg")
    assert len(result.encode("utf-8")) <= MAX_NAME_LENGTH
    assert set(result[:-4]) == {"\u6f22"}  # no character cut in half
