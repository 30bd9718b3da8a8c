"""Unit tests for async_image_save.storage and .transfer with two real FileSystemStorages.

"local" and "remote" are FileSystemStorages in temp dirs. The transfer runs in
this process (``QueuedStorage.transfer`` or the task's ``apply()``); the
end-to-end path through a real worker and S3 is in test_s3.py.
"""

from __future__ import annotations

import os
from datetime import timedelta
from io import StringIO

import pytest
from django.core import checks as django_checks
from django.core.exceptions import ImproperlyConfigured
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage, storages
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from async_image_save import transfer as transfer_module
from async_image_save.checks import check_queued_storages
from async_image_save.models import QueuedFile
from async_image_save.recovery import recover_transfers
from async_image_save.storage import QueuedStorage, iter_queued_storages, resolve_storage
from async_image_save.thumbnails import generate_thumbnails, thumbnail
from async_image_save.transfer import TransferError, remote_fingerprint, transfer_file
from tests.conftest import jpeg_bytes
from tests.models import QueuedPhoto

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("send_on_commit_thread")]
BACKEND = "async_image_save.storage.QueuedStorage"
FS = "django.core.files.storage.FileSystemStorage"


class BrokenRemote(FileSystemStorage):
    """A remote that fails every save (its server is down)."""

    def _save(self, name, content):
        raise ConnectionError("remote storage unreachable")


