"""Both thumbnail engines give the same geometry and the same safety on real files."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from PIL import Image

from async_image_save.engines import PillowEngine, _load, get_engine
from async_image_save.exceptions import ImageRejected
from async_image_save.specs import ThumbnailSpec

FILES = Path(__file__).resolve().parent / "files"
SPECS = [
    ThumbnailSpec.from_options("crop", {"size": (200, 200), "crop": "center"}),
    ThumbnailSpec.from_options("fit", {"size": (100, 100)}),
    ThumbnailSpec.from_options("fill", {"size": (80, 30), "fit": "fill", "format": "webp"}),
    ThumbnailSpec.from_options("alpha", {"size": (60, 60), "format": "jpeg", "background": "red"}),
]


def engines():
    found = [PillowEngine()]
    try:
        from async_image_save.vips import VipsEngine

        found.append(VipsEngine())
    except ImportError:  # the [vips] extra is optional; scripts/test installs it
        pass
    return found


@pytest.fixture(params=engines(), ids=lambda e: type(e).__name__)
def engine(request):
    return request.param


@pytest.mark.parametrize(
    "name",
    ["photo.jpg", "rotated_exif.jpg", "transparent.png", "cmyk.jpg", "gray16.png", "tiny.png"],
)
def test_engine_geometry_matches_the_pillow_engine(engine, name):
    reference = {
        r.spec.name: (r.width, r.height)
        for r in PillowEngine().render(io.BytesIO((FILES / name).read_bytes()), SPECS)
    }
    for result in engine.render(io.BytesIO((FILES / name).read_bytes()), SPECS):
        with Image.open(io.BytesIO(result.data)) as im:
            assert im.size == (result.width, result.height) == reference[result.spec.name]
            assert not im.getexif()  # no EXIF (GPS, camera) in thumbnails
            if result.spec.name == "alpha":
                assert im.mode == "RGB"  # transparency flattened for JPEG


def test_engine_flattens_transparency_on_the_spec_background(engine):
    (result,) = engine.render(io.BytesIO((FILES / "transparent.png").read_bytes()), [SPECS[3]])
    with Image.open(io.BytesIO(result.data)) as im:
        r, g, b = im.convert("RGB").getpixel((30, 30))
    # 50% green over red: both channels present, blue absent.
    assert r > 80 and g > 40 and b < 60


def test_engine_refuses_what_pillow_refuses(engine, tmp_path):
    with pytest.raises(ImageRejected):
        engine.render(io.BytesIO(b"<svg xmlns='http://www.w3.org/2000/svg'/>"), SPECS)


def test_get_engine_by_name_and_bad_path(settings):
    settings.ASYNC_IMAGE_SAVE_ENGINE = "pillow"
    assert isinstance(get_engine(), PillowEngine)
    settings.ASYNC_IMAGE_SAVE_ENGINE = "no.such.Engine"
    _load.cache_clear()
    with pytest.raises(ImproperlyConfigured, match="no.such.Engine"):
        get_engine()


def test_animated_spec_keeps_frames_and_still_spec_takes_the_first(engine):
    frames = [Image.new("RGB", (300, 200), (i * 60, 0, 0)) for i in range(4)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=80, loop=0)
    specs = [
        ThumbnailSpec.from_options("anim", {"size": (100, 100), "animated": True}),
        ThumbnailSpec.from_options("still", {"size": (50, 50)}),
    ]
    out = {r.spec.name: r for r in engine.render(io.BytesIO(buf.getvalue()), specs)}
    with Image.open(io.BytesIO(out["anim"].data)) as im:
        assert (im.size, im.n_frames) == ((100, 67), 4)
    with Image.open(io.BytesIO(out["still"].data)) as im:
        assert getattr(im, "n_frames", 1) == 1
        assert im.convert("RGB").getpixel((5, 5))[0] < 20  # frame 0 is black


def _record_encode_threads(monkeypatch, module) -> list[tuple[str, bool]]:
    """Patch ``module._encode`` to note (spec name, ran on the calling thread)."""
    import threading

    calls: list[tuple[str, bool]] = []
    real, here = module._encode, threading.current_thread()

    def recording(image, spec, *args, **kwargs):
        calls.append((spec.name, threading.current_thread() is here))
        return real(image, spec, *args, **kwargs)

    monkeypatch.setattr(module, "_encode", recording)
    return calls


def test_engines_encode_every_size_but_the_last_on_a_pool_thread(engine, monkeypatch):
    import importlib

    module = importlib.import_module(type(engine).__module__)
    if module.__name__ == "async_image_save.engines":
        module = importlib.import_module("async_image_save.imaging")
    calls = _record_encode_threads(monkeypatch, module)
    specs = [
        ThumbnailSpec.from_options("large", {"size": (300, 300)}),
        ThumbnailSpec.from_options("mid", {"size": (120, 120)}),
        ThumbnailSpec.from_options("small", {"size": (40, 40)}),
    ]
    with open(FILES / "photo.jpg", "rb") as fp:
        results = engine.render(fp, specs)
    assert dict(calls) == {"large": False, "mid": False, "small": True}
    assert [(r.spec.name, r.width) for r in results] == [
        ("large", 300),
        ("mid", 120),
        ("small", 40),
    ]


def test_vips_encode_error_on_a_pool_thread_is_a_damaged_image(monkeypatch):
    vips = pytest.importorskip("async_image_save.vips")
    import pyvips

    real = vips._encode

    def failing(image, spec, source_format):
        if spec.name == "large":  # the size encoded on the pool thread
            raise pyvips.Error("webpsave: out of memory")
        return real(image, spec, source_format)

    monkeypatch.setattr(vips, "_encode", failing)
    specs = [
        ThumbnailSpec.from_options("large", {"size": (300, 300)}),
        ThumbnailSpec.from_options("small", {"size": (40, 40)}),
    ]
    with open(FILES / "photo.jpg", "rb") as fp, pytest.raises(ImageRejected) as caught:
        vips.VipsEngine().render(fp, specs)
    assert caught.value.code == "damaged_image"
    assert "out of memory" in str(caught.value)
