"""Fuzz targets (hypothesis) for the payload decoder and the image gate, on a time budget.

``AIS_FUZZ_SECONDS`` (default 20) is the budget for the whole module, shared
between the targets by weight; CI runs the default. Each target repeats
short hypothesis runs (fresh random seeds each time) until its share is used,
so the time is bounded whatever the machine, and a longer local run is just
``AIS_FUZZ_SECONDS=600 pytest tests/test_fuzz.py``.

Properties:

* ``payload.decode(frame, max_bytes=...)`` returns a payload whose fields have
  the documented types, with ``len(data) == size <= max_bytes``, or raises
  :class:`PayloadDecodeError` with a known code: never another exception, never
  a hang, and (msgpack frames) never a large allocation;
* ``imaging.validate_image`` accepts or raises :class:`ImageRejected`; an image
  it accepts renders, or is refused with :class:`ImageRejected`.
"""

from __future__ import annotations

import contextlib
import io
import os
import time
import tracemalloc
from collections.abc import Callable

import msgpack
import pytest
from django.test import override_settings
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from async_image_save.exceptions import ChecksumMismatch, ImageRejected, PayloadDecodeError
from async_image_save.imaging import ALLOWED_SOURCE_FORMATS, render_thumbnails, validate_image
from async_image_save.names import MAX_NAME_LENGTH, sanitize_name
from async_image_save.payload import (
    MAGIC,
    UploadPayload,
    decode,
)
from async_image_save.specs import ThumbnailSpec
from tests import hostile_inputs as H

FUZZ_SECONDS = float(os.environ.get("AIS_FUZZ_SECONDS", "20"))
MAX_BYTES = 128  # small, so "too large" is reachable by the fuzzer
DECODE_CODES = {
    "payload_invalid",
    "payload_version",
    "pickle_refused",
    "size_mismatch",
    "too_large",
}
IMAGE_CODES = {"not_an_image", "format_refused", "damaged_image", "decompression_bomb"}
RUN = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


def fuzz_for(share: float, target: Callable[[], None]) -> int:
    """Run the hypothesis test ``target`` repeatedly for ``share`` of the budget (at least once)."""
    deadline = time.monotonic() + FUZZ_SECONDS * share
    runs = 0
    while runs == 0 or time.monotonic() < deadline:
        target()
        runs += 1
    return runs


# ---------------------------------------------------------------------------
# The decoder
# ---------------------------------------------------------------------------


def check_decode(frame: bytes, max_bytes: int = MAX_BYTES) -> UploadPayload | None:
    """The decoder property; returns the payload when the frame was accepted."""
    try:
        payload = decode(frame, max_bytes=max_bytes)
    except PayloadDecodeError as exc:
        assert exc.code in DECODE_CODES, exc.code
        assert str(exc)
        return None
    assert isinstance(payload.name, str) and payload.name
    assert payload.name == sanitize_name(payload.name)
    assert "/" not in payload.name and "\\" not in payload.name
    assert len(payload.name.encode("utf-8")) <= MAX_NAME_LENGTH
    for value in (payload.content_type, payload.charset):
        assert value is None or isinstance(value, str)
    assert type(payload.size) is int
    assert payload.size == len(payload.data) <= max_bytes
    # None: a frame staged before its hash was known (the worker checks the job's).
    assert payload.sha256 is None or len(payload.sha256) == 64
    extra = payload.content_type_extra
    assert extra is None or (isinstance(extra, dict) and all(isinstance(k, str) for k in extra))
    with contextlib.suppress(ChecksumMismatch):
        payload.verify()
    upload = payload.to_upload()  # what the worker does next must not fail either
    try:
        assert upload.read() == bytes(payload.data)
    finally:
        upload.close()
    return payload


@RUN
@given(st.binary(max_size=512))
def _arbitrary_bytes(frame: bytes) -> None:
    check_decode(frame)


