"""Unit tests for async_image_save.status: compare-and-set transitions and the failure signal."""

from __future__ import annotations

import uuid

import pytest
from django.contrib.contenttypes.models import ContentType

from async_image_save import status
from async_image_save.models import ImageJob
from async_image_save.signals import image_failed
from tests.models import Photo

pytestmark = pytest.mark.django_db

State = ImageJob.State


def make_job(state: str = State.PENDING) -> ImageJob:
    photo = Photo.objects.create()
    return ImageJob.objects.create(
        content_type=ContentType.objects.get_for_model(Photo),
        object_id=str(photo.pk),
        field_name="image",
        source_name="cat.jpg",
        size=3,
        sha256="0" * 64,
        state=state,
    )


def state_of(job: ImageJob) -> str:
    return ImageJob.objects.values_list("state", flat=True).get(pk=job.pk)


@pytest.fixture
def failures():
    received = []

    def receiver(sender, **kwargs):
        received.append((sender, kwargs))

    image_failed.connect(receiver, weak=False)
    yield received
    image_failed.disconnect(receiver)


# ---------------------------------------------------------------------------
# transition
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "from_states", "moves"),
    [
        (State.PENDING, (State.PENDING,), True),
        (State.PENDING, (State.SAVED,), False),
        (State.SAVED, (State.PENDING, State.SAVED), True),
        (State.DONE, (State.PENDING, State.SAVED), False),
        (State.FAILED, (State.PENDING, State.SAVED), False),
        (State.FAILED, (State.FAILED,), True),
        (State.PENDING, (), False),
    ],
)
def test_transition_moves_only_from_allowed_states(start, from_states, moves):
    job = make_job(start)
    assert status.transition(job.pk, from_states, State.DONE) is moves
    assert state_of(job) == (State.DONE if moves else start)


def test_transition_sets_fields_and_updated_at():
    job = make_job()
    before = ImageJob.objects.get(pk=job.pk).updated_at
    assert status.transition(job.pk, (State.PENDING,), State.SAVED, saved_name="photos/x.jpg")
    job.refresh_from_db()
    assert job.saved_name == "photos/x.jpg"
    assert job.updated_at >= before


def test_transition_leaves_fields_alone_when_not_moving():
    job = make_job(State.DONE)
    assert not status.transition(job.pk, (State.PENDING,), State.SAVED, saved_name="photos/x.jpg")
    job.refresh_from_db()
    assert job.saved_name == ""


def test_transition_of_unknown_job():
    assert status.transition(uuid.uuid4(), (State.PENDING,), State.SAVED) is False


def test_transition_touches_only_its_job():
    first, second = make_job(), make_job()
    assert status.transition(first.pk, (State.PENDING,), State.SAVED)
    assert state_of(second) == State.PENDING


def test_transition_accepts_hex_job_id():
    job = make_job()
    assert status.transition(job.pk.hex, (State.PENDING,), State.SAVED)
    assert state_of(job) == State.SAVED


# ---------------------------------------------------------------------------
# mark_* helpers
# ---------------------------------------------------------------------------


def test_mark_saved_then_again_returns_false():
    job = make_job()
    assert status.mark_saved(job.pk, "photos/a.jpg") is True
    assert status.mark_saved(job.pk, "photos/b.jpg") is False
    job.refresh_from_db()
    assert job.state == State.SAVED
    assert job.saved_name == "photos/a.jpg"


def test_mark_done_needs_saved():
    job = make_job()
    assert status.mark_done(job.pk) is False
    assert state_of(job) == State.PENDING
    status.mark_saved(job.pk, "photos/a.jpg")
    assert status.mark_done(job.pk) is True
    assert status.mark_done(job.pk) is False
    assert state_of(job) == State.DONE


def test_claim_takes_the_lease_once_and_counts_the_attempt():
    job = make_job()
    first = status.claim(job.pk)
    assert first.token is not None and first.attempts == 1
    second = status.claim(job.pk)  # a duplicate delivery while the lease runs
    assert second.token is None
    assert second.state == State.PENDING
    assert second.retry_in > 1
    job.refresh_from_db()
    assert job.attempts == 1


def test_released_or_expired_lease_can_be_claimed_again(settings):
    job = make_job()
    first = status.claim(job.pk)
    status.release(job.pk, first.token)
    again = status.claim(job.pk)
    assert again.token not in (None, first.token)
    settings.ASYNC_IMAGE_SAVE_LEASE_SECONDS = -1  # every lease is already over
    job2 = make_job()
    status.claim(job2.pk)
    assert status.claim(job2.pk).attempts == 2


