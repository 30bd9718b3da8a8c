"""AsyncImageForm: uploads leave the request as jobs; validation and clearing stay Django's."""

from __future__ import annotations

import os

import pytest
from django import forms
from django.contrib.auth.models import AnonymousUser, User
from django.contrib.sessions.backends.db import SessionStore
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import RequestFactory

from async_image_save.forms import AsyncImageForm
from async_image_save.models import ImageJob, Thumbnail
from async_image_save.testing import make_image_file, run_jobs_eagerly
from async_image_save.views import SESSION_KEY
from tests.conftest import wait_for_job
from tests.models import Gallery, Photo, SizedPhoto


class PhotoForm(AsyncImageForm, forms.ModelForm):
    class Meta:
        model = Photo
        fields = ["title", "image"]


class GalleryForm(AsyncImageForm, forms.ModelForm):
    class Meta:
        model = Gallery
        fields = ["title", "cover", "banner"]


class CoverOnlyGalleryForm(GalleryForm):
    async_image_fields = ("cover",)


class SizedPhotoForm(AsyncImageForm, forms.ModelForm):
    class Meta:
        model = SizedPhoto
        fields = ["image"]


def files_under(root: str) -> list[str]:
    found = []
    for base, _dirs, names in os.walk(root):
        found += [os.path.relpath(os.path.join(base, n), root) for n in names]
    return sorted(found)


def image_and_bytes(name: str, **kwargs) -> tuple[SimpleUploadedFile, bytes]:
    upload = make_image_file(name, **kwargs)
    data = upload.read()
    upload.seek(0)
    return upload, data


def read_field(field_file) -> bytes:
    with field_file.storage.open(field_file.name, "rb") as fh:
        return fh.read()


@pytest.fixture
def media(settings, tmp_path):
    """A private MEDIA_ROOT, so "no new file" means exactly that."""
    settings.MEDIA_ROOT = str(tmp_path / "media")
    os.makedirs(settings.MEDIA_ROOT)
    return settings.MEDIA_ROOT


def photo_with_image(name: str = "old.jpg", size=(40, 30)) -> Photo:
    photo = Photo.objects.create(title="existing")
    photo.image.save(name, ContentFile(make_image_file(name, size=size).read()), save=True)
    return photo


# ---------------------------------------------------------------------------
# unit level (jobs captured or run eagerly at commit)
# ---------------------------------------------------------------------------

pytestmark = pytest.mark.django_db


def test_save_writes_no_bytes_and_returns_the_job(media, django_capture_on_commit_callbacks):
    upload = make_image_file("cat.jpg", size=(64, 48))
    form = PhotoForm(data={"title": "cat"}, files={"image": upload})
    assert form.is_valid(), form.errors
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        photo = form.save()
    assert files_under(media) == []
    stored = Photo.objects.get(pk=photo.pk)
    assert stored.title == "cat"
    assert stored.image.name == ""
    assert set(form.image_jobs) == {"image"}
    job = form.image_jobs["image"]
    assert ImageJob.objects.get(pk=job.pk).state == ImageJob.State.PENDING
    assert (job.object_id, job.field_name, job.source_name) == (str(photo.pk), "image", "cat.jpg")
    upload.seek(0)
    assert job.size == len(upload.read())
    assert job.sha256 == ""  # hashed by the send, after the commit
    assert len(callbacks) == 1  # the publish waits for the commit


def test_eager_save_stores_the_uploaded_bytes(media, django_capture_on_commit_callbacks):
    upload, data = image_and_bytes("cat.png", size=(30, 20))
    form = PhotoForm(data={"title": "t"}, files={"image": upload})
    assert form.is_valid(), form.errors
    with run_jobs_eagerly(), django_capture_on_commit_callbacks(execute=True):
        photo = form.save()
    photo.refresh_from_db()
    assert photo.image.name.startswith("photos/cat")
    assert read_field(photo.image) == data
    job = ImageJob.objects.get(pk=form.image_jobs["image"].pk)
    assert job.state == ImageJob.State.DONE
    assert Thumbnail.objects.filter(source_name=photo.image.name).count() == 2


def test_commit_false_offloads_only_at_save_m2m(media, django_capture_on_commit_callbacks):
    form = PhotoForm(data={"title": "later"}, files={"image": make_image_file("l.jpg")})
    assert form.is_valid(), form.errors
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        photo = form.save(commit=False)
        assert photo.pk is None
        assert form.image_jobs == {}
        photo.title = "edited before saving"
        photo.save()
        assert form.image_jobs == {}
        assert not ImageJob.objects.exists()
        assert len(callbacks) == 0
        form.save_m2m()
    assert set(form.image_jobs) == {"image"}
    assert ImageJob.objects.get().object_id == str(photo.pk)
    assert len(callbacks) == 1
    assert files_under(media) == []
    assert Photo.objects.get(pk=photo.pk).image.name == ""


