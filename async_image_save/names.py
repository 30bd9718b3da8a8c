"""Upload file names made safe before anything stores or logs them."""

from __future__ import annotations

import unicodedata

#: Longest sanitized name, in UTF-8 bytes (an extension of up to 16 bytes is kept).
MAX_NAME_LENGTH = 200
_DROPPED_CATEGORIES = frozenset({"Cc", "Cf", "Co", "Cn", "Cs", "Zl", "Zp"})


def sanitize_name(name: str | None) -> str:
    """Return a safe base file name: no directories, control characters or leading dots.

    The storage applies its own ``get_valid_name`` afterwards; this removes what
    must never reach it (path traversal, NULs, newlines, names over
    ``MAX_NAME_LENGTH`` UTF-8 bytes). Idempotent: a worker re-sanitizing a name
    gets the same name the web process recorded.
    """
    text = str(name or "")
    for _ in range(4):  # a fixpoint: each pass can only shorten or normalise
        cleaned = _sanitize_once(text)
        if cleaned == text:
            break
        text = cleaned
    return text or "upload"


def _sanitize_once(text: str) -> str:
    text = unicodedata.normalize("NFC", text)
    text = text.replace("\\", "/").rsplit("/", 1)[-1]
    # Control/format characters and line/paragraph separators never belong in a name.
    text = "".join(ch for ch in text if unicodedata.category(ch) not in _DROPPED_CATEGORIES)
    text = text.strip().lstrip(".").strip()
    if len(text.encode("utf-8")) > MAX_NAME_LENGTH:
        stem, dot, ext = text.rpartition(".")
        if not (dot and 0 < len(ext.encode("utf-8")) <= 16):
            stem, ext = text, ""
        budget = MAX_NAME_LENGTH - (len(ext.encode("utf-8")) + 1 if ext else 0)
        stem = stem.encode("utf-8")[:budget].decode("utf-8", "ignore").rstrip()
        text = f"{stem}.{ext}" if ext else stem
    return unicodedata.normalize("NFC", text).strip()