class TruncatingRemote(FileSystemStorage):
    """A remote that stores only half of what it is given."""

    def _save(self, name, content):
        data = content.read()
        return super()._save(name, ContentFile(data[: len(data) // 2]))


class RenamingRemote(FileSystemStorage):
    """A remote that never overwrites: an existing name gets a new one."""

    def _save(self, name, content):
        return super()._save(self.get_available_name(name + ".renamed"), content)


def storages_config(tmp_path, **options):
    remote_backend = options.pop("remote_backend", FS)
    return {
        "default": {"BACKEND": FS},
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
        "ais_local": {
            "BACKEND": FS,
            "OPTIONS": {"location": str(tmp_path / "local"), "base_url": "/local/"},
        },
        "ais_remote": {
            "BACKEND": remote_backend,
            "OPTIONS": {"location": str(tmp_path / "remote"), "base_url": "https://cdn.example/"},
        },
        "queued": {
            "BACKEND": BACKEND,
            "OPTIONS": {"local": "ais_local", "remote": "ais_remote", **options},
        },
    }


@pytest.fixture
def sent(monkeypatch):
    """Transfers sent to the broker, recorded instead of published."""
    calls = []
    monkeypatch.setattr(
        transfer_module, "enqueue", lambda *args, **kwargs: calls.append((args, kwargs))
    )
    return calls


@pytest.fixture
def make_queued(settings, tmp_path, sent):
    def make(**options) -> QueuedStorage:
        settings.STORAGES = storages_config(tmp_path, **options)
        return storages["queued"]

    return make


@pytest.fixture
def queued(make_queued):
    return make_queued()


def save(storage, name="photos/a.jpg", data=None, capture=None):
    return storage.save(name, ContentFile(data if data is not None else jpeg_bytes(40, 30)))


def row(storage, name) -> QueuedFile:
    return QueuedFile.objects.get(storage=storage.identity, name=name)


def read(storage, name) -> bytes:
    with storage.open(name, "rb") as fh:
        return fh.read()


def calls_to(monkeypatch, storage, methods=("save", "open", "exists", "size", "delete", "url")):
    """Count the calls made to ``storage``'s public methods."""
    counted = []
    for method in methods:
        original = getattr(storage, method)

        def spy(*args, _original=original, _method=method, **kwargs):
            counted.append(_method)
            return _original(*args, **kwargs)

        monkeypatch.setattr(storage, method, spy)
    return counted


# --- save, serve, transfer -------------------------------------------------------------------


def test_save_writes_locally_and_sends_the_transfer_after_commit(
    queued, sent, django_capture_on_commit_callbacks
):
    data = jpeg_bytes(40, 30)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        name = save(queued, data=data)
        assert sent == []  # nothing before the commit
    assert len(callbacks) == 1
    assert sent == [(("storages:queued", name), {"queue": None, "countdown": 0})]
    assert row(queued, name).state == "local"
    assert queued.url(name) == f"/local/{name}"
    assert read(queued, name) == data
    assert queued.size(name) == len(data)
    assert queued.exists(name)
    assert queued.path(name) == queued.local.path(name)
    assert not queued.remote.exists(name)


def test_transfer_copies_verifies_and_flips_to_remote(queued):
    data = jpeg_bytes(40, 30)
    name = save(queued, data=data)
    assert queued.transfer(name) == "remote"
    record = row(queued, name)
    assert (record.state, record.size, record.attempts) == ("remote", len(data), 1)
    assert record.md5 and record.transferred_at is not None
    assert queued.url(name) == f"https://cdn.example/{name}"
    assert queued.remote.exists(name) and queued.local.exists(name)  # delete_local is off
    # Served from the remote now: the local copy is no longer read.
    os.remove(queued.local.path(name))
    assert read(queued, name) == data
    assert queued.size(name) == len(data)
    assert queued.exists(name)


def test_delete_local_removes_the_local_copy_after_the_transfer(make_queued):
    storage = make_queued(delete_local=True)
    name = save(storage)
    assert storage.local.exists(name)
    assert storage.transfer(name) == "remote"
    assert not storage.local.exists(name)
    assert storage.remote.exists(name)
    assert storage.exists(name)


def test_delay_and_queue_options_reach_the_message(
    make_queued, sent, django_capture_on_commit_callbacks
):
    storage = make_queued(delay=30, queue="transfers")
    with django_capture_on_commit_callbacks(execute=True):
        name = save(storage)
    assert sent == [(("storages:queued", name), {"queue": "transfers", "countdown": 30})]


def test_queue_defaults_to_the_library_queue_setting(
    queued, sent, settings, django_capture_on_commit_callbacks
):
    settings.ASYNC_IMAGE_SAVE_QUEUE = "images"
    with django_capture_on_commit_callbacks(execute=True):
        save(queued)
    assert sent[0][1]["queue"] == "images"


def test_delete_removes_both_copies_and_the_row(queued):
    name = save(queued)
    queued.transfer(name)
    queued.delete(name)
    assert not queued.local.exists(name) and not queued.remote.exists(name)
    assert not QueuedFile.objects.filter(name=name).exists()
    assert not queued.exists(name)


def test_delete_before_the_transfer_leaves_the_message_nothing_to_do(queued, monkeypatch):
    name = save(queued)
    queued.delete(name)
    remote_calls = calls_to(monkeypatch, queued.remote)
    assert queued.transfer(name) == "missing"
    assert remote_calls == []
    assert not queued.local.exists(name)


def test_a_delete_during_the_copy_removes_what_was_uploaded(queued, monkeypatch):
    name = save(queued)
    original_save = queued.remote.save

    def save_then_delete(*args, **kwargs):
        stored = original_save(*args, **kwargs)
        queued.delete(name)  # the user deletes while the worker copies
        return stored

    monkeypatch.setattr(queued.remote, "save", save_then_delete)
    assert queued.transfer(name) == "missing"
    assert not queued.remote.exists(name)
    assert not QueuedFile.objects.filter(name=name).exists()


def test_name_collisions_are_resolved_from_the_table_and_the_local_copy(queued, monkeypatch):
    first = save(queued)
    queued.transfer(first)
    remote_calls = calls_to(monkeypatch, queued.remote)
    second = save(queued)  # same name asked for
    assert second != first
    # The remote copy answered "exists" for the first name; a new name needs no remote call.
    assert remote_calls.count("save") == 0
    assert "exists" in remote_calls  # the taken name: its row says remote, so ask the remote
    remote_calls.clear()
    third = save(queued, name="photos/new.jpg")
    assert third == "photos/new.jpg"
    assert remote_calls == []


def test_check_remote_asks_the_remote_about_unknown_names(make_queued):
    storage = make_queued(check_remote=True)
    storage.remote.save("legacy/old.jpg", ContentFile(b"old"))
    assert storage.exists("legacy/old.jpg")
    assert storage.save("legacy/old.jpg", ContentFile(b"new")) != "legacy/old.jpg"


def test_files_that_predate_the_storage_are_served_from_where_they_are(queued):
    queued.remote.save("legacy/old.jpg", ContentFile(b"remote bytes"))
    queued.local.save("legacy/here.jpg", ContentFile(b"local bytes"))
    assert queued.url("legacy/old.jpg") == "https://cdn.example/legacy/old.jpg"
    assert read(queued, "legacy/old.jpg") == b"remote bytes"
    assert read(queued, "legacy/here.jpg") == b"local bytes"
    assert not queued.exists("legacy/old.jpg")  # check_remote is off
    dirs, files = queued.listdir("legacy")
    assert files == ["here.jpg", "old.jpg"]


# --- idempotency, verification and faults -------------------------------------------------


def test_a_redelivered_message_after_the_copy_does_nothing(queued, monkeypatch):
    name = save(queued)
    assert queued.transfer(name) == "remote"
    local_calls = calls_to(monkeypatch, queued.local)
    remote_calls = calls_to(monkeypatch, queued.remote)
    assert transfer_file.apply(args=(queued.identity, name)).get() == "remote"
    assert (local_calls, remote_calls) == ([], [])
    assert row(queued, name).attempts == 1


def test_a_worker_that_died_mid_transfer_is_taken_over(queued):
    name = save(queued)
    # The first worker claimed the row, uploaded and died before the flip.
    QueuedFile.objects.filter(name=name).update(state="transferring", attempts=1)
    queued.remote.save(name, ContentFile(b"stale partial bytes"))
    assert queued.transfer(name) == "remote"
    assert read(queued.remote, name) == read(queued.local, name)
    assert row(queued, name).attempts == 2


def test_a_missing_local_copy_fails_clearly_and_flips_nothing(queued, monkeypatch):
    name = save(queued)
    os.remove(queued.local.path(name))
    remote_calls = calls_to(monkeypatch, queued.remote)
    assert transfer_file.apply(args=(queued.identity, name)).get() == "failed"
    record = row(queued, name)
    assert record.state == "failed"
    assert record.error_code == "local_missing"
    assert name in record.error and "removed before the transfer" in record.error
    assert remote_calls == []
    assert queued.url(name) == f"/local/{name}"  # never pointed at the remote


def test_saving_the_name_of_a_lost_file_again_starts_a_fresh_row(queued):
    name = save(queued)
    os.remove(queued.local.path(name))
    assert queued.transfer(name) == "failed"
    assert save(queued, name=name) == name  # the name is free again: no copy anywhere
    record = row(queued, name)
    assert (record.state, record.error_code, record.error, record.attempts) == ("local", "", "", 0)
    assert queued.transfer(name) == "remote"


def test_a_copy_that_does_not_verify_is_removed_retried_then_failed(make_queued, settings):
    settings.ASYNC_IMAGE_SAVE_MAX_RETRIES = 2
    storage = make_queued(remote_backend=f"{__name__}.TruncatingRemote")
    name = save(storage)
    with pytest.raises(TransferError) as info:
        storage.transfer(name)
    assert (info.value.code, info.value.retryable) == ("verify_failed", True)
    assert not storage.remote.exists(name)  # the bad copy was removed
    assert row(storage, name).state == "transferring"
    # Through the task: retried (eagerly, here) until the bound, then failed.
    assert transfer_file.apply(args=(storage.identity, name)).get() == "failed"
    record = row(storage, name)
    assert record.state == "failed" and record.error_code == "verify_failed"
    assert "Gave up after 2 retries" in record.error
    assert record.attempts == 1 + 3
    assert storage.url(name) == f"/local/{name}"


def test_an_unreachable_remote_is_retried_then_failed_and_recovered(
    make_queued, settings, tmp_path, sent
):
    settings.ASYNC_IMAGE_SAVE_MAX_RETRIES = 1
    storage = make_queued(remote_backend=f"{__name__}.BrokenRemote")
    data = jpeg_bytes(40, 30)
    name = save(storage, data=data)
    assert transfer_file.apply(args=(storage.identity, name)).get() == "failed"
    record = row(storage, name)
    assert (record.state, record.error_code) == ("failed", "remote_error")
    assert "remote storage unreachable" in record.error
    assert read(storage, name) == data  # still served from the local copy
    assert storage.url(name) == f"/local/{name}"

    # The remote is back; recovery sends the transfer again.
    settings.STORAGES = storages_config(tmp_path)
    storage = storages["queued"]
    actions = recover_transfers(timedelta(minutes=15), retry_failed=True)
    assert [(a.file.name, a.action) for a in actions] == [(name, "requeued")]
    assert sent[-1][0] == ("storages:queued", name)
    assert row(storage, name).state == "local"
    assert storage.transfer(name) == "remote"
    assert read(storage.remote, name) == data


def test_a_remote_that_renames_fails_without_retrying(make_queued):
    storage = make_queued(remote_backend=f"{__name__}.RenamingRemote")
    name = save(storage)
    assert storage.transfer(name) == "failed"
    record = row(storage, name)
    assert record.error_code == "remote_renamed"
    assert "overwrit" in record.error
    assert storage.remote.listdir("photos") == ([], [])


def test_an_unresolvable_storage_fails_the_row(queued):
    name = save(queued)
    QueuedFile.objects.filter(name=name).update(storage="storages:gone")
    assert transfer_file.apply(args=("storages:gone", name)).get() == "failed"
    record = QueuedFile.objects.get(name=name)
    assert record.error_code == "storage_unresolved"
    assert "gone" in record.error


def test_a_broker_error_leaves_the_file_local_for_recovery(
    queued, monkeypatch, django_capture_on_commit_callbacks
):
    def down(*args, **kwargs):
        raise ConnectionError("broker down")

    monkeypatch.setattr(transfer_module, "enqueue", down)
    with django_capture_on_commit_callbacks(execute=True):
        name = save(queued)
    record = row(queued, name)
    assert (record.state, record.error_code) == ("local", "not_queued")
    assert "broker down" in record.error
    sent = []
    monkeypatch.setattr(transfer_module, "enqueue", lambda *a, **k: sent.append(a))
    actions = recover_transfers(timedelta(0))
    assert [a.action for a in actions] == ["requeued"]
    assert sent == [("storages:queued", name)]


def test_recovery_skips_what_a_retry_cannot_fix_and_dry_run_changes_nothing(queued, sent):
    lost = save(queued, name="photos/lost.jpg")
    os.remove(queued.local.path(lost))
    queued.transfer(lost)
    stale = save(queued, name="photos/stale.jpg")
    QueuedFile.objects.filter(name=stale).update(updated_at=timezone.now() - timedelta(hours=2))
    assert recover_transfers(timedelta(hours=3)) == []  # not stale yet
    actions = recover_transfers(timedelta(hours=1), retry_failed=True, dry_run=True)
    assert {(a.file.name, a.action) for a in actions} == {
        (lost, "skipped"),
        (stale, "requeued"),
    }
    assert sent == []
    out = StringIO()
    call_command(
        "async_image_save_recover",
        "--older-than",
        "1h",
        "--transfers",
        "--retry-failed",
        stdout=out,
    )
    assert f"requeued: transfer of {stale}" in out.getvalue()
    assert f"skipped: transfer of {lost}" in out.getvalue()
    assert "1 transfer(s) handled." in out.getvalue()
    assert sent == [(("storages:queued", stale), {"queue": None, "countdown": 0})]


# --- the cache in front of the table ------------------------------------------------------


def test_urls_need_no_query_once_cached(queued):
    names = [save(queued, name=f"photos/p{i}.jpg") for i in range(5)]
    for name in names[:3]:
        queued.transfer(name)
    queued.url("never/saved.jpg")
    with CaptureQueriesContext(connection) as queries:
        urls = [queued.url(name) for name in [*names, "never/saved.jpg"]]
    assert len(queries) == 0
    assert sum(u.startswith("https://cdn.example/") for u in urls) == 4


def test_the_table_answers_when_the_cache_is_down(queued, settings):
    name = save(queued)
    queued.transfer(name)
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "broken": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",  # nothing listens on port 1
        },
    }
    settings.ASYNC_IMAGE_SAVE_STORAGE_CACHE = "broken"
    assert queued.url(name) == f"https://cdn.example/{name}"
    other = save(queued, name="photos/other.jpg")
    assert queued.url(other) == "/local/photos/other.jpg"


# --- configuration ---------------------------------------------------------------------


def test_unknown_option_names_the_option_and_the_class():
    with pytest.raises(ImproperlyConfigured, match=r"QueuedStorage got unknown option.*'dleay'"):
        QueuedStorage(local="a", remote="b", dleay=3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"remote": "b"}, "needs a local storage"),
        ({"local": "a"}, "needs a remote storage"),
        ({"local": "a", "remote": "b", "delay": -1}, "delay must be seconds"),
        ({"local": "a", "remote": "b", "delete_local": "yes"}, "delete_local must be True"),
        ({"local": "a", "remote": "b", "queue": ""}, "queue must be a queue name"),
    ],
)
def test_bad_arguments_are_configuration_errors(kwargs, message):
    with pytest.raises(ImproperlyConfigured, match=message):
        QueuedStorage(**kwargs)


