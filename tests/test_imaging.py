"""Unit tests for async_image_save.imaging: validation and the one-decode render pipeline."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from PIL import Image, ImageFile

from async_image_save import imaging
from async_image_save.exceptions import ImageRejected
from async_image_save.imaging import render_thumbnails, validate_image
from async_image_save.specs import ThumbnailSpec
from tests.conftest import jpeg_bytes

FILES = Path(__file__).resolve().parent / "files"


def read(name: str) -> bytes:
    return (FILES / name).read_bytes()


def spec(width: int, height: int, name: str = "t", **kwargs) -> ThumbnailSpec:
    return ThumbnailSpec(name=name, width=width, height=height, **kwargs)


def render_one(data: bytes, s: ThumbnailSpec):
    [result] = render_thumbnails(io.BytesIO(data), [s])
    return result, Image.open(io.BytesIO(result.data))


def animated_gif() -> bytes:
    """A real three-frame GIF: red, green, blue."""
    palette = [255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (256 * 3 - 9)
    frames = []
    for index in range(3):
        frame = Image.new("P", (60, 40), index)
        frame.putpalette(palette)
        frames.append(frame)
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return out.getvalue()


# ---------------------------------------------------------------------------
# validate_image
# ---------------------------------------------------------------------------


def test_validate_photo():
    assert validate_image(read("photo.jpg")) == ("JPEG", 640, 480)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("tiny.png", ("PNG", 32, 32)),
        ("transparent.png", ("PNG", 300, 300)),
        ("animated.gif", ("GIF", 120, 80)),
        ("cmyk.jpg", ("JPEG", 320, 240)),
        ("gray16.png", ("PNG", 256, 128)),
        ("rotated_exif.jpg", ("JPEG", 400, 200)),  # stored size, before orientation
    ],
)
def test_validate_fixture_images(name, expected):
    assert validate_image(read(name)) == expected


def test_validate_accepts_memoryview():
    assert validate_image(memoryview(read("photo.jpg"))) == ("JPEG", 640, 480)


def test_validate_rejects_text():
    with pytest.raises(ImageRejected) as info:
        validate_image(read("not_an_image.txt"))
    assert info.value.code == "not_an_image"
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    "data",
    [
        b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
        b"<script>alert(1)</script></svg>",
        b'<svg xmlns="http://www.w3.org/2000/svg"><rect width="10" height="10"/></svg>',
        b"",
        b"\xff\xd8\xff",  # a JPEG start marker and nothing else
    ],
)
def test_validate_rejects_svg_and_garbage(data):
    with pytest.raises(ImageRejected) as info:
        validate_image(data)
    assert info.value.code == "not_an_image"


def test_validate_refuses_format_outside_allow_list():
    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, "PCX")
    with pytest.raises(ImageRejected) as info:
        validate_image(out.getvalue())
    assert info.value.code == "format_refused"
    assert "PCX" in str(info.value)


def test_validate_damaged_png():
    data = bytearray(read("tiny.png"))
    assert data[37:41] == b"IDAT"
    data[45] ^= 0xFF  # inside the IDAT data: its CRC no longer matches
    with pytest.raises(ImageRejected) as info:
        validate_image(bytes(data))
    assert info.value.code == "damaged_image"


def test_decompression_bomb_warning_range(monkeypatch):
    # 640 * 480 = 307200 pixels: above MAX, not above 2 * MAX -> Pillow only warns
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 200_000)
    with pytest.raises(ImageRejected) as info:
        validate_image(read("photo.jpg"))
    assert info.value.code == "decompression_bomb"


def test_decompression_bomb_error_range(monkeypatch):
    # 307200 > 2 * 100000 -> Pillow raises DecompressionBombError
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100_000)
    with pytest.raises(ImageRejected) as info:
        validate_image(read("photo.jpg"))
    assert info.value.code == "decompression_bomb"


def test_decompression_bomb_just_under_limit(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 640 * 480)
    assert validate_image(read("photo.jpg")) == ("JPEG", 640, 480)


@pytest.mark.parametrize("max_pixels", [200_000, 100_000])
def test_render_rejects_decompression_bomb(monkeypatch, max_pixels):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", max_pixels)
    with pytest.raises(ImageRejected) as info:
        render_thumbnails(io.BytesIO(read("photo.jpg")), [spec(50, 50)])
    assert info.value.code == "decompression_bomb"


def test_render_rejects_text():
    with pytest.raises(ImageRejected) as info:
        render_thumbnails(io.BytesIO(read("not_an_image.txt")), [spec(50, 50)])
    assert info.value.code == "not_an_image"


def test_validate_rejects_truncated_jpeg():
    with pytest.raises(ImageRejected) as info:
        validate_image(read("truncated.jpg"))
    assert info.value.code == "damaged_image"


def test_render_truncated_jpeg_is_rejected():
    with pytest.raises(ImageRejected) as info:
        render_thumbnails(io.BytesIO(read("truncated.jpg")), [spec(50, 50)])
    assert info.value.code == "damaged_image"


# ---------------------------------------------------------------------------
# render_thumbnails: geometry
# ---------------------------------------------------------------------------


def test_no_specs_no_work():
    assert render_thumbnails(io.BytesIO(b"not even read"), []) == []


def test_fit_inside_box_keeps_aspect():
    result, image = render_one(read("photo.jpg"), spec(200, 200))
    assert (result.width, result.height) == image.size == (200, 150)


def test_fit_does_not_upscale():
    result, image = render_one(read("tiny.png"), spec(200, 200))
    assert (result.width, result.height) == image.size == (32, 32)


def test_fit_upscales_when_asked():
    result, image = render_one(read("tiny.png"), spec(200, 100, upscale=True))
    assert image.size == (100, 100)


def test_crop_gives_exact_box():
    result, image = render_one(read("photo.jpg"), spec(100, 100, fit="crop"))
    assert (result.width, result.height) == image.size == (100, 100)
    result, image = render_one(read("photo.jpg"), spec(300, 100, fit="crop"))
    assert image.size == (300, 100)


def test_crop_anchor_picks_the_side():
    # left half red, right half blue
    source = Image.new("RGB", (400, 100), (255, 0, 0))
    source.paste((0, 0, 255), (200, 0, 400, 100))
    out = io.BytesIO()
    source.save(out, "PNG")
    _, left = render_one(out.getvalue(), spec(100, 100, fit="crop", anchor="left"))
    _, right = render_one(out.getvalue(), spec(100, 100, fit="crop", anchor="right"))
    assert left.convert("RGB").getpixel((50, 50)) == (255, 0, 0)
    assert right.convert("RGB").getpixel((50, 50)) == (0, 0, 255)


def test_crop_smaller_source_is_not_upscaled():
    result, image = render_one(read("tiny.png"), spec(200, 100, fit="crop"))
    assert image.size == (32, 32)


def test_fill_gives_exact_box():
    result, image = render_one(read("photo.jpg"), spec(123, 45, fit="fill"))
    assert (result.width, result.height) == image.size == (123, 45)


def test_exif_orientation_applied():
    # stored 400x200 with orientation 6 -> displayed 200x400
    result, image = render_one(read("rotated_exif.jpg"), spec(100, 100))
    assert (result.width, result.height) == image.size == (50, 100)


def test_exif_orientation_applied_for_crop():
    result, image = render_one(read("rotated_exif.jpg"), spec(100, 60, fit="crop"))
    assert image.size == (100, 60)


@pytest.mark.parametrize("name", ["rotated_exif.jpg", "photo.jpg", "cmyk.jpg"])
@pytest.mark.parametrize("fmt", [None, "jpeg", "png", "webp"])
def test_output_has_no_exif(name, fmt):
    _, image = render_one(read(name), spec(80, 80, format=fmt))
    assert dict(image.getexif()) == {}
    assert "exif" not in image.info


def test_transparent_png_keeps_alpha_by_default():
    result, image = render_one(read("transparent.png"), spec(100, 100))
    assert image.format == "PNG"
    assert result.extension == "png"
    assert image.mode == "RGBA"
    assert image.getpixel((50, 50))[3] == 128


def test_transparent_png_to_jpeg_is_flattened_on_background():
    result, image = render_one(read("transparent.png"), spec(100, 100, format="jpeg"))
    assert image.format == "JPEG"
    assert result.extension == "jpg"
    assert image.mode == "RGB"
    # (0, 128, 0) at alpha 128 over white -> about (127, 191, 127)
    r, g, b = image.getpixel((50, 50))
    assert abs(r - 127) <= 3 and abs(g - 191) <= 3 and abs(b - 127) <= 3


def test_transparent_png_to_jpeg_uses_spec_background():
    _, image = render_one(
        read("transparent.png"), spec(100, 100, format="jpeg", background="#000000")
    )
    r, g, b = image.getpixel((50, 50))
    # (0, 128, 0) at alpha 128 over black -> about (0, 64, 0)
    assert r <= 3 and abs(g - 64) <= 3 and b <= 3


def test_cmyk_becomes_rgb_jpeg():
    result, image = render_one(read("cmyk.jpg"), spec(100, 100))
    assert image.format == "JPEG"
    assert image.mode == "RGB"
    assert image.size == (100, 75)
    assert "icc_profile" not in image.info


def test_gray16_png_renders_scaled_to_8_bits():
    result, image = render_one(read("gray16.png"), spec(100, 100))
    assert image.format == "PNG"
    assert image.size == (100, 50)
    # the source is 30000 everywhere, i.e. 30000 / 256 = 117 in 8 bits
    assert image.convert("L").getextrema() == (117, 117)


def test_fixture_gif_renders_first_frame():
    result, image = render_one(read("animated.gif"), spec(60, 60))
    assert getattr(image, "n_frames", 1) == 1
    assert image.size == (60, 40)


def test_animated_gif_renders_still_first_frame():
    data = animated_gif()
    assert Image.open(io.BytesIO(data)).n_frames == 3
    result, image = render_one(data, spec(30, 30))
    assert getattr(image, "n_frames", 1) == 1
    assert not getattr(image, "is_animated", False)
    assert image.size == (30, 20)
    r, g, b = image.convert("RGB").getpixel((15, 10))
    assert r > 200 and g < 50 and b < 50  # red: the first frame


@pytest.mark.parametrize(
    ("fmt", "pil_format", "extension"),
    [("jpeg", "JPEG", "jpg"), ("png", "PNG", "png"), ("webp", "WEBP", "webp")],
)
def test_explicit_output_format(fmt, pil_format, extension):
    result, image = render_one(read("photo.jpg"), spec(64, 64, format=fmt))
    assert image.format == pil_format
    assert result.extension == extension


def test_progressive_jpeg():
    _, image = render_one(read("photo.jpg"), spec(64, 64, progressive=True))
    assert image.info.get("progressive") or image.info.get("progression")


def test_quality_changes_size():
    low, _ = render_one(read("photo.jpg"), spec(300, 300, quality=10))
    high, _ = render_one(read("photo.jpg"), spec(300, 300, quality=95))
    assert len(low.data) < len(high.data)


def test_one_result_per_spec_sizes_match_encoded_images():
    specs = [
        spec(50, 50, name="tiny"),
        spec(600, 600, name="big"),
        spec(120, 120, name="square", fit="crop"),
        spec(200, 50, name="banner", fit="fill"),
        spec(320, 320, name="mid"),
    ]
    results = render_thumbnails(io.BytesIO(read("photo.jpg")), specs)
    assert sorted(r.spec.name for r in results) == sorted(s.name for s in specs)
    by_name = {r.spec.name: r for r in results}
    for r in results:
        with Image.open(io.BytesIO(r.data)) as image:
            assert image.size == (r.width, r.height), r.spec.name
    expected = {
        "tiny": (50, 38),
        "big": (600, 450),
        "square": (120, 120),
        "banner": (200, 50),
        "mid": (320, 240),
    }
    assert {name: (r.width, r.height) for name, r in by_name.items()} == expected


def test_one_decode_for_many_specs(monkeypatch):
    opens, loads = [], []
    real_open, real_load = Image.open, ImageFile.ImageFile.load

    def counting_open(*args, **kwargs):
        opens.append(args)
        return real_open(*args, **kwargs)

    def counting_load(self):
        loads.append(self)
        return real_load(self)

    monkeypatch.setattr(Image, "open", counting_open)
    monkeypatch.setattr(ImageFile.ImageFile, "load", counting_load)
    specs = [spec(400, 400, name="a"), spec(200, 200, name="b"), spec(50, 50, name="c", fit="crop")]
    results = render_thumbnails(io.BytesIO(read("photo.jpg")), specs)
    assert len(results) == 3
    assert len(opens) == 1
    # every load() call is on the same (single) decoded source image
    assert len({id(image) for image in loads}) == 1
    assert imaging.Image.open is counting_open  # the module really uses PIL.Image.open


# ---------------------------------------------------------------------------
# Geometry with draft()-decoded JPEGs of awkward sizes (found by brute force)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "box"),
    [((1000, 753), (120, 90)), ((359, 170), (227, 19))],
)
def test_fit_never_exceeds_box_for_odd_jpeg_sizes(size, box):
    result, image = render_one(jpeg_bytes(*size), spec(*box))
    assert image.size == (result.width, result.height)
    assert result.width <= box[0] and result.height <= box[1], image.size


@pytest.mark.parametrize(
    ("size", "box"),
    [((601, 1804), (100, 300)), ((197, 1682), (36, 827))],
)
def test_crop_is_exact_box_for_odd_jpeg_sizes(size, box):
    result, image = render_one(jpeg_bytes(*size), spec(*box, fit="crop"))
    assert image.size == box


@pytest.mark.parametrize(
    ("size", "box"),
    [((1000, 753), (120, 90)), ((601, 1804), (100, 300))],
)
def test_odd_sizes_render_correctly_from_png(size, box):
    """The same geometry without any JPEG draft involved (PNG source)."""
    out = io.BytesIO()
    Image.new("RGB", size, (1, 2, 3)).save(out, "PNG")
    _, fitted = render_one(out.getvalue(), spec(*box))
    _, cropped = render_one(out.getvalue(), spec(*box, fit="crop"))
    assert fitted.width <= box[0] and fitted.height <= box[1]
    assert cropped.size == box


box_side = st.integers(min_value=8, max_value=900)


@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    width=st.integers(min_value=40, max_value=1400),
    height=st.integers(min_value=40, max_value=1400),
    boxes=st.lists(
        st.tuples(box_side, box_side, st.sampled_from(["fit", "crop", "fill"])),
        min_size=1,
        max_size=3,
    ),
)
def test_geometry_property_on_jpeg(width, height, boxes):
    """Whatever the draft scale: fit stays inside its box (and near the exact aspect ratio),
    crop is the box (or the source, when smaller), fill is the box."""
    specs = [spec(w, h, name=f"s{i}", fit=fit) for i, (w, h, fit) in enumerate(boxes)]
    results = render_thumbnails(io.BytesIO(jpeg_bytes(width, height)), specs)
    assert sorted(r.spec.name for r in results) == sorted(s.name for s in specs)
    for r in results:
        s = r.spec
        with Image.open(io.BytesIO(r.data)) as image:
            assert image.size == (r.width, r.height)
        if s.fit == "fill":
            assert (r.width, r.height) == (s.width, s.height)
        elif s.fit == "crop":
            scale = min(max(s.width / width, s.height / height), 1.0)
            expected = (
                min(s.width, max(1, round(width * scale))),
                min(s.height, max(1, round(height * scale))),
            )
            assert (r.width, r.height) == expected
        else:
            scale = min(s.width / width, s.height / height, 1.0)
            assert r.width <= s.width and r.height <= s.height
            assert abs(r.width - width * scale) <= 1 and abs(r.height - height * scale) <= 1


# ---------------------------------------------------------------------------
# Encoding on a pool thread while the next size is resized
# ---------------------------------------------------------------------------


def test_every_size_but_the_last_is_encoded_on_a_pool_thread(monkeypatch):
    calls = []
    real = imaging._encode

    def recording(image, s, source_format, icc, release_gil=False):
        calls.append((s.name, threading.current_thread().name, release_gil))
        return real(image, s, source_format, icc, release_gil)

    monkeypatch.setattr(imaging, "_encode", recording)
    specs = [spec(100, 100, name="small"), spec(400, 400, name="large"), spec(200, 200, name="mid")]
    results = render_thumbnails(io.BytesIO(read("photo.jpg")), specs)
    here = threading.current_thread().name
    # Pool threads may start in any order, so compare by name.
    assert {name: (thread == here, release) for name, thread, release in calls} == {
        "large": (False, True),
        "mid": (False, True),
        "small": (True, False),
    }
    assert [(r.spec.name, r.width) for r in results] == [
        ("large", 400),
        ("mid", 200),
        ("small", 100),
    ]


def test_pool_encoding_gives_the_bytes_of_a_plain_encode(monkeypatch):
    specs = [
        spec(400, 400, name="a"),
        spec(200, 200, name="b", format="webp"),
        spec(60, 60, name="c"),
    ]
    threaded = render_thumbnails(io.BytesIO(read("photo.jpg")), specs)
    real = imaging.background.submit

    def encode_here(encode, image, s, source_format, icc, release_gil=False, here=False):
        return real(encode, image, s, source_format, icc, here=True)  # a plain BytesIO save

    monkeypatch.setattr(imaging.background, "submit", encode_here)
    inline = render_thumbnails(io.BytesIO(read("photo.jpg")), specs)
    assert [r.data for r in threaded] == [r.data for r in inline]


def test_a_failed_pool_encode_reaches_the_caller_after_every_encode_ended(monkeypatch):
    ended = []
    real = imaging._encode

    def failing(image, s, source_format, icc, release_gil=False):
        try:
            if s.name == "a":
                raise OSError("encoder exploded")
            return real(image, s, source_format, icc, release_gil)
        finally:
            ended.append(s.name)

    monkeypatch.setattr(imaging, "_encode", failing)
    specs = [spec(400, 400, name="a"), spec(200, 200, name="b"), spec(60, 60, name="c")]
    with pytest.raises(OSError, match="encoder exploded"):
        render_thumbnails(io.BytesIO(read("photo.jpg")), specs)
    assert sorted(ended) == ["a", "b", "c"]


def test_a_failed_resize_waits_for_the_encodes_already_started(monkeypatch):
    ended = []
    real_encode, real_resize = imaging._encode, imaging._resize

    def slow_encode(image, s, source_format, icc, release_gil=False):
        result = real_encode(image, s, source_format, icc, release_gil)
        ended.append(s.name)
        return result

    def resize(image, size):
        if size[0] < 100:
            raise MemoryError("no room for the small one")
        return real_resize(image, size)

    monkeypatch.setattr(imaging, "_encode", slow_encode)
    monkeypatch.setattr(imaging, "_resize", resize)
    specs = [spec(400, 400, name="a"), spec(60, 60, name="c")]
    with pytest.raises(MemoryError):
        render_thumbnails(io.BytesIO(read("photo.jpg")), specs)
    assert ended == ["a"]  # the started encode had finished when the error came out
