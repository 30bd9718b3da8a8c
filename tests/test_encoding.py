"""Tests for async_image_save.encoding: encoding into an in-memory file or a BytesIO."""

from __future__ import annotations

import io
import os
import threading

import pytest
from PIL import Image

from async_image_save import encoding
from async_image_save.encoding import encode_image

FORMATS = [("JPEG", {"quality": 80}), ("PNG", {}), ("WEBP", {"quality": 70})]


def gradient(mode: str = "RGB") -> Image.Image:
    image = Image.linear_gradient("L").resize((320, 200)).convert(mode)
    if mode == "RGBA":
        image.putalpha(Image.linear_gradient("L").resize((320, 200)))
    return image


def saved(image: Image.Image, fmt: str, options: dict) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


@pytest.mark.parametrize(("fmt", "options"), FORMATS)
@pytest.mark.parametrize("release_gil", [False, True])
def test_same_bytes_as_a_plain_save(fmt, options, release_gil):
    image = gradient("RGBA" if fmt == "PNG" else "RGB")
    data = encode_image(image, fmt, options, release_gil=release_gil)
    assert data == saved(image, fmt, options)
    with Image.open(io.BytesIO(data)) as decoded:
        assert decoded.format == fmt
        assert decoded.size == (320, 200)


@pytest.mark.skipif(not hasattr(os, "memfd_create"), reason="memfd_create is Linux only")
def test_release_gil_encodes_into_an_anonymous_file_and_closes_it(monkeypatch):
    made: list[int] = []
    real = os.memfd_create

    def recording(name, flags=0):
        fd = real(name, flags)
        made.append(fd)
        return fd

    monkeypatch.setattr(encoding, "_memfd_create", recording)
    data = encode_image(gradient(), "JPEG", {"quality": 80}, release_gil=True)
    assert data == saved(gradient(), "JPEG", {"quality": 80})
    assert len(made) == 1
    with pytest.raises(OSError):  # no descriptor is leaked
        os.fstat(made[0])


def test_falls_back_to_bytesio_without_memfd(monkeypatch):
    monkeypatch.setattr(encoding, "_memfd_create", None)
    assert encode_image(gradient(), "PNG", {}, release_gil=True) == saved(gradient(), "PNG", {})


def test_falls_back_to_bytesio_when_memfd_fails(monkeypatch):
    def refuse(name, flags=0):
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(encoding, "_memfd_create", refuse)
    data = encode_image(gradient(), "JPEG", {"quality": 60}, release_gil=True)
    assert data == saved(gradient(), "JPEG", {"quality": 60})


def test_encoder_errors_reach_the_caller():
    with pytest.raises((OSError, KeyError, ValueError)):
        encode_image(gradient("RGBA"), "JPEG", {}, release_gil=True)  # JPEG has no alpha


def test_threads_may_encode_concurrently():
    image = gradient()
    expected = saved(image, "JPEG", {"quality": 75})
    results: list[bytes] = []

    def work():
        results.append(encode_image(image, "JPEG", {"quality": 75}, release_gil=True))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert results == [expected] * 4