def test_several_image_fields_each_get_a_job(media, django_capture_on_commit_callbacks):
    cover, cover_bytes = image_and_bytes("cover.jpg")
    banner, banner_bytes = image_and_bytes("banner.png", size=(90, 30))
    form = GalleryForm(data={"title": "g"}, files={"cover": cover, "banner": banner})
    assert form.is_valid(), form.errors
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        gallery = form.save()
    assert files_under(media) == []
    assert {n: j.field_name for n, j in form.image_jobs.items()} == {
        "cover": "cover",
        "banner": "banner",
    }
    assert ImageJob.objects.filter(object_id=str(gallery.pk)).count() == 2
    assert len(callbacks) == 2

    with run_jobs_eagerly():
        for callback in callbacks:
            callback()
    gallery.refresh_from_db()
    assert gallery.cover.name.startswith("gallery/covers/cover")
    assert gallery.banner.name.startswith("gallery/banners/banner")
    assert read_field(gallery.cover) == cover_bytes
    assert read_field(gallery.banner) == banner_bytes
    assert {j.state for j in ImageJob.objects.filter(object_id=str(gallery.pk))} == {"done"}


def test_async_image_fields_limits_what_is_offloaded(media, django_capture_on_commit_callbacks):
    form = CoverOnlyGalleryForm(
        data={"title": "g"},
        files={"cover": make_image_file("cover.jpg"), "banner": make_image_file("banner.jpg")},
    )
    assert form.is_valid(), form.errors
    with django_capture_on_commit_callbacks(execute=False):
        gallery = form.save()
    gallery.refresh_from_db()
    assert set(form.image_jobs) == {"cover"}
    assert gallery.cover.name == ""
    assert gallery.banner.name.startswith("gallery/banners/banner")  # saved by Django, in-request
    assert files_under(media) == [gallery.banner.name]


def test_replacing_keeps_the_old_file_until_the_worker_saves(
    media, django_capture_on_commit_callbacks
):
    photo = photo_with_image("old.jpg")
    old_name = photo.image.name
    new_upload, new_bytes = image_and_bytes("new.jpg", size=(64, 48), color=(0, 0, 255))

    form = PhotoForm(data={"title": "existing"}, files={"image": new_upload}, instance=photo)
    assert form.is_valid(), form.errors
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        form.save()
    assert Photo.objects.get(pk=photo.pk).image.name == old_name
    assert files_under(media) == [old_name]
    assert len(callbacks) == 1

    with run_jobs_eagerly():
        callbacks[0]()  # what the commit would run
    photo.refresh_from_db()
    assert photo.image.name != old_name
    assert photo.image.name.startswith("photos/new")
    assert read_field(photo.image) == new_bytes
    assert ImageJob.objects.get(pk=form.image_jobs["image"].pk).state == "done"


def test_replacing_with_eager_jobs_has_the_new_file_after_commit(
    media, django_capture_on_commit_callbacks
):
    photo = photo_with_image("old.jpg")
    old_name = photo.image.name
    form = PhotoForm(
        data={"title": "x"}, files={"image": make_image_file("fresh.jpg")}, instance=photo
    )
    assert form.is_valid(), form.errors
    with run_jobs_eagerly(), django_capture_on_commit_callbacks(execute=True):
        form.save()
        assert Photo.objects.get(pk=photo.pk).image.name == old_name  # before the commit
    photo.refresh_from_db()
    assert photo.image.name.startswith("photos/fresh")
    assert photo.image.storage.exists(photo.image.name)


def test_clear_checkbox_clears_synchronously(media, django_capture_on_commit_callbacks):
    photo = photo_with_image("old.jpg")
    form = PhotoForm(data={"title": "existing", "image-clear": "on"}, instance=photo)
    assert form.is_valid(), form.errors
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        form.save()
    assert Photo.objects.get(pk=photo.pk).image.name == ""
    assert form.image_jobs == {}
    assert not ImageJob.objects.exists()
    # Nothing is published; the only callback deletes the cleared image's thumbnails.
    assert [cb.__qualname__.split(".")[0] for cb in callbacks] == ["delete_thumbnails_on_commit"]


def test_form_without_upload_keeps_the_image(media, django_capture_on_commit_callbacks):
    photo = photo_with_image("keep.jpg")
    form = PhotoForm(data={"title": "renamed"}, instance=photo)
    assert form.is_valid(), form.errors
    with django_capture_on_commit_callbacks(execute=False):
        form.save()
    photo.refresh_from_db()
    assert (photo.title, photo.image.name.startswith("photos/keep")) == ("renamed", True)
    assert form.image_jobs == {}