def test_local_and_remote_accept_aliases_dotted_paths_and_instances(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path)
    instance = FileSystemStorage(location=str(tmp_path / "x"))
    storage = QueuedStorage(local=FS, remote=instance)
    assert isinstance(storage.local, FileSystemStorage)
    assert storage.local.location == str(tmp_path)
    assert storage.remote is instance
    factory = QueuedStorage(local="tests.models.s3_storage", remote="default")
    assert type(factory.local).__name__ == "S3Storage"
    assert factory.remote is storages["default"]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("no.such.module.Storage", "neither an alias in STORAGES"),
        ("os.path", "not a storage"),
        ("queued", "names this QueuedStorage itself"),
    ],
)
def test_unresolvable_storages_say_why(settings, tmp_path, value, message):
    config = storages_config(tmp_path)
    config["queued"]["OPTIONS"]["remote"] = value
    settings.STORAGES = config
    with pytest.raises(ImproperlyConfigured, match=message):
        storages["queued"].remote  # noqa: B018


def test_deconstruct_keeps_the_arguments_as_given():
    storage = QueuedStorage(local="ais_local", remote="s3", delete_local=True, delay=5)
    assert storage.deconstruct() == (
        "async_image_save.storage.QueuedStorage",
        (),
        {"local": "ais_local", "remote": "s3", "delete_local": True, "delay": 5},
    )


