"""Unit tests for async_image_save.thumbnails: names, generation, and storage-free lookup."""

from __future__ import annotations

import os
from collections import Counter

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage
from PIL import Image

from async_image_save.models import Thumbnail
from async_image_save.specs import ThumbnailSpec
from async_image_save.thumbnails import (
    Placeholder,
    ThumbnailFile,
    field_specs,
    generate_thumbnails,
    placeholder_url,
    thumbnail,
    thumbnail_name,
)
from tests.conftest import jpeg_bytes
from tests.models import Document, Note, Photo

pytestmark = pytest.mark.django_db

SMALL = ThumbnailSpec(name="small", width=200, height=200)


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    settings.MEDIA_URL = "/media/"
    return tmp_path / "media"


@pytest.fixture
def storage_calls(monkeypatch):
    """Count calls of FileSystemStorage methods that touch the disk."""
    calls: Counter[str] = Counter()
    for method in ("exists", "size", "open", "_open", "url", "path", "listdir"):
        real = getattr(FileSystemStorage, method)

        def wrapper(self, *args, _real=real, _method=method, **kwargs):
            calls[_method] += 1
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(FileSystemStorage, method, wrapper)
    return calls


def saved_photo(name: str = "cat.jpg", size=(320, 240)) -> Photo:
    photo = Photo.objects.create(title=name)
    photo.image.save(name, ContentFile(jpeg_bytes(*size)), save=True)
    return photo


# ---------------------------------------------------------------------------
# thumbnail_name
# ---------------------------------------------------------------------------


def test_thumbnail_name_is_deterministic():
    first = thumbnail_name("photos/cat.jpg", SMALL, "jpg")
    assert first == thumbnail_name("photos/cat.jpg", SMALL, "jpg")
    assert first == f"photos/thumbs/cat.small.{SMALL.digest}.jpg"


def test_thumbnail_name_changes_with_spec():
    other = ThumbnailSpec(name="small", width=201, height=200)
    assert thumbnail_name("photos/cat.jpg", SMALL, "jpg") != thumbnail_name(
        "photos/cat.jpg", other, "jpg"
    )
    renamed = ThumbnailSpec(name="tiny", width=200, height=200)
    assert "cat.tiny." in thumbnail_name("photos/cat.jpg", renamed, "jpg")


@pytest.mark.parametrize(
    ("source", "expected_prefix"),
    [
        ("cat.jpg", "thumbs/cat.small."),
        ("photos/2024/cat.tar.gz", "photos/2024/thumbs/cat.tar.small."),
        ("photos/noext", "photos/thumbs/noext.small."),
    ],
)
def test_thumbnail_name_layout(source, expected_prefix):
    name = thumbnail_name(source, SMALL, "png")
    assert name.startswith(expected_prefix)
    assert name.endswith(".png")


# ---------------------------------------------------------------------------
# thumbnail() without a record
# ---------------------------------------------------------------------------


def test_placeholder_when_no_record():
    photo = saved_photo()
    result = thumbnail(photo.image, "small")
    assert isinstance(result, Placeholder)
    assert not result
    assert (result.width, result.height) == (200, 200)
    assert result.url == "/static/async_image_save/placeholder.svg"
    assert result.url == placeholder_url()


def test_placeholder_when_field_empty():
    photo = Photo.objects.create(title="empty")
    result = thumbnail(photo.image, "medium")
    assert not result
    assert (result.width, result.height) == (800, 800)


def test_placeholder_url_setting(settings):
    settings.ASYNC_IMAGE_SAVE_PLACEHOLDER_URL = "https://cdn.example.com/wait.png"
    photo = Photo.objects.create(title="empty")
    assert thumbnail(photo.image, "small").url == "https://cdn.example.com/wait.png"


def test_unknown_spec_names_known_ones():
    photo = saved_photo()
    with pytest.raises(ValueError) as info:
        thumbnail(photo.image, "huge")
    message = str(info.value)
    assert "'huge'" in message
    assert "tests.Photo.image" in message
    assert "['medium', 'small']" in message


def test_unknown_spec_on_field_without_specs():
    document = Document.objects.create()
    with pytest.raises(ValueError, match="known specs: none"):
        thumbnail(document.attachment, "small")


@pytest.mark.parametrize("value", ["photos/cat.jpg", None, ContentFile(b"x", name="a.jpg")])
def test_type_error_for_non_field_file(value):
    with pytest.raises(TypeError, match="FieldFile"):
        thumbnail(value, "small")


# ---------------------------------------------------------------------------
# generate_thumbnails and lookup
# ---------------------------------------------------------------------------


def test_field_specs_by_field_type(settings):
    settings.ASYNC_IMAGE_SAVE_THUMBNAILS = {}
    assert {s.name for s in field_specs(Photo(), "image")} == {"small", "medium"}
    assert {s.name for s in field_specs(Document(), "cover")} == {"small", "medium"}
    assert field_specs(Document(), "attachment") == []


def test_generate_thumbnails_records_and_files(media_root):
    photo = saved_photo("cat.jpg", (320, 240))
    records = generate_thumbnails(photo, "image")
    assert sorted(r.spec for r in records) == ["medium", "small"]
    for record in records:
        path = media_root / record.name
        assert path.is_file()
        with Image.open(path) as image:
            assert image.size == (record.width, record.height)
        assert record.size == path.stat().st_size
        assert record.source_name == photo.image.name
        assert record.object_id == str(photo.pk)
        assert record.field_name == "image"
        assert record.content_type.model_class() is Photo
    sizes = {r.spec: (r.width, r.height) for r in records}
    assert sizes == {"small": (200, 150), "medium": (320, 240)}


