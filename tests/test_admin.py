"""The admin: offloaded uploads in change forms, the two actions, and the read-only job admin."""

from __future__ import annotations

import os
import time

import pytest
from django.contrib.auth.models import Permission, User
from django.contrib.contenttypes.models import ContentType
from django.contrib.messages import constants as message_levels
from django.core.files.base import ContentFile

from async_image_save import tasks
from async_image_save.models import ImageJob, Thumbnail
from async_image_save.testing import make_image_file, run_jobs_eagerly
from async_image_save.views import SESSION_KEY
from tests.conftest import wait_for_job
from tests.models import Gallery, Photo

PHOTO_ADD = "/admin/tests/photo/add/"
PHOTO_LIST = "/admin/tests/photo/"
GALLERY_LIST = "/admin/tests/gallery/"
JOB_LIST = "/admin/async_image_save/imagejob/"


def photo_change(pk) -> str:
    return f"/admin/tests/photo/{pk}/change/"


def job_change(pk) -> str:
    return f"{JOB_LIST}{pk}/change/"


def files_under(root: str) -> list[str]:
    found = []
    for base, _dirs, names in os.walk(root):
        found += [os.path.relpath(os.path.join(base, n), root) for n in names]
    return sorted(found)


def messages_of(response) -> list[tuple[int, str]]:
    return [(m.level, str(m)) for m in response.context["messages"]]


def photo_with_image(name: str = "admin.jpg", size=(64, 48)) -> Photo:
    photo = Photo.objects.create(title=name)
    photo.image.save(name, ContentFile(make_image_file(name, size=size).read()), save=True)
    return photo


def make_job(photo=None, **fields) -> ImageJob:
    photo = photo or Photo.objects.create()
    values = {
        "content_type": ContentType.objects.get_for_model(Photo),
        "object_id": str(photo.pk),
        "field_name": "image",
        "source_name": "job.jpg",
        "size": 10,
        "sha256": "0" * 64,
        **fields,
    }
    return ImageJob.objects.create(**values)


