"""The job status endpoint and the generic create/update views."""

from __future__ import annotations

import os
import uuid

import pytest
from django.contrib.auth.models import User
from django.contrib.contenttypes.models import ContentType
from django.core.files.uploadedfile import SimpleUploadedFile

from async_image_save.models import ImageJob, Thumbnail
from async_image_save.testing import make_image_file, run_jobs_eagerly
from async_image_save.views import (
    SESSION_KEY,
    SESSION_MAX_JOBS,
    job_status_url,
    job_token,
    remember_job,
    stage,
)
from tests.conftest import wait_for_job
from tests.models import Photo

pytestmark = pytest.mark.django_db
State = ImageJob.State
JSON = {"HTTP_ACCEPT": "application/json"}


def status_url(job) -> str:
    return f"/images/jobs/{job.pk}/"


def make_job(owner=None, **fields) -> ImageJob:
    photo = Photo.objects.create()
    values = {
        "content_type": ContentType.objects.get_for_model(Photo),
        "object_id": str(photo.pk),
        "field_name": "image",
        "source_name": "v.jpg",
        "size": 10,
        "sha256": "0" * 64,
        "owner": owner,
        **fields,
    }
    return ImageJob.objects.create(**values)


@pytest.fixture
def media(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    os.makedirs(settings.MEDIA_ROOT)
    return settings.MEDIA_ROOT


@pytest.fixture
def alice():
    return User.objects.create_user("alice", password="pw")


# ---------------------------------------------------------------------------
# stage()
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "attempts", "expected"),
    [
        (State.PENDING, 0, "queued"),
        (State.PENDING, 1, "saving"),
        (State.PENDING, 3, "saving"),
        (State.SAVED, 1, "thumbnails"),
        (State.DONE, 1, "done"),
        (State.FAILED, 0, "failed"),
        (State.FAILED, 6, "failed"),
    ],
)
def test_stage(state, attempts, expected):
    assert stage(ImageJob(state=state, attempts=attempts)) == expected


# ---------------------------------------------------------------------------
# job_status
# ---------------------------------------------------------------------------


def test_owner_gets_the_pending_job(client, alice):
    job = make_job(owner=alice)
    client.force_login(alice)
    response = client.get(status_url(job))
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json() == {
        "id": str(job.pk),
        "state": "pending",
        "stage": "queued",
        "finished": False,
        "attempts": 0,
        "error_code": None,
        "error": None,
        "image": None,
        "thumbnails": {},
    }


def test_failed_job_shows_its_error(client, alice):
    job = make_job(owner=alice, state=State.FAILED, error_code="not_an_image", error="bad")
    client.force_login(alice)
    body = client.get(status_url(job)).json()
    assert (body["state"], body["stage"], body["finished"]) == ("failed", "failed", True)
    assert (body["error_code"], body["error"]) == ("not_an_image", "bad")


def test_done_job_lists_thumbnail_urls_and_sizes(
    client, alice, media, django_capture_on_commit_callbacks
):
    from async_image_save import save_image

    photo = Photo.objects.create()
    with run_jobs_eagerly(), django_capture_on_commit_callbacks(execute=True):
        job = save_image(make_image_file("done.jpg", size=(400, 300)), photo, user=alice)
    client.force_login(alice)
    body = client.get(status_url(job)).json()
    photo.refresh_from_db()
    assert (body["state"], body["stage"], body["finished"]) == ("done", "done", True)
    assert body["image"] == {"name": photo.image.name, "url": f"/media/{photo.image.name}"}
    thumbs = {t.spec: t for t in Thumbnail.objects.filter(source_name=photo.image.name)}
    assert body["thumbnails"] == {
        "small": {"url": f"/media/{thumbs['small'].name}", "width": 200, "height": 150},
        "medium": {"url": f"/media/{thumbs['medium'].name}", "width": 400, "height": 300},
    }


def test_saved_job_is_at_the_thumbnail_stage(client, alice):
    job = make_job(owner=alice, state=State.SAVED, attempts=1, saved_name="photos/s.jpg")
    client.force_login(alice)
    body = client.get(status_url(job)).json()
    assert (body["state"], body["stage"], body["finished"]) == ("saved", "thumbnails", False)
    assert body["image"] == {"name": "photos/s.jpg", "url": "/media/photos/s.jpg"}
    assert body["thumbnails"] == {}


def test_another_user_gets_404(client, alice):
    job = make_job(owner=alice)
    client.force_login(User.objects.create_user("mallory", password="pw"))
    assert client.get(status_url(job)).status_code == 404


def test_anonymous_gets_404(client, alice):
    assert client.get(status_url(make_job(owner=alice))).status_code == 404
    assert client.get(status_url(make_job(owner=None))).status_code == 404


