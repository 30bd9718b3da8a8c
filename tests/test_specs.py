"""Unit tests for async_image_save.specs: ThumbnailSpec.from_options, digest, specs_for."""

from __future__ import annotations

import dataclasses

import pytest
from django.core.exceptions import ImproperlyConfigured

from async_image_save.conf import DEFAULT_THUMBNAILS
from async_image_save.specs import CROP_ANCHORS, ThumbnailSpec, specs_for


def build(**options) -> ThumbnailSpec:
    options.setdefault("size", (100, 80))
    return ThumbnailSpec.from_options("thumb", options)


def error_of(options) -> str:
    with pytest.raises(ImproperlyConfigured) as info:
        ThumbnailSpec.from_options("thumb", options)
    assert "'thumb'" in str(info.value)
    return str(info.value)


def test_defaults():
    spec = build()
    assert spec == ThumbnailSpec(name="thumb", width=100, height=80)
    assert (spec.fit, spec.anchor, spec.format, spec.quality) == ("fit", "center", None, 85)
    assert (spec.upscale, spec.progressive, spec.background) == (False, False, "#ffffff")


def test_all_options():
    spec = build(
        size=[300, 200],
        fit="fill",
        format="WEBP",
        quality=70,
        upscale=True,
        progressive=1,
        background="#000",
    )
    assert (spec.width, spec.height, spec.fit, spec.format, spec.quality) == (
        300,
        200,
        "fill",
        "webp",
        70,
    )
    assert spec.upscale is True and spec.progressive is True
    assert spec.background == "#000"


def test_unknown_option():
    message = error_of({"size": (10, 10), "sise": 1, "zoom": 2})
    assert "['sise', 'zoom']" in message
    assert "known" in message


def test_options_not_a_dict():
    assert "dict" in error_of([("size", (10, 10))])


@pytest.mark.parametrize(
    "size",
    [
        None,
        100,
        (100,),
        (100, 100, 3),
        (0, 10),
        (10, -1),
        (10001, 10),
        (10.0, 10),
        ("10", 10),
        (True, 10),
        "10x10",
    ],
)
def test_bad_size(size):
    options = {} if size is None else {"size": size}
    assert "size" in error_of(options)


@pytest.mark.parametrize("size", [(1, 1), (10000, 10000), [640, 480]])
def test_good_size(size):
    spec = build(size=size)
    assert (spec.width, spec.height) == tuple(size)


@pytest.mark.parametrize("fit", ["stretch", "", None, "CROP"])
def test_bad_fit(fit):
    assert "'fit'" in error_of({"size": (10, 10), "fit": fit})


@pytest.mark.parametrize("crop", ["middle", "top-center", "CENTER"])
def test_bad_crop_anchor(crop):
    message = error_of({"size": (10, 10), "crop": crop})
    assert "'crop'" in message
    assert repr(crop) in message


@pytest.mark.parametrize("fmt", ["tiff", "bmp", "image/jpeg", "", 5])
def test_bad_format(fmt):
    assert "'format'" in error_of({"size": (10, 10), "format": fmt})


@pytest.mark.parametrize(
    ("given", "expected"), [("JPG", "jpeg"), ("jpeg", "jpeg"), ("PNG", "png"), ("avif", "avif")]
)
def test_format_normalised(given, expected):
    assert build(format=given).format == expected


@pytest.mark.parametrize("quality", [0, 101, -5, "85", 85.0, None, True, False])
def test_bad_quality(quality):
    assert "'quality'" in error_of({"size": (10, 10), "quality": quality})


@pytest.mark.parametrize("background", ["not-a-colour", "#12345", "", None])
def test_bad_background_rejected(background):
    assert "'background'" in error_of({"size": (10, 10), "background": background})


@pytest.mark.parametrize("background", ["#000", "#123456", "white", "rgb(1, 2, 3)"])
def test_good_background(background):
    assert build(background=background).background == background


def test_crop_true_means_crop_center():
    spec = build(crop=True)
    assert (spec.fit, spec.anchor) == ("crop", "center")


@pytest.mark.parametrize("anchor", sorted(CROP_ANCHORS))
def test_crop_anchor(anchor):
    spec = build(crop=anchor)
    assert (spec.fit, spec.anchor) == ("crop", anchor)