def test_identity_of_aliases_and_fields_round_trips(queued):
    field_storage = QueuedPhoto._meta.get_field("image").storage
    assert queued.identity == "storages:queued"
    assert field_storage.identity == "field:tests.QueuedPhoto.image"
    assert resolve_storage("storages:queued") is queued
    assert resolve_storage("field:tests.QueuedPhoto.image") is field_storage
    found = dict(iter_queued_storages())
    assert found["storages:queued"] is queued
    for identity in ("storages:nope", "field:tests.Nope.image", "field:tests.Photo.image", "x"):
        with pytest.raises(ImproperlyConfigured):
            resolve_storage(identity)


def test_a_broken_queued_storage_does_not_hide_the_others(settings, tmp_path):
    config = storages_config(tmp_path)
    config["broken"] = {"BACKEND": BACKEND, "OPTIONS": {"local": "ais_local"}}
    settings.STORAGES = config
    assert storages["queued"].identity == "storages:queued"
    with pytest.raises(ImproperlyConfigured, match="needs a remote storage"):
        list(iter_queued_storages())
    assert [m.id for m in check_queued_storages()] == ["async_image_save.E011"]


def test_an_unregistered_instance_cannot_be_saved_to(tmp_path):
    storage = QueuedStorage(
        local=FileSystemStorage(location=str(tmp_path / "l")),
        remote=FileSystemStorage(location=str(tmp_path / "r")),
    )
    with pytest.raises(ImproperlyConfigured, match="neither in settings.STORAGES nor a model"):
        storage.save("a.txt", ContentFile(b"x"))