def test_staff_gets_any_job(client, alice):
    job = make_job(owner=alice)
    client.force_login(User.objects.create_user("staff", password="pw", is_staff=True))
    response = client.get(status_url(job))
    assert response.status_code == 200
    assert response.json()["id"] == str(job.pk)


def test_anonymous_session_that_started_the_job_gets_it(client):
    job = make_job(owner=None)
    other = make_job(owner=None)
    session = client.session
    session[SESSION_KEY] = [job.pk.hex]
    session.save()
    assert client.get(status_url(job)).status_code == 200
    assert client.get(status_url(other)).status_code == 404


def test_token_lets_anyone_holding_it_read_the_job(client, alice):
    job = make_job(owner=alice)
    other = make_job(owner=alice)
    assert job_status_url(job) == f"/images/jobs/{job.pk}/?token={job_token(job)}"
    response = client.get(job_status_url(job))
    assert response.status_code == 200
    assert response.json()["id"] == str(job.pk)
    assert client.get(f"{status_url(other)}?token={job_token(job)}").status_code == 404
    assert client.get(f"{status_url(job)}?token={'0' * 32}").status_code == 404
    assert client.get(f"{status_url(job)}?token=").status_code == 404


def test_token_does_not_depend_on_the_session(client):
    job = make_job()
    client.cookies.clear()
    assert client.get(job_status_url(job)).status_code == 200
    assert job_token(job) != job_token(make_job())


def test_unknown_job_is_404(admin_client):
    assert admin_client.get(f"/images/jobs/{uuid.uuid4()}/").status_code == 404
    assert admin_client.get("/images/jobs/not-a-uuid/").status_code == 404


def test_post_is_405(client, alice):
    job = make_job(owner=alice)
    client.force_login(alice)
    response = client.post(status_url(job))
    assert response.status_code == 405
    assert response["Allow"] == "GET"


def test_response_is_not_cached(client, alice):
    job = make_job(owner=alice)
    client.force_login(alice)
    response = client.get(status_url(job))
    cache_control = [v.strip() for v in response["Cache-Control"].split(",")]
    assert "no-cache" in cache_control
    assert "no-store" in cache_control


def test_remember_job_keeps_the_newest_and_no_duplicates(rf):
    from django.contrib.sessions.backends.db import SessionStore

    request = rf.get("/")
    request.session = SessionStore()
    jobs = [ImageJob(id=uuid.uuid4()) for _ in range(SESSION_MAX_JOBS + 5)]
    for job in jobs:
        remember_job(request, job)
    remember_job(request, jobs[-3])
    remembered = request.session[SESSION_KEY]
    assert len(remembered) == SESSION_MAX_JOBS
    assert jobs[0].pk.hex not in remembered
    assert remembered[-1] == jobs[-3].pk.hex
    assert remembered.count(jobs[-3].pk.hex) == 1


def test_remember_job_without_session_does_nothing(rf):
    request = rf.get("/")
    remember_job(request, ImageJob(id=uuid.uuid4()))
    assert not hasattr(request, "session")


# ---------------------------------------------------------------------------
# AsyncImageCreateView / AsyncImageUpdateView
# ---------------------------------------------------------------------------