def test_crop_false_keeps_fit():
    spec = build(crop=False)
    assert (spec.fit, spec.anchor) == ("fit", "center")


def test_explicit_fit_wins_over_crop():
    spec = build(crop="top", fit="fill")
    assert (spec.fit, spec.anchor) == ("fill", "top")


# ---------------------------------------------------------------------------
# digest
# ---------------------------------------------------------------------------


def test_digest_is_stable_and_short():
    assert build().digest == build().digest
    assert len(build().digest) == 8
    int(build().digest, 16)


@pytest.mark.parametrize(
    "change",
    [
        {"name": "other"},
        {"width": 101},
        {"height": 81},
        {"fit": "crop"},
        {"anchor": "top"},
        {"format": "png"},
        {"quality": 86},
        {"upscale": True},
        {"progressive": True},
        {"background": "#000000"},
    ],
)
def test_digest_changes_with_every_field(change):
    base = build()
    assert dataclasses.replace(base, **change).digest != base.digest


def test_every_field_is_covered_by_digest_test():
    names = {f.name for f in dataclasses.fields(ThumbnailSpec)}
    assert names == {
        "name",
        "width",
        "height",
        "fit",
        "anchor",
        "format",
        "quality",
        "upscale",
        "progressive",
        "background",
        "animated",
    }


def test_digest_changes_with_options():
    assert build(size=(100, 80)).digest != build(size=(80, 100)).digest
    assert build(crop=True).digest != build().digest
    assert build(format="jpg").digest == build(format="jpeg").digest


# ---------------------------------------------------------------------------
# specs_for
# ---------------------------------------------------------------------------


def test_specs_for_default(settings):
    settings.ASYNC_IMAGE_SAVE_THUMBNAILS = {}
    specs = specs_for("tests.Photo", "image")
    assert {s.name: (s.width, s.height) for s in specs} == {
        name: opts["size"] for name, opts in DEFAULT_THUMBNAILS.items()
    }


def test_specs_for_custom_default(settings):
    settings.ASYNC_IMAGE_SAVE_DEFAULT_THUMBNAILS = {"mini": {"size": (32, 32), "crop": True}}
    specs = specs_for("tests.Photo", "image")
    assert specs == [ThumbnailSpec(name="mini", width=32, height=32, fit="crop")]


def test_specs_for_per_field(settings):
    settings.ASYNC_IMAGE_SAVE_THUMBNAILS = {
        "tests.Photo.image": {"card": {"size": (400, 300), "crop": "top"}},
    }
    assert specs_for("tests.Photo", "image") == [
        ThumbnailSpec(name="card", width=400, height=300, fit="crop", anchor="top")
    ]
    # another field still uses the default
    assert {s.name for s in specs_for("tests.Document", "cover")} == set(DEFAULT_THUMBNAILS)


def test_specs_for_per_field_key_is_case_insensitive(settings):
    settings.ASYNC_IMAGE_SAVE_THUMBNAILS = {"TESTS.photo.IMAGE": {"card": {"size": (4, 3)}}}
    assert [s.name for s in specs_for("tests.Photo", "image")] == ["card"]


def test_specs_for_empty_per_field_turns_thumbnails_off(settings):
    settings.ASYNC_IMAGE_SAVE_THUMBNAILS = {"tests.Photo.image": {}}
    assert specs_for("tests.Photo", "image") == []


def test_specs_for_non_image_field(settings):
    settings.ASYNC_IMAGE_SAVE_THUMBNAILS = {}
    assert specs_for("tests.Document", "attachment", is_image_field=False) == []


def test_specs_for_non_image_field_listed_explicitly(settings):
    settings.ASYNC_IMAGE_SAVE_THUMBNAILS = {
        "tests.Document.attachment": {"icon": {"size": (16, 16)}}
    }
    specs = specs_for("tests.Document", "attachment", is_image_field=False)
    assert [(s.name, s.width, s.height) for s in specs] == [("icon", 16, 16)]


def test_specs_for_raises_on_bad_settings(settings):
    settings.ASYNC_IMAGE_SAVE_DEFAULT_THUMBNAILS = {"bad": {"size": (0, 0)}}
    with pytest.raises(ImproperlyConfigured, match="'bad'"):
        specs_for("tests.Photo", "image")
