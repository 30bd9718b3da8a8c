"""async_image_save_recover --sweep-staging, and what the status endpoint tells whom."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from django.test import Client

from async_image_save.models import ImageJob, StagedPayload
from async_image_save.recovery import sweep_staging
from async_image_save.staging import get_stager
from async_image_save.views import GENERIC_ERROR, job_status_url
from tests.models import Photo

pytestmark = pytest.mark.django_db


def make_job(state, error_code="", **fields):
    from django.contrib.contenttypes.models import ContentType

    photo = Photo.objects.create()
    return ImageJob.objects.create(
        content_type=ContentType.objects.get_for_model(Photo),
        object_id=str(photo.pk),
        field_name="image",
        source_name="x.jpg",
        size=1,
        sha256="0" * 64,
        state=state,
        error_code=error_code,
        error="Traceback: secret internals" if error_code else "",
        **fields,
    )


def test_sweep_keeps_pending_and_retryable_and_deletes_the_rest(settings, tmp_path):
    settings.ASYNC_IMAGE_SAVE_STAGING_DIR = str(tmp_path / "staging")
    directory = get_stager("directory")
    database = get_stager("database")
    pending = make_job("pending")
    retryable = make_job("failed", "storage_error")
    done = make_job("done")
    refused = make_job("failed", "not_an_image")
    orphan = "f" * 32
    for job in (pending, retryable, done, refused):
        directory.put(job.pk.hex, b"frame")
        database.put(job.pk.hex, b"frame")
    directory.put(orphan, b"frame")

    assert len(sweep_staging(dry_run=True)) == 5
    assert directory.exists(done.pk.hex)  # a dry run deletes nothing

    out = StringIO()
    call_command("async_image_save_recover", "--sweep-staging", stdout=out)
    assert "5 staged payload(s) swept." in out.getvalue()
    kept = {pending.pk.hex, retryable.pk.hex}
    assert set(directory.keys()) == kept
    assert set(StagedPayload.objects.values_list("key", flat=True)) == kept


def test_sweep_drops_retryable_payloads_after_the_ttl(settings, tmp_path):
    from datetime import timedelta

    from django.utils import timezone

    settings.ASYNC_IMAGE_SAVE_STAGING_DIR = str(tmp_path / "staging")
    old = make_job("failed", "storage_error")
    ImageJob.objects.filter(pk=old.pk).update(updated_at=timezone.now() - timedelta(days=30))
    get_stager("directory").put(old.pk.hex, b"frame")
    assert [reason for _ref, reason in sweep_staging()] == ["job failed (storage_error)"]


def test_error_text_only_for_owner_and_staff(django_user_model):
    owner = django_user_model.objects.create_user("owner", password="x")
    job = make_job("failed", "storage_error", owner=owner)
    anonymous_with_token = Client().get(job_status_url(job)).json()
    assert anonymous_with_token["error_code"] == "storage_error"
    assert anonymous_with_token["error"] == GENERIC_ERROR
    client = Client()
    client.force_login(owner)
    assert client.get(job_status_url(job)).json()["error"] == "Traceback: secret internals"