@RUN
@given(
    version=st.sampled_from([0, 1, 1, 1, 2, 255]),
    codec=st.sampled_from([ord("m"), ord("m"), ord("p"), 0, 255]),
    header_len=st.one_of(st.integers(0, 80), st.integers(0, 2**32 - 1)),
    rest=st.binary(max_size=300),
    allow_pickle=st.booleans(),
)
def _magic_prefixed(version: int, codec: int, header_len: int, rest: bytes, allow_pickle: bool):
    frame = MAGIC + bytes((version, codec)) + header_len.to_bytes(4, "big") + rest
    with override_settings(ASYNC_IMAGE_SAVE_ALLOW_PICKLE=allow_pickle):
        check_decode(frame)


def valid_frame(data: bytes, codec: str, name: str) -> bytes:
    sha = H.sha256(data)
    payload = UploadPayload(name, "image/jpeg", None, len(data), sha, data, {"x": "y"})
    return payload.encode(codec)


@st.composite
def mutated_frames(draw: st.DrawFn) -> tuple[bytes, str]:
    codec = draw(st.sampled_from(["msgpack", "pickle"]))
    data = draw(st.binary(max_size=2 * MAX_BYTES))
    frame = bytearray(valid_frame(data, codec, draw(st.text(max_size=40))))
    for _ in range(draw(st.integers(1, 5))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "length"]))
        at = draw(st.integers(0, max(0, len(frame) - 1)))
        if op == "flip" and frame:
            frame[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and frame:
            frame[at] = draw(st.integers(0, 255))
        elif op == "insert":
            frame[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del frame[at : at + draw(st.integers(1, 8))]
        elif op == "truncate":
            del frame[at:]
        elif op == "length" and len(frame) >= 9:
            current = int.from_bytes(frame[5:9], "big")
            new = draw(st.one_of(st.integers(-8, 8).map(lambda d, c=current: c + d),
                                 st.integers(0, 2**32 - 1)))  # fmt: skip
            frame[5:9] = (new % 2**32).to_bytes(4, "big")
    return bytes(frame), codec


@RUN
@given(mutated_frames())
def _mutated(frame_and_codec: tuple[bytes, str]) -> None:
    frame, codec = frame_and_codec
    with override_settings(ASYNC_IMAGE_SAVE_ALLOW_PICKLE=codec == "pickle"):
        check_decode(frame)


header_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=20)
    | st.binary(max_size=20) | st.floats(allow_nan=True),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)  # fmt: skip


@RUN
@given(
    data=st.binary(max_size=2 * MAX_BYTES),
    changes=st.dictionaries(
        st.sampled_from(["name", "content_type", "charset", "size", "extra", "sha256", "other"]),
        header_values,
        max_size=3,
    ),
    drop=st.sets(st.sampled_from(["name", "size", "sha256", "extra"]), max_size=1),
)
def _structured_header(data: bytes, changes: dict, drop: set) -> None:
    header = H.header_for(data, **changes)
    for key in drop:
        header.pop(key)
    check_decode(H.frame(msgpack.packb(header, use_bin_type=True), data))


def test_fuzz_decode_arbitrary_bytes():
    fuzz_for(0.1, _arbitrary_bytes)


def test_fuzz_decode_magic_prefixed_garbage():
    fuzz_for(0.15, _magic_prefixed)


def test_fuzz_decode_mutated_valid_frames():
    fuzz_for(0.25, _mutated)


def test_fuzz_decode_structured_headers():
    fuzz_for(0.15, _structured_header)


@RUN
@given(mutated_frames().filter(lambda fc: fc[1] == "msgpack"))
def _bounded_allocation(frame_and_codec: tuple[bytes, str]) -> None:
    frame = frame_and_codec[0]
    tracemalloc.start()
    try:
        check_decode(frame)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024 + 4 * len(frame), peak


def test_fuzz_decode_allocates_little():
    fuzz_for(0.05, _bounded_allocation)


