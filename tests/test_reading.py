"""Reading an upload once (``async_image_save.reading``); more through ``from_upload`` in
test_payload.py."""

from __future__ import annotations

import hashlib
import io

import pytest
from django.core.files import File
from django.core.files.uploadedfile import SimpleUploadedFile, TemporaryUploadedFile

from async_image_save.exceptions import UploadTooLarge
from async_image_save.reading import READ_CHUNK, read_once, too_large

DATA = bytes(range(256)) * (READ_CHUNK // 256 * 2 + 3)  # over two chunks


def temporary_upload(data: bytes, declared: int) -> TemporaryUploadedFile:
    upload = TemporaryUploadedFile("t.jpg", "image/jpeg", declared, None)
    upload.write(data)
    upload.seek(0)
    return upload


@pytest.mark.parametrize("hashed", [True, False], ids=["hashed", "unhashed"])
@pytest.mark.parametrize("kind", ["in-memory", "temporary", "plain-file"])
def test_every_kind_of_upload_is_read_whole_and_hashed_only_when_asked(kind, hashed):
    if kind == "in-memory":
        upload = SimpleUploadedFile("a.jpg", DATA)
    elif kind == "temporary":
        upload = temporary_upload(DATA, len(DATA))
    else:
        upload = File(io.BufferedReader(io.BytesIO(DATA)), name="a.jpg")  # no size, chunks
    digest = hashlib.sha256() if hashed else None
    with upload:
        assert bytes(read_once(upload, getattr(upload, "size", None), len(DATA), digest)) == DATA
    if digest is not None:
        assert digest.hexdigest() == hashlib.sha256(DATA).hexdigest()


def test_a_file_longer_than_it_declared_stops_at_the_limit():
    with temporary_upload(DATA, 10) as upload, pytest.raises(UploadTooLarge) as info:
        read_once(upload, 10, len(DATA) - 1, None)
    assert info.value.limit == len(DATA) - 1


def test_a_file_shorter_than_it_declared_is_read_as_it_is():
    with temporary_upload(b"short", 100) as upload:
        assert bytes(read_once(upload, 100, 1000, None)) == b"short"


def test_too_large_names_the_setting_and_the_fix():
    error = too_large("big.jpg", 11, 10)
    assert (error.size, error.limit) == (11, 10)
    assert "ASYNC_IMAGE_SAVE_MAX_UPLOAD_BYTES" in str(error) and "'big.jpg'" in str(error)