def test_generate_thumbnails_again_replaces_in_place(media_root):
    photo = saved_photo()
    first = {r.spec: r.name for r in generate_thumbnails(photo, "image")}
    second = {r.spec: r.name for r in generate_thumbnails(photo, "image")}
    assert first == second
    assert Thumbnail.objects.filter(source_name=photo.image.name).count() == 2
    thumbs_dir = media_root / "photos" / "thumbs"
    assert len(os.listdir(thumbs_dir)) == 2


def test_generate_thumbnails_nothing_to_do():
    assert generate_thumbnails(Photo.objects.create(), "image") == []
    document = Document.objects.create()
    document.attachment.save("notes.txt", ContentFile(b"hello"))
    assert generate_thumbnails(document, "attachment") == []
    assert Thumbnail.objects.count() == 0


def test_generate_thumbnails_calls_on_recorded_once_even_with_nothing_to_do():
    calls = []
    assert (
        generate_thumbnails(Photo.objects.create(), "image", on_recorded=lambda: calls.append(1))
        == []
    )
    assert calls == [1]


def test_generate_thumbnails_on_recorded_sees_every_record():
    photo = saved_photo()
    seen = []

    def on_recorded():
        seen.append(
            sorted(
                Thumbnail.objects.filter(source_name=photo.image.name).values_list(
                    "spec", flat=True
                )
            )
        )

    generate_thumbnails(photo, "image", on_recorded=on_recorded)
    assert seen == [["medium", "small"]]


@pytest.mark.django_db(transaction=True)
def test_records_and_on_recorded_commit_together(media_root):
    """A failure in the callback (the job's move to done) leaves no record behind."""
    photo = saved_photo()

    def fail():
        raise RuntimeError("the job's UPDATE failed")

    with pytest.raises(RuntimeError, match="UPDATE failed"):
        generate_thumbnails(photo, "image", on_recorded=fail)
    assert Thumbnail.objects.filter(source_name=photo.image.name).count() == 0
    # The files are written before the transaction; a second run replaces them in place.
    records = generate_thumbnails(photo, "image")
    assert len(records) == 2
    assert len(os.listdir(media_root / "photos" / "thumbs")) == 2


def test_generate_thumbnails_disabled_per_field(settings):
    settings.ASYNC_IMAGE_SAVE_THUMBNAILS = {"tests.Photo.image": {}}
    photo = saved_photo()
    assert generate_thumbnails(photo, "image") == []


def test_thumbnail_after_generation_uses_record_only(storage_calls):
    photo = saved_photo("dog.jpg", (320, 240))
    records = {r.spec: r for r in generate_thumbnails(photo, "image")}
    storage_calls.clear()
    result = thumbnail(photo.image, "small")
    assert isinstance(result, ThumbnailFile)
    assert result
    assert result.name == records["small"].name
    assert result.url == "/media/" + records["small"].name
    assert (result.width, result.height) == (200, 150)
    assert result.size == records["small"].size
    assert storage_calls["exists"] == storage_calls["size"] == 0
    assert storage_calls["open"] == storage_calls["_open"] == 0
    assert storage_calls["url"] == 1


def test_fresh_instance_finds_thumbnail(storage_calls):
    photo = saved_photo("owl.jpg")
    generate_thumbnails(photo, "image")
    storage_calls.clear()
    fresh = Photo.objects.get(pk=photo.pk)
    result = thumbnail(fresh.image, "medium")
    assert result
    assert (result.width, result.height) == (320, 240)
    assert (
        sum(storage_calls[m] for m in ("exists", "size", "open", "_open", "path", "listdir")) == 0
    )


def test_fifty_thumbnails_make_no_storage_calls(storage_calls, django_assert_num_queries):
    for index in range(50):
        generate_thumbnails(saved_photo(f"p{index}.jpg", (64, 48)), "image")
    photos = list(Photo.objects.order_by("pk"))
    assert len(photos) == 50
    storage_calls.clear()
    with django_assert_num_queries(50):
        results = [thumbnail(photo.image, "small") for photo in photos]
    assert all(results)
    assert all((r.width, r.height) == (64, 48) for r in results)
    assert len({r.url for r in results}) == 50
    assert storage_calls["exists"] == storage_calls["size"] == 0
    assert storage_calls["open"] == storage_calls["_open"] == 0
    assert storage_calls["url"] == 50


def test_note_without_file_field_cannot_be_thumbnailed():
    note = Note.objects.create(text="x")
    with pytest.raises(TypeError):
        thumbnail(note.text, "small")


def test_changed_spec_shows_placeholder_until_regenerated(settings):
    photo = saved_photo("fox.jpg", (320, 240))
    generate_thumbnails(photo, "image")
    assert thumbnail(photo.image, "small")
    settings.ASYNC_IMAGE_SAVE_DEFAULT_THUMBNAILS = {"small": {"size": (100, 100)}}
    stale = thumbnail(photo.image, "small")
    assert not stale
    assert (stale.width, stale.height) == (100, 100)
    [record] = generate_thumbnails(photo, "image")
    fresh = thumbnail(photo.image, "small")
    assert fresh
    assert (fresh.width, fresh.height) == (100, 75)
    assert fresh.name == record.name