def test_e011_reports_an_unresolvable_storage(settings, tmp_path):
    config = storages_config(tmp_path)
    config["queued"]["OPTIONS"]["local"] = "no_such_alias"
    settings.STORAGES = config
    messages = check_queued_storages()
    assert [m.id for m in messages] == ["async_image_save.E011"]
    assert "storages:queued" in messages[0].msg


def test_e011_reports_a_bad_option_and_a_missing_cache(settings, tmp_path):
    config = storages_config(tmp_path, dleay=1)
    settings.STORAGES = config
    assert [m.id for m in check_queued_storages()] == ["async_image_save.E011"]
    settings.STORAGES = storages_config(tmp_path)
    settings.ASYNC_IMAGE_SAVE_STORAGE_CACHE = "nope"
    messages = check_queued_storages()
    assert [m.id for m in messages] == ["async_image_save.E011"]
    assert "'nope'" in messages[0].msg


def test_w002_warns_about_delete_local_with_a_per_process_cache(settings, tmp_path):
    settings.STORAGES = storages_config(tmp_path, delete_local=True)
    messages = check_queued_storages()
    assert [m.id for m in messages] == ["async_image_save.W002"]
    assert "storages:queued" in messages[0].msg
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"}}
    assert check_queued_storages() == []


def test_test_settings_pass_the_check():
    assert [m for m in django_checks.run_checks() if m.id.startswith("async_image_save.E011")] == []
    assert check_queued_storages() == []