def test_non_image_upload_gets_djangos_error_and_no_job(media):
    upload = SimpleUploadedFile("fake.jpg", b"this is not an image", "image/jpeg")
    form = PhotoForm(data={"title": "x"}, files={"image": upload})
    assert not form.is_valid()
    assert form.errors["image"] == [forms.ImageField.default_error_messages["invalid_image"]]
    assert form.image_jobs == {}
    assert form._pending_uploads == {}
    assert not ImageJob.objects.exists()
    assert files_under(media) == []


def test_request_with_user_sets_owner_and_remembers_job(media, django_capture_on_commit_callbacks):
    user = User.objects.create_user("alice", password="pw")
    request = RequestFactory().post("/upload/")
    request.user = user
    request.session = SessionStore()
    form = PhotoForm(data={}, files={"image": make_image_file()}, request=request)
    assert form.is_valid(), form.errors
    with django_capture_on_commit_callbacks(execute=False):
        form.save()
    job = form.image_jobs["image"]
    assert ImageJob.objects.get(pk=job.pk).owner_id == user.pk
    assert request.session[SESSION_KEY] == [job.pk.hex]


def test_anonymous_request_has_no_owner_but_session_remembers(
    media, django_capture_on_commit_callbacks
):
    request = RequestFactory().post("/upload/")
    request.user = AnonymousUser()
    request.session = SessionStore()
    request.session[SESSION_KEY] = ["f" * 32]
    form = PhotoForm(data={}, files={"image": make_image_file()}, request=request)
    assert form.is_valid(), form.errors
    with django_capture_on_commit_callbacks(execute=False):
        form.save()
    job = ImageJob.objects.get(pk=form.image_jobs["image"].pk)
    assert job.owner_id is None
    assert request.session[SESSION_KEY] == ["f" * 32, job.pk.hex]


def test_user_kwarg_without_request_sets_owner(media, django_capture_on_commit_callbacks):
    user = User.objects.create_user("bob", password="pw")
    form = PhotoForm(data={}, files={"image": make_image_file()}, user=user)
    assert form.is_valid(), form.errors
    with django_capture_on_commit_callbacks(execute=False):
        form.save()
    assert ImageJob.objects.get(pk=form.image_jobs["image"].pk).owner == user


def test_dimension_fields_stay_with_the_old_image_until_the_worker_saves(
    media, django_capture_on_commit_callbacks
):
    """Regression: the request's row must never pair the old file with the new size."""
    sized = SizedPhoto.objects.create()
    sized.image.save("old.jpg", ContentFile(make_image_file(size=(40, 30)).read()), save=True)
    sized.refresh_from_db()
    assert (sized.image_width, sized.image_height) == (40, 30)
    form = SizedPhotoForm(
        files={"image": make_image_file("new.jpg", size=(64, 48))}, instance=sized
    )
    assert form.is_valid(), form.errors
    with django_capture_on_commit_callbacks(execute=False):
        form.save()
    row = SizedPhoto.objects.get(pk=sized.pk)
    assert row.image.name == sized.image.name
    assert (row.image_width, row.image_height) == (40, 30)


def test_new_instance_gets_no_dimensions_before_the_worker_saves(
    media, django_capture_on_commit_callbacks
):
    form = SizedPhotoForm(files={"image": make_image_file("new.jpg", size=(64, 48))})
    assert form.is_valid(), form.errors
    with django_capture_on_commit_callbacks(execute=False):
        sized = form.save()
    row = SizedPhoto.objects.get(pk=sized.pk)
    assert (row.image.name, row.image_width, row.image_height) == ("", None, None)


def test_dimension_fields_match_the_new_image_once_saved(media, django_capture_on_commit_callbacks):
    sized = SizedPhoto.objects.create()
    form = SizedPhotoForm(
        files={"image": make_image_file("new.jpg", size=(64, 48))}, instance=sized
    )
    assert form.is_valid(), form.errors
    with run_jobs_eagerly(), django_capture_on_commit_callbacks(execute=True):
        form.save()
    row = SizedPhoto.objects.get(pk=sized.pk)
    assert row.image.name.startswith("sized/new")
    assert (row.image_width, row.image_height) == (64, 48)


# ---------------------------------------------------------------------------
# end to end through the real worker
# ---------------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_e2e_form_save_then_worker_saves_the_bytes(celery_worker):
    upload, data = image_and_bytes("e2e-form.jpg", size=(320, 240))
    form = PhotoForm(data={"title": "e2e"}, files={"image": upload})
    assert form.is_valid(), form.errors
    photo = form.save()
    assert Photo.objects.get(pk=photo.pk).image.name == ""
    job = wait_for_job(form.image_jobs["image"].pk)
    assert job.state == "done", (job.error_code, job.error, celery_worker.log_tail())
    photo.refresh_from_db()
    assert photo.image.name == job.saved_name
    assert read_field(photo.image) == data
    assert {t.spec for t in Thumbnail.objects.filter(source_name=photo.image.name)} == {
        "small",
        "medium",
    }