@pytest.mark.urls("tests.urls_views")
class TestGenericViews:
    def test_create_json_answers_201_with_jobs(
        self, client, media, django_capture_on_commit_callbacks
    ):
        with django_capture_on_commit_callbacks(execute=False):
            response = client.post(
                "/photos/new/", {"title": "api", "image": make_image_file("api.jpg")}, **JSON
            )
        assert response.status_code == 201, response.content
        body = response.json()
        photo = Photo.objects.get(title="api")
        job = ImageJob.objects.get()
        assert body == {
            "id": str(photo.pk),
            "jobs": {
                "image": {
                    "id": str(job.pk),
                    "state": "pending",
                    "status_url": f"/images/jobs/{job.pk}/?token={job_token(job)}",
                }
            },
        }
        assert photo.image.name == ""
        assert os.listdir(media) == []
        # The anonymous browser session that uploaded may poll its job.
        status = client.get(body["jobs"]["image"]["status_url"])
        assert status.status_code == 200
        assert status.json()["stage"] == "queued"

    def test_create_json_by_a_user_sets_the_owner(
        self, client, alice, media, django_capture_on_commit_callbacks
    ):
        client.force_login(alice)
        with django_capture_on_commit_callbacks(execute=False):
            response = client.post("/photos/new/", {"image": make_image_file()}, **JSON)
        assert response.status_code == 201
        assert ImageJob.objects.get().owner_id == alice.pk

    def test_create_json_then_eager_jobs_end_done(
        self, client, media, django_capture_on_commit_callbacks
    ):
        with run_jobs_eagerly(), django_capture_on_commit_callbacks(execute=True):
            response = client.post("/photos/new/", {"image": make_image_file("e.jpg")}, **JSON)
        status = client.get(response.json()["jobs"]["image"]["status_url"]).json()
        assert (status["state"], set(status["thumbnails"])) == ("done", {"small", "medium"})

    def test_create_json_without_image_has_no_jobs(self, client, media):
        response = client.post("/photos/new/", {"title": "bare"}, **JSON)
        assert response.status_code == 201
        assert response.json()["jobs"] == {}
        assert not ImageJob.objects.exists()

    def test_create_json_invalid_answers_400_with_errors(self, client, media):
        bogus = SimpleUploadedFile("x.jpg", b"not an image", "image/jpeg")
        response = client.post("/photos/new/", {"title": "t", "image": bogus}, **JSON)
        assert response.status_code == 400
        errors = response.json()["errors"]
        assert list(errors) == ["image"]
        assert errors["image"][0]["code"] == "invalid_image"
        assert not Photo.objects.exists()
        assert not ImageJob.objects.exists()

    def test_create_html_redirects(self, client, media, django_capture_on_commit_callbacks):
        with django_capture_on_commit_callbacks(execute=False):
            response = client.post("/photos/new/", {"title": "h", "image": make_image_file()})
        assert response.status_code == 302
        assert response["Location"] == "/done/"
        assert ImageJob.objects.count() == 1
        assert client.session[SESSION_KEY] == [ImageJob.objects.get().pk.hex]

    def test_create_html_invalid_renders_the_form(self, client, media):
        bogus = SimpleUploadedFile("x.jpg", b"not an image", "image/jpeg")
        response = client.post("/photos/new/", {"image": bogus})
        assert response.status_code == 200
        assert "Upload a valid image" in response.content.decode()
        assert not ImageJob.objects.exists()

    def test_update_json(self, client, media, django_capture_on_commit_callbacks):
        photo = Photo.objects.create(title="before")
        with django_capture_on_commit_callbacks(execute=False):
            response = client.post(
                f"/photos/{photo.pk}/edit/",
                {"title": "after", "image": make_image_file("upd.jpg")},
                **JSON,
            )
        assert response.status_code == 200  # updated, not created
        body = response.json()
        job = ImageJob.objects.get()
        assert body["id"] == str(photo.pk)
        assert body["jobs"]["image"]["status_url"] == job_status_url(job)
        assert job.object_id == str(photo.pk)
        photo.refresh_from_db()
        assert (photo.title, photo.image.name) == ("after", "")

    def test_update_json_invalid(self, client, media):
        photo = Photo.objects.create(title="before")
        bogus = SimpleUploadedFile("x.jpg", b"nope", "image/jpeg")
        response = client.post(
            f"/photos/{photo.pk}/edit/", {"title": "after", "image": bogus}, **JSON
        )
        assert response.status_code == 400
        assert "image" in response.json()["errors"]
        photo.refresh_from_db()
        assert photo.title == "before"

    def test_update_html_redirects(self, client, media, django_capture_on_commit_callbacks):
        photo = Photo.objects.create()
        with django_capture_on_commit_callbacks(execute=False):
            response = client.post(f"/photos/{photo.pk}/edit/", {"image": make_image_file()})
        assert (response.status_code, response["Location"]) == (302, "/done/")
        assert ImageJob.objects.get().object_id == str(photo.pk)

    def test_get_renders_the_form(self, client):
        response = client.get("/photos/new/")
        assert response.status_code == 200
        assert 'type="file"' in response.content.decode()

    def test_json_create_does_not_need_a_success_url(
        self, client, media, django_capture_on_commit_callbacks
    ):
        """Regression: a JSON-only view without success_url answered 500 after saving."""
        with django_capture_on_commit_callbacks(execute=False):
            response = client.post("/api/photos/", {"image": make_image_file()}, **JSON)
        assert response.status_code == 201
        body = response.json()
        assert body["id"] == str(Photo.objects.get().pk)
        assert body["jobs"]["image"]["id"] == str(ImageJob.objects.get().pk)


# ---------------------------------------------------------------------------
# end to end through the real worker
# ---------------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
@pytest.mark.urls("tests.urls_views")
def test_e2e_json_upload_then_poll_until_done(celery_worker, client):
    upload = make_image_file("e2e-view.jpg", size=(300, 200))
    response = client.post("/photos/new/", {"image": upload}, **JSON)
    assert response.status_code == 201
    job_info = response.json()["jobs"]["image"]
    wait_for_job(job_info["id"])
    body = client.get(job_info["status_url"]).json()
    assert (body["state"], body["stage"]) == ("done", "done"), celery_worker.log_tail()
    assert {k: (v["width"], v["height"]) for k, v in body["thumbnails"].items()} == {
        "small": (200, 133),
        "medium": (300, 200),
    }
    photo = Photo.objects.get(pk=response.json()["id"])
    assert body["image"]["name"] == photo.image.name
