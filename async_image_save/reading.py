"""Reading an upload once, into one buffer, hashing it on the way when asked.

``UploadPayload.from_upload()`` uses it; the limit is checked as the bytes
arrive, so a file larger than it said never fills memory past the limit.
"""

from __future__ import annotations

import io
from typing import Any

from django.core.files import File

from async_image_save.exceptions import UploadTooLarge

READ_CHUNK = 1024 * 1024


def too_large(name: str | None, size: int, limit: int) -> UploadTooLarge:
    """The error for an upload of ``size`` bytes over ``limit``, with the fix."""
    return UploadTooLarge(
        f"Upload {name!r} is {size} bytes, over ASYNC_IMAGE_SAVE_MAX_UPLOAD_BYTES ({limit}). "
        "Reject it in the form (a validator on the field) or raise the setting.",
        size=size,
        limit=limit,
    )


def read_once(upload: File, declared: int | None, limit: int, digest: Any) -> bytes | bytearray:
    """Read the whole file once; hash each chunk into ``digest`` (if any) as it arrives."""
    if upload.closed:
        upload.open("rb")
    if upload.seekable() if hasattr(upload, "seekable") else True:
        upload.seek(0)
    raw = getattr(upload, "file", upload)
    # A BytesIO already holds the bytes: take them whole (and hash that) instead of in chunks.
    if isinstance(raw, io.BytesIO):
        data = raw.getvalue()
        if len(data) > limit:
            raise too_large(upload.name, len(data), limit)
        if digest is not None:
            view = memoryview(data)
            for start in range(0, len(data), READ_CHUNK):
                digest.update(view[start : start + READ_CHUNK])
        return data
    readinto = getattr(raw, "readinto", None)
    if declared is not None and readinto is not None:
        return _readinto(upload.name, raw, declared, limit, digest)
    parts: list[bytes] = []
    total = 0
    for chunk in upload.chunks(READ_CHUNK):
        if isinstance(chunk, str):
            chunk = chunk.encode(getattr(upload, "charset", None) or "utf-8")
        total += len(chunk)
        if total > limit:
            raise too_large(upload.name, total, limit)
        if digest is not None:
            digest.update(chunk)
        parts.append(chunk)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _readinto(name: str | None, raw: Any, declared: int, limit: int, digest: Any) -> bytearray:
    """Read straight into one buffer of the declared size: one copy, whatever the file size."""
    buf = bytearray(declared)
    view = memoryview(buf)
    filled = 0
    while filled < declared:
        n = raw.readinto(view[filled : filled + READ_CHUNK])
        if not n:
            break
        if digest is not None:
            digest.update(view[filled : filled + n])
        filled += n
    view.release()
    del buf[filled:]
    while True:  # the file may be longer than it said
        chunk = raw.read(READ_CHUNK)
        if not chunk:
            break
        if len(buf) + len(chunk) > limit:
            raise too_large(name, len(buf) + len(chunk), limit)
        if digest is not None:
            digest.update(chunk)
        buf += chunk
    return buf