# --- with a model field, thumbnails and fingerprints ----------------------------------------


def test_an_image_field_with_queued_storage_gets_thumbnails_that_follow_the_queue(sent):
    photo = QueuedPhoto.objects.create()
    photo.image.save("cat.jpg", ContentFile(jpeg_bytes(400, 300)))
    storage = photo.image.storage
    assert photo.image.url.startswith("/media/local/queued/cat")
    assert (photo.image.width, photo.image.height) == (400, 300)
    assert storage.transfer(photo.image.name) == "remote"
    records = generate_thumbnails(photo, "image")  # reads the source back from the remote
    assert {r.spec for r in records} == {"small", "medium"}
    for record in records:
        assert row(storage, record.name).state == "local"
        assert thumbnail(photo.image, record.spec).url.startswith("/media/local/")
        assert storage.transfer(record.name) == "remote"
    small = thumbnail(photo.image, "small")
    assert small.url.startswith("https://remote.example/queued/thumbs/cat")
    assert (small.width, small.height) == (200, 150)
    assert photo.image.url.startswith("https://remote.example/queued/cat")


def test_remote_fingerprint_of_a_filesystem_storage_is_its_size(tmp_path):
    storage = FileSystemStorage(location=str(tmp_path))
    assert remote_fingerprint(storage, "a.txt") is None
    storage.save("a.txt", ContentFile(b"12345"))
    assert remote_fingerprint(storage, "a.txt") == transfer_module.Fingerprint(5, None)
