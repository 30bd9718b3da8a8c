"""Thumbnails go with their source: object deleted or image replaced, on commit."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from django.core.files.base import ContentFile
from django.db import transaction

from async_image_save.generation import generate_thumbnails
from async_image_save.models import Thumbnail
from async_image_save.thumbnails import thumbnail
from tests.conftest import ROOT, jpeg_bytes
from tests.models import Photo


def photo_with_thumbnails(name="clean.jpg") -> Photo:
    photo = Photo.objects.create()
    photo.image.save(name, ContentFile(jpeg_bytes(900, 600)))
    generate_thumbnails(photo, "image")
    return photo


@pytest.mark.django_db(transaction=True)
def test_deleting_the_object_removes_thumbnail_files_and_records_on_commit():
    photo = photo_with_thumbnails()
    storage = photo.image.storage
    names = list(Thumbnail.objects.values_list("name", flat=True))
    assert len(names) == 2 and all(storage.exists(n) for n in names)
    assert thumbnail(photo.image, "small")  # cached as present
    with transaction.atomic():
        Photo.objects.filter(pk=photo.pk).delete()
        assert all(storage.exists(n) for n in names)  # not before commit
    assert not any(storage.exists(n) for n in names)
    assert not Thumbnail.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_delete_removes_nothing():
    photo = photo_with_thumbnails("kept.jpg")
    names = list(Thumbnail.objects.values_list("name", flat=True))
    with pytest.raises(RuntimeError), transaction.atomic():
        photo.delete()
        raise RuntimeError("roll back")
    assert all(photo.image.storage.exists(n) for n in names)
    assert Thumbnail.objects.count() == 2


@pytest.mark.django_db
def test_missing_thumbnails_are_queued_once(monkeypatch, django_capture_on_commit_callbacks):
    from async_image_save import tasks

    sent = []
    monkeypatch.setattr(
        tasks.regenerate_thumbnails, "apply_async", lambda args, **kw: sent.append(args)
    )
    photo = Photo.objects.create()
    photo.image.save("never-made.jpg", ContentFile(jpeg_bytes(300, 200)))  # no job, no thumbs
    with django_capture_on_commit_callbacks(execute=True):
        for _ in range(5):
            assert not thumbnail(photo.image, "small")
            assert not thumbnail(photo.image, "medium")
    assert sent == [("tests.Photo", str(photo.pk), "image")]


@pytest.mark.django_db
def test_sync_thumbnails_setting_makes_them_in_the_request(settings):
    settings.ASYNC_IMAGE_SAVE_SYNC_THUMBNAILS = True
    photo = Photo.objects.create()
    photo.image.save("sync.jpg", ContentFile(jpeg_bytes(300, 200)))
    thumb = thumbnail(photo.image, "small")
    assert thumb and (thumb.width, thumb.height) == (200, 133)


def test_works_beside_django_cleanup(tmp_path):
    pytest.importorskip("django_cleanup")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIS_")}
    env.update(
        DJANGO_SETTINGS_MODULE="tests.settings_cleanup",
        PYTHONPATH=str(ROOT),
        AIS_DB="sqlite",
        AIS_SQLITE_PATH=str(tmp_path / "db.sqlite3"),
        AIS_TEST_TMP=str(tmp_path),
        AIS_MEDIA_ROOT=str(tmp_path / "media"),
        AIS_BROKER_URL="memory://",
    )
    result = subprocess.run(
        [sys.executable, "-m", "tests.cleanup_scenario"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    facts = json.loads(result.stdout.strip().splitlines()[-1])
    assert facts["apps"] == ["django_cleanup.apps.CleanupConfig"]
    assert len(facts["after_first"]) == 3  # original + two thumbnails
    # Replaced: django-cleanup removed the old original, we removed its thumbnails.
    assert not any("first" in name for name in facts["after_replace"])
    assert len(facts["after_replace"]) == 3
    assert facts["records_after_replace"] and all(
        "second" in n for n in facts["records_after_replace"]
    )
    assert facts["after_delete"] == []
    assert facts["records_after_delete"] == 0


# --- a replacement saved without a job (plain ModelForm, instance.save()) -----------------


def thumbnail_files(photo: Photo) -> list[str]:
    return sorted(
        Thumbnail.objects.filter(source_name=photo.image.name).values_list("name", flat=True)
    )


@pytest.mark.django_db(transaction=True)
def test_a_plain_model_form_replacing_the_image_removes_the_old_thumbnails_on_commit():
    from django import forms
    from django.core.files.uploadedfile import SimpleUploadedFile

    class PhotoForm(forms.ModelForm):
        class Meta:
            model = Photo
            fields = ["title", "image"]

    photo = photo_with_thumbnails("before.jpg")
    storage, old_names = photo.image.storage, thumbnail_files(photo)
    assert len(old_names) == 2
    loaded = Photo.objects.get(pk=photo.pk)  # as a view would load it
    upload = SimpleUploadedFile("after.jpg", jpeg_bytes(400, 300), "image/jpeg")
    form = PhotoForm({"title": "new"}, {"image": upload}, instance=loaded)
    assert form.is_valid(), form.errors
    with transaction.atomic():
        saved = form.save()
        assert all(storage.exists(n) for n in old_names)  # not before commit
    assert saved.image.name.startswith("photos/after")
    assert not any(storage.exists(n) for n in old_names)
    assert not Thumbnail.objects.filter(name__in=old_names).exists()


@pytest.mark.django_db(transaction=True)
def test_replacing_or_clearing_through_instance_save_removes_the_old_thumbnails():
    photo = photo_with_thumbnails("one.jpg")
    first = thumbnail_files(photo)
    photo.image.save("two.jpg", ContentFile(jpeg_bytes(300, 200)))  # saves the instance
    assert not Thumbnail.objects.filter(name__in=first).exists()
    generate_thumbnails(photo, "image")
    second = thumbnail_files(photo)
    assert len(second) == 2
    photo.image = None
    photo.save()
    assert not Thumbnail.objects.filter(name__in=second).exists()
    assert not any(photo._meta.get_field("image").storage.exists(n) for n in first + second)


@pytest.mark.django_db(transaction=True)
def test_saves_that_do_not_replace_the_image_keep_its_thumbnails():
    photo = photo_with_thumbnails("kept-too.jpg")
    names = thumbnail_files(photo)
    photo.title = "renamed"
    photo.save()
    other = Photo.objects.get(pk=photo.pk)
    other.image = "photos/elsewhere.jpg"
    other.title = "only the title is saved"
    other.save(update_fields=["title"])
    deferred = Photo.objects.only("title").get(pk=photo.pk)  # image not loaded
    deferred.title = "deferred"
    deferred.save()
    assert Thumbnail.objects.filter(name__in=names).count() == 2


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_replacement_removes_nothing():
    photo = photo_with_thumbnails("stays.jpg")
    names = thumbnail_files(photo)
    with pytest.raises(RuntimeError), transaction.atomic():
        photo.image = "photos/other.jpg"
        photo.save()
        raise RuntimeError("roll back")
    assert Thumbnail.objects.filter(name__in=names).count() == 2
    assert all(photo.image.storage.exists(n) for n in names)