def test_a_lease_whose_holder_process_died_is_taken_over_at_once():
    from datetime import timedelta

    from django.utils import timezone

    from tests.test_holders import ended_pid, token_for

    job = make_job()
    dead = token_for(ended_pid())
    ImageJob.objects.filter(pk=job.pk).update(
        claimed_by=dead, claimed_until=timezone.now() + timedelta(minutes=10), attempts=1
    )
    outcome = status.claim(job.pk)
    assert outcome.token is not None and outcome.attempts == 2
    job.refresh_from_db()
    assert job.claimed_by == outcome.token != dead


@pytest.mark.parametrize("holder", ["this process", "another machine"])
def test_a_lease_whose_holder_may_be_alive_is_waited_for(holder):
    from datetime import timedelta

    from django.utils import timezone

    from tests.test_holders import ended_pid, token_for

    job = make_job()
    token = status.claim(job.pk).token if holder == "this process" else None
    if token is None:
        token = token_for(ended_pid(), tag="ffffffff")
        ImageJob.objects.filter(pk=job.pk).update(
            claimed_by=token, claimed_until=timezone.now() + timedelta(minutes=10)
        )
    outcome = status.claim(job.pk)
    assert outcome.token is None and outcome.retry_in > 60
    job.refresh_from_db()
    assert job.claimed_by == token


def test_claim_on_a_finished_job_returns_its_state():
    job = make_job(State.DONE)
    outcome = status.claim(job.pk)
    assert (outcome.token, outcome.state) == (None, State.DONE)


def test_mark_saved_with_token_needs_the_lease_holder():
    job = make_job()
    token = status.claim(job.pk).token
    assert status.mark_saved(job.pk, "x.jpg", token="someone-else") is False
    assert status.mark_saved(job.pk, "x.jpg", token=token) is True
    assert state_of(job) == State.SAVED


def test_mark_failed_twice_sends_signal_once(failures):
    job = make_job()
    assert status.mark_failed(job.pk, "not_an_image", "first") is True
    assert status.mark_failed(job.pk, "storage_error", "second") is False
    assert len(failures) == 1
    sender, kwargs = failures[0]
    assert sender is ImageJob
    assert kwargs["code"] == "not_an_image"
    assert kwargs["error"] == "first"
    assert kwargs["job"].pk == job.pk
    assert kwargs["job"].state == State.FAILED
    job.refresh_from_db()
    assert (job.error_code, job.error) == ("not_an_image", "first")


def test_mark_failed_from_saved(failures):
    job = make_job(State.SAVED)
    assert status.mark_failed(job.pk, "thumbnail_error", "boom")
    assert state_of(job) == State.FAILED
    assert len(failures) == 1


@pytest.mark.parametrize("final", [State.DONE, State.FAILED])
def test_mark_failed_does_not_touch_finished_job(failures, final):
    job = make_job(final)
    assert status.mark_failed(job.pk, "late", "too late") is False
    job.refresh_from_db()
    assert job.state == final
    assert job.error_code == ""
    assert failures == []


def test_mark_failed_unknown_job_sends_nothing(failures):
    assert status.mark_failed(uuid.uuid4(), "x", "y") is False
    assert failures == []


def test_mark_failed_truncates_error(failures):
    job = make_job()
    status.mark_failed(job.pk, "storage_error", "x" * (status.MAX_ERROR_LENGTH + 500))
    job.refresh_from_db()
    assert len(job.error) == status.MAX_ERROR_LENGTH
    assert len(failures[0][1]["error"]) == status.MAX_ERROR_LENGTH


def test_mark_failed_keeps_short_error_and_stringifies():
    job = make_job()
    status.mark_failed(job.pk, "storage_error", ValueError("disk full"))
    job.refresh_from_db()
    assert job.error == "disk full"


def test_mark_failed_survives_a_raising_receiver(failures):
    def broken(sender, **kwargs):
        raise RuntimeError("receiver bug")

    image_failed.connect(broken, weak=False)
    try:
        job = make_job()
        assert status.mark_failed(job.pk, "x", "y") is True
    finally:
        image_failed.disconnect(broken)
    assert state_of(job) == State.FAILED
    assert len(failures) == 1