@pytest.fixture
def media(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    os.makedirs(settings.MEDIA_ROOT)
    return settings.MEDIA_ROOT


@pytest.fixture
def sent_thumbnails(monkeypatch):
    """Record publish_thumbnails() calls instead of sending them."""
    sent = []
    monkeypatch.setattr(tasks, "publish_thumbnails", lambda job_id, queue: sent.append(job_id))
    return sent


# ---------------------------------------------------------------------------
# AsyncImageAdminMixin
# ---------------------------------------------------------------------------


@pytest.mark.django_db
class TestModelAdminMixin:
    def test_add_view_upload_creates_a_job_and_writes_nothing(
        self, admin_client, admin_user, media, django_capture_on_commit_callbacks
    ):
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            response = admin_client.post(
                PHOTO_ADD, {"title": "via admin", "image": make_image_file("adm.jpg")}
            )
        assert response.status_code == 302, response.content[:2000]
        photo = Photo.objects.get(title="via admin")
        assert photo.image.name == ""
        assert files_under(media) == []
        job = ImageJob.objects.get()
        assert (job.object_id, job.field_name, job.source_name) == (
            str(photo.pk),
            "image",
            "adm.jpg",
        )
        assert job.owner_id == admin_user.pk
        assert admin_client.session[SESSION_KEY] == [job.pk.hex]
        assert len(callbacks) == 1

    def test_add_view_upload_is_saved_when_jobs_run(
        self, admin_client, media, django_capture_on_commit_callbacks
    ):
        upload = make_image_file("eager.png", size=(50, 40))
        data = upload.read()
        upload.seek(0)
        with run_jobs_eagerly(), django_capture_on_commit_callbacks(execute=True):
            response = admin_client.post(PHOTO_ADD, {"title": "eager", "image": upload})
        assert response.status_code == 302
        photo = Photo.objects.get(title="eager")
        assert photo.image.name.startswith("photos/eager")
        with photo.image.open("rb") as fh:
            assert fh.read() == data
        assert ImageJob.objects.get().state == "done"

    def test_add_view_rejects_a_non_image(self, admin_client, media):
        from django.core.files.uploadedfile import SimpleUploadedFile

        bogus = SimpleUploadedFile("x.jpg", b"not an image", "image/jpeg")
        response = admin_client.post(PHOTO_ADD, {"title": "bad", "image": bogus})
        assert response.status_code == 200
        assert "Upload a valid image" in response.content.decode()
        assert not Photo.objects.exists()
        assert not ImageJob.objects.exists()

    def test_change_view_shows_image_processing_state(self, admin_client, media):
        photo = Photo.objects.create(title="p")
        make_job(photo, state=ImageJob.State.FAILED, error_code="not_an_image", error="nope")
        response = admin_client.get(photo_change(photo.pk))
        assert response.status_code == 200
        html = response.content.decode()
        assert "Image processing" in html
        assert "<b>image</b>: failed — not_an_image: nope" in html

    def test_change_view_without_job_says_so(self, admin_client, media):
        photo = Photo.objects.create(title="p")
        html = admin_client.get(photo_change(photo.pk)).content.decode()
        assert "<b>image</b>: no job" in html

    def test_change_view_shows_the_thumbnail_once_done(
        self, admin_client, media, django_capture_on_commit_callbacks
    ):
        photo = Photo.objects.create(title="t")
        with run_jobs_eagerly(), django_capture_on_commit_callbacks(execute=True):
            admin_client.post(
                photo_change(photo.pk),
                {"title": "t", "image": make_image_file("shown.jpg", size=(400, 300))},
            )
        photo.refresh_from_db()
        small = Thumbnail.objects.get(source_name=photo.image.name, spec="small")
        html = admin_client.get(photo_change(photo.pk)).content.decode()
        assert "<b>image</b>: done" in html
        assert f'<img src="/media/{small.name}" width="200" height="150"' in html

    def test_add_form_has_no_status_field(self, admin_client):
        html = admin_client.get(PHOTO_ADD).content.decode()
        assert "Image processing" not in html

    def test_resave_images_action_queues_a_new_job_per_image(
        self, admin_client, admin_user, media, django_capture_on_commit_callbacks
    ):
        photo = photo_with_image("again.jpg")
        empty = Photo.objects.create(title="no image")
        old_name = photo.image.name
        with run_jobs_eagerly(), django_capture_on_commit_callbacks(execute=True):
            response = admin_client.post(
                PHOTO_LIST,
                {"action": "resave_images", "_selected_action": [photo.pk, empty.pk]},
                follow=True,
            )
        assert (message_levels.SUCCESS, "1 image queued to be saved again.") in messages_of(
            response
        )
        job = ImageJob.objects.get()
        assert (job.object_id, job.state, job.owner_id) == (str(photo.pk), "done", admin_user.pk)
        assert job.source_name == os.path.basename(old_name)
        photo.refresh_from_db()
        assert photo.image.name == job.saved_name
        with photo.image.open("rb") as new, photo.image.storage.open(old_name, "rb") as old:
            assert new.read() == old.read()
        assert Thumbnail.objects.filter(source_name=photo.image.name).count() == 2

    def test_resave_respects_async_image_fields(
        self, admin_client, media, django_capture_on_commit_callbacks
    ):
        gallery = Gallery.objects.create()
        gallery.cover.save("c.jpg", ContentFile(make_image_file().read()), save=False)
        gallery.banner.save("b.jpg", ContentFile(make_image_file().read()), save=True)
        with django_capture_on_commit_callbacks(execute=False):
            response = admin_client.post(
                GALLERY_LIST,
                {"action": "resave_images", "_selected_action": [gallery.pk]},
                follow=True,
            )
        assert "1 image queued to be saved again." in [m for _, m in messages_of(response)]
        assert list(ImageJob.objects.values_list("field_name", flat=True)) == ["cover"]

    def test_resave_skips_an_object_whose_file_is_missing(
        self, admin_client, media, django_capture_on_commit_callbacks
    ):
        """Regression: one missing file made the whole action a 500."""
        present = photo_with_image("present.jpg")
        missing = Photo.objects.create(title="missing", image="photos/missing.jpg")
        with django_capture_on_commit_callbacks(execute=False):
            response = admin_client.post(
                PHOTO_LIST,
                {"action": "resave_images", "_selected_action": [present.pk, missing.pk]},
                follow=True,
            )
        assert response.status_code == 200
        assert list(ImageJob.objects.values_list("object_id", flat=True)) == [str(present.pk)]
        msgs = messages_of(response)
        assert any(
            level == message_levels.WARNING and "photos/missing.jpg was not re-saved" in text
            for level, text in msgs
        )
        assert (message_levels.SUCCESS, "1 image queued to be saved again.") in msgs

    def test_regenerate_thumbnails_action_sends_one_task_per_image(
        self, admin_client, media, monkeypatch
    ):
        sent = []
        monkeypatch.setattr(
            tasks.regenerate_thumbnails,
            "apply_async",
            lambda args, **options: sent.append((args, options)),
        )
        photo = photo_with_image("regen.jpg")
        empty = Photo.objects.create()
        response = admin_client.post(
            PHOTO_LIST,
            {"action": "regenerate_thumbnails", "_selected_action": [photo.pk, empty.pk]},
            follow=True,
        )
        assert sent == [(("tests.Photo", str(photo.pk), "image"), {"serializer": "msgpack"})]
        assert (message_levels.SUCCESS, "1 image queued for new thumbnails.") in messages_of(
            response
        )

    def test_both_actions_are_offered(self, admin_client):
        Photo.objects.create()  # the admin shows no actions for an empty list
        html = admin_client.get(PHOTO_LIST).content.decode()
        assert 'value="resave_images"' in html
        assert 'value="regenerate_thumbnails"' in html


# ---------------------------------------------------------------------------
# ImageJobAdmin
# ---------------------------------------------------------------------------


@pytest.mark.django_db
class TestImageJobAdmin:
    def test_changelist_lists_jobs(self, admin_client):
        make_job(source_name="first.jpg")
        make_job(source_name="second.jpg", state=ImageJob.State.DONE)
        response = admin_client.get(JOB_LIST)
        assert response.status_code == 200
        html = response.content.decode()
        assert "first.jpg" in html and "second.jpg" in html

    def test_filter_by_state(self, admin_client):
        make_job(source_name="ok-one.jpg", state=ImageJob.State.DONE)
        make_job(source_name="broken-one.jpg", state=ImageJob.State.FAILED, error_code="x")
        response = admin_client.get(JOB_LIST, {"state__exact": "failed"})
        assert response.status_code == 200
        shown = [job.source_name for job in response.context["cl"].result_list]
        assert shown == ["broken-one.jpg"]

    def test_search_by_object_id(self, admin_client):
        target = Photo.objects.create()
        other = Photo.objects.create()
        make_job(target, source_name="target.jpg")
        make_job(other, source_name="other.jpg")
        response = admin_client.get(JOB_LIST, {"q": str(target.pk)})
        assert response.status_code == 200
        shown = {job.source_name for job in response.context["cl"].result_list}
        assert "target.jpg" in shown
        assert all(
            str(target.pk) in job.object_id or str(target.pk) in job.pk.hex
            for job in response.context["cl"].result_list
        )

    def test_search_by_job_id(self, admin_client):
        job = make_job(source_name="by-id.jpg")
        make_job(source_name="not-me.jpg")
        response = admin_client.get(JOB_LIST, {"q": str(job.pk)})
        assert response.status_code == 200
        assert [j.pk for j in response.context["cl"].result_list] == [job.pk]

    def test_add_is_not_permitted(self, admin_client):
        assert admin_client.get(f"{JOB_LIST}add/").status_code == 403
        html = admin_client.get(JOB_LIST).content.decode()
        assert f'href="{JOB_LIST}add/"' not in html

    def test_change_is_not_permitted(self, admin_client):
        job = make_job(source_name="ro.jpg")
        response = admin_client.get(job_change(job.pk))
        assert response.status_code == 200  # the read-only view
        assert 'name="_save"' not in response.content.decode()
        post = admin_client.post(job_change(job.pk), {"state": "done", "source_name": "x.jpg"})
        assert post.status_code == 403
        job.refresh_from_db()
        assert (job.state, job.source_name) == ("pending", "ro.jpg")

    def test_retry_failed_resends_a_saved_file_and_skips_a_lost_payload(
        self, admin_client, media, sent_thumbnails
    ):
        photo = photo_with_image("retry.jpg")
        saved = make_job(
            photo,
            source_name="retry.jpg",
            state=ImageJob.State.FAILED,
            error_code="thumbnail_error",
            error="OSError: disk full",
            saved_name=photo.image.name,
        )
        lost = make_job(
            source_name="lost.jpg",
            state=ImageJob.State.FAILED,
            error_code="message_lost",
            error="gone",
        )
        response = admin_client.post(
            JOB_LIST,
            {"action": "retry_failed", "_selected_action": [saved.pk, lost.pk]},
            follow=True,
        )
        msgs = messages_of(response)
        assert (message_levels.INFO, "1 job sent again.") in msgs
        warnings = [m for level, m in msgs if level == message_levels.WARNING]
        assert len(warnings) == 1
        assert warnings[0].startswith("Not retried: lost.jpg:")
        assert "bytes are gone" in warnings[0]
        saved.refresh_from_db()
        lost.refresh_from_db()
        assert (saved.state, saved.error_code, saved.error) == ("saved", "", "")
        assert sent_thumbnails == [saved.pk.hex]
        assert (lost.state, lost.error_code) == ("failed", "message_lost")

    def test_retried_thumbnails_end_done(self, admin_client, media, monkeypatch):
        from async_image_save import processing

        monkeypatch.setattr(
            tasks, "publish_thumbnails", lambda job_id, queue: processing.make_thumbnails(job_id)
        )
        photo = photo_with_image("retry2.jpg", size=(400, 300))
        job = make_job(
            photo,
            state=ImageJob.State.FAILED,
            error_code="thumbnail_error",
            saved_name=photo.image.name,
        )
        admin_client.post(JOB_LIST, {"action": "retry_failed", "_selected_action": [job.pk]})
        job.refresh_from_db()
        assert job.state == "done"
        assert {t.spec: (t.width, t.height) for t in Thumbnail.objects.all()} == {
            "small": (200, 150),
            "medium": (400, 300),
        }

    def test_retry_skips_jobs_that_are_not_failed(self, admin_client, sent_thumbnails):
        job = make_job(state=ImageJob.State.DONE, saved_name="photos/x.jpg")
        response = admin_client.post(
            JOB_LIST, {"action": "retry_failed", "_selected_action": [job.pk]}, follow=True
        )
        assert [m for _, m in messages_of(response)] == [
            "Not retried: job.jpg: the job is done, not failed"
        ]
        assert sent_thumbnails == []

    def test_staff_without_change_permission_gets_no_retry_action(self, client, sent_thumbnails):
        staff = User.objects.create_user("viewer", password="pw", is_staff=True)
        staff.user_permissions.add(
            Permission.objects.get(
                codename="view_imagejob", content_type__app_label="async_image_save"
            )
        )
        client.force_login(staff)
        job = make_job(
            source_name="keep-failed.jpg",
            state=ImageJob.State.FAILED,
            error_code="thumbnail_error",
            saved_name="photos/x.jpg",
        )
        response = client.get(JOB_LIST)
        assert response.status_code == 200
        assert "keep-failed.jpg" in response.content.decode()
        assert 'value="retry_failed"' not in response.content.decode()
        client.post(JOB_LIST, {"action": "retry_failed", "_selected_action": [job.pk]})
        job.refresh_from_db()
        assert job.state == "failed"
        assert sent_thumbnails == []

    def test_staff_with_change_permission_gets_the_retry_action(self, client):
        staff = User.objects.create_user("changer", password="pw", is_staff=True)
        staff.user_permissions.add(
            *Permission.objects.filter(
                codename__in=["view_imagejob", "change_imagejob"],
                content_type__app_label="async_image_save",
            )
        )
        client.force_login(staff)
        make_job(state=ImageJob.State.FAILED)
        assert 'value="retry_failed"' in client.get(JOB_LIST).content.decode()

    def test_superuser_sees_the_retry_action(self, admin_client):
        make_job(state=ImageJob.State.FAILED)
        assert 'value="retry_failed"' in admin_client.get(JOB_LIST).content.decode()


# ---------------------------------------------------------------------------
# end to end through the real worker
# ---------------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_e2e_admin_add_then_worker_saves(celery_worker, admin_client):
    upload = make_image_file("e2e-admin.jpg", size=(300, 200))
    data = upload.read()
    upload.seek(0)
    response = admin_client.post(PHOTO_ADD, {"title": "e2e admin", "image": upload})
    assert response.status_code == 302
    job = wait_for_job(ImageJob.objects.get().pk)
    assert job.state == "done", (job.error_code, job.error, celery_worker.log_tail())
    photo = Photo.objects.get(title="e2e admin")
    with photo.image.open("rb") as fh:
        assert fh.read() == data
    html = admin_client.get(photo_change(photo.pk)).content.decode()
    assert "<b>image</b>: done" in html


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_e2e_retry_failed_thumbnails_end_done(celery_worker, admin_client):
    photo = photo_with_image("e2e-retry.jpg", size=(300, 200))
    job = make_job(
        photo,
        source_name="e2e-retry.jpg",
        state=ImageJob.State.FAILED,
        error_code="thumbnail_error",
        error="OSError: boom",
        saved_name=photo.image.name,
    )
    admin_client.post(JOB_LIST, {"action": "retry_failed", "_selected_action": [job.pk]})
    job = wait_for_job(job.pk)
    assert (job.state, job.error_code) == ("done", ""), celery_worker.log_tail()
    assert {t.spec for t in Thumbnail.objects.filter(source_name=photo.image.name)} == {
        "small",
        "medium",
    }


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_e2e_regenerate_thumbnails_action(celery_worker, admin_client):
    photo = photo_with_image("e2e-regen.jpg", size=(300, 200))
    assert not Thumbnail.objects.filter(source_name=photo.image.name).exists()
    admin_client.post(
        PHOTO_LIST, {"action": "regenerate_thumbnails", "_selected_action": [photo.pk]}
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if Thumbnail.objects.filter(source_name=photo.image.name).count() == 2:
            break
        time.sleep(0.1)
    sizes = {
        t.spec: (t.width, t.height) for t in Thumbnail.objects.filter(source_name=photo.image.name)
    }
    assert sizes == {"small": (200, 133), "medium": (300, 200)}, celery_worker.log_tail()