def traced_peak(call: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        call()
    except PayloadDecodeError:
        pass
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_pickle_header_cannot_make_the_worker_allocate_its_declared_length(settings):
    """A 20-byte pickle header declaring a 1 GiB BINBYTES8 (only with ALLOW_PICKLE=True).

    Not strict: the allocation happens inside CPython's C unpickler, and newer
    CPython patch releases read such lengths in chunks; on those this passes.
    """
    settings.ASYNC_IMAGE_SAVE_ALLOW_PICKLE = True
    frame = H.pickle_huge_declared_bytes(2**30)
    with pytest.raises(PayloadDecodeError):
        decode(frame, max_bytes=MAX_BYTES)
    peak = traced_peak(lambda: decode(frame, max_bytes=MAX_BYTES))
    if peak > 64 * 1024 * 1024:
        pytest.xfail(
            f"BUG (low, ALLOW_PICKLE=True only): a {len(frame)}-byte frame made the unpickler "
            f"allocate {peak // 2**20} MiB (BINBYTES8 pre-allocates its declared length). "
            "Expected: the header's declared lengths are checked (e.g. pickletools.genops) "
            "before unpickling."
        )


# ---------------------------------------------------------------------------
# The image gate
# ---------------------------------------------------------------------------

SEEDS = [
    H.image_bytes("RGB", "PNG", (17, 9)),
    H.image_bytes("P", "PNG", (17, 9)),
    H.image_bytes("RGB", "JPEG", (17, 9)),
    H.image_bytes("P", "GIF", (17, 9)),
    H.image_bytes("RGB", "TIFF", (17, 9)),
    H.image_bytes("I;16", "TIFF", (17, 9)),
    H.image_bytes("RGB", "BMP", (17, 9)),
    H.image_bytes("RGB", "WEBP", (17, 9)),
]


@st.composite
def mutated_images(draw: st.DrawFn, seeds: list[bytes] = SEEDS) -> bytes:
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["set", "set", "insert", "delete", "truncate"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "set" and data:
            data[at] = draw(st.integers(0, 255))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 8))]
        elif op == "truncate":
            del data[at:]
    return bytes(data)


@pytest.fixture
def small_bomb_limit(monkeypatch):
    """A mutated header may claim any size: keep real decodes small and fast."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)


@RUN
@given(mutated_images())
@example(H.jpeg_cut_in_header())  # OSError: Truncated File Read
@example(H.png_truncated_ihdr())  # ValueError: Truncated IHDR chunk
def _validate(data: bytes) -> None:
    try:
        fmt, width, height = validate_image(data)
    except ImageRejected as exc:
        assert exc.code in IMAGE_CODES
        return
    assert fmt in ALLOWED_SOURCE_FORMATS and width > 0 and height > 0


@pytest.mark.usefixtures("small_bomb_limit")
def test_fuzz_validate_image_only_accepts_or_rejects():
    fuzz_for(0.15, _validate)


BOXES = st.sampled_from([(8, 8, "fit"), (5, 30, "crop"), (40, 3, "fill")])


def check_render(data: bytes, box: tuple[int, int, str]) -> None:
    try:
        validate_image(data)
    except Exception:  # refused (or the validate_image bug above): not this property
        return
    spec = ThumbnailSpec("t", box[0], box[1], fit=box[2])
    try:
        [thumb] = render_thumbnails(io.BytesIO(data), [spec])
    except ImageRejected as exc:
        assert exc.code in IMAGE_CODES
        return
    with Image.open(io.BytesIO(thumb.data)) as im:
        assert im.size == (thumb.width, thumb.height)
    if spec.fit == "fill":
        assert (thumb.width, thumb.height) == (spec.width, spec.height)
    else:
        assert 0 < thumb.width <= spec.width and 0 < thumb.height <= spec.height


@RUN
@given(mutated_images(), BOXES)
@example(H.tiff_broken_second_page(), (8, 8, "fit"))  # TypeError: Missing dimensions
def _render_validated(data: bytes, box: tuple[int, int, str]) -> None:
    check_render(data, box)


@pytest.mark.usefixtures("small_bomb_limit")
def test_fuzz_an_accepted_image_renders_or_is_rejected():
    fuzz_for(0.02, _render_validated)


@RUN
@given(mutated_images([s for s in SEEDS if not s.startswith(b"II*")]), BOXES)
def _render_validated_no_tiff(data: bytes, box: tuple[int, int, str]) -> None:
    check_render(data, box)


@pytest.mark.usefixtures("small_bomb_limit")
def test_fuzz_an_accepted_non_tiff_image_renders_or_is_rejected():
    """The same property without TIFF seeds, so it keeps fuzzing while the bug above is open."""
    fuzz_for(0.15, _render_validated_no_tiff)
