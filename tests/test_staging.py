"""Unit tests for async_image_save.staging: per-broker defaults, stagers, references."""

from __future__ import annotations

import os
import uuid

import pytest
from celery import current_app
from django.core.exceptions import ImproperlyConfigured

from async_image_save.conf import conf
from async_image_save.exceptions import PayloadDecodeError, PayloadMissing
from async_image_save.staging import (
    DirectoryStager,
    RedisStager,
    get_stager,
    inline_max_bytes,
    resolve_ref,
    transport_defaults,
)

KiB, MiB = 1024, 1024 * 1024


@pytest.fixture
def broker(monkeypatch):
    """Set the current Celery app's broker URL for one test."""

    def set_url(url: str) -> None:
        monkeypatch.setitem(current_app.conf, "broker_url", url)

    return set_url


@pytest.mark.parametrize(
    ("url", "inline", "staging", "hard"),
    [
        ("redis://127.0.0.1:6379/0", 16 * KiB, "redis", 384 * MiB),
        ("rediss://:pw@example.com:6380/1", 16 * KiB, "redis", 384 * MiB),
        ("amqp://guest:guest@localhost:5672//", 8 * MiB, "directory", 16 * MiB),
        ("pyamqp://guest@localhost//", 8 * MiB, "directory", 16 * MiB),
        ("amqps://guest@localhost//", 8 * MiB, "directory", 16 * MiB),
        ("filesystem://", 16 * KiB, "directory", 64 * MiB),
        ("memory://", 16 * KiB, "directory", 64 * MiB),
        ("sqs://", 96 * KiB, "directory", 192 * KiB),
        ("SQS://key:secret@", 96 * KiB, "directory", 192 * KiB),
        ("gopher://example.com", 1 * MiB, "directory", 16 * MiB),
        ("sqla+postgresql://localhost/db", 1 * MiB, "directory", 16 * MiB),
    ],
)
def test_transport_defaults(url, inline, staging, hard):
    defaults = transport_defaults(url)
    assert (defaults.inline_max_bytes, defaults.staging, defaults.hard_limit_bytes) == (
        inline,
        staging,
        hard,
    )
    assert defaults.inline_max_bytes <= defaults.hard_limit_bytes


def test_transport_defaults_without_url_uses_current_app(broker):
    broker("sqs://")
    assert transport_defaults().staging == "directory"
    assert transport_defaults().inline_max_bytes == 96 * KiB
    broker("redis://127.0.0.1:6379/0")
    assert transport_defaults().staging == "redis"


def test_inline_max_bytes_default_per_broker(settings, broker):
    settings.ASYNC_IMAGE_SAVE_INLINE_MAX_BYTES = None
    broker("redis://127.0.0.1:6379/0")
    assert inline_max_bytes() == 16 * KiB
    broker("amqp://localhost//")
    assert inline_max_bytes() == 8 * MiB


def test_inline_max_bytes_honours_setting(settings, broker):
    broker("redis://127.0.0.1:6379/0")
    settings.ASYNC_IMAGE_SAVE_INLINE_MAX_BYTES = 12345
    assert inline_max_bytes() == 12345
    settings.ASYNC_IMAGE_SAVE_INLINE_MAX_BYTES = 0
    assert inline_max_bytes() == 0


def test_inline_max_bytes_never_above_hard_limit(settings, broker):
    settings.ASYNC_IMAGE_SAVE_INLINE_MAX_BYTES = 10**12
    broker("sqs://")
    assert inline_max_bytes() == 192 * KiB
    broker("redis://127.0.0.1:6379/0")
    assert inline_max_bytes() == 384 * MiB


# ---------------------------------------------------------------------------
# DirectoryStager
# ---------------------------------------------------------------------------


def test_directory_stager_put_get_delete(tmp_path):
    stager = DirectoryStager(str(tmp_path / "staging"))
    key = uuid.uuid4().hex
    data = os.urandom(100_000)
    stager.put(key, data)
    assert stager.get(key) == data
    assert sorted(os.listdir(tmp_path / "staging")) == [f"{key}.payload"]
    assert stager.ref(key) == f"directory:{key}"
    stager.delete(key)
    assert os.listdir(tmp_path / "staging") == []
    stager.delete(key)  # deleting again is not an error
    with pytest.raises(PayloadMissing):
        stager.get(key)


def test_directory_stager_overwrites_and_leaves_no_part_file(tmp_path):
    stager = DirectoryStager(str(tmp_path))
    key = uuid.uuid4().hex
    stager.put(key, b"first")
    stager.put(key, b"second")
    assert stager.get(key) == b"second"
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".part")]


def test_directory_stager_creates_private_directory(tmp_path):
    path = tmp_path / "a" / "b"
    DirectoryStager(str(path)).put(uuid.uuid4().hex, b"x")
    assert path.is_dir()
    assert (path.stat().st_mode & 0o077) == 0


def test_directory_stager_missing_names_the_setting(tmp_path):
    stager = DirectoryStager(str(tmp_path))
    with pytest.raises(PayloadMissing) as info:
        stager.get(uuid.uuid4().hex)
    assert "ASYNC_IMAGE_SAVE_STAGING_DIR" in str(info.value)
    assert str(tmp_path) in str(info.value)
    assert isinstance(info.value, LookupError)


def test_get_stager_directory_uses_setting_and_caches(settings, tmp_path):
    settings.ASYNC_IMAGE_SAVE_STAGING_DIR = str(tmp_path)
    stager = get_stager("directory")
    assert isinstance(stager, DirectoryStager)
    assert stager.path == str(tmp_path)
    assert get_stager("directory") is stager
    settings.ASYNC_IMAGE_SAVE_STAGING_DIR = str(tmp_path / "other")
    assert get_stager("directory").path == str(tmp_path / "other")


def test_get_stager_default_follows_setting_then_broker(settings, broker, tmp_path):
    settings.ASYNC_IMAGE_SAVE_STAGING_DIR = str(tmp_path)
    settings.ASYNC_IMAGE_SAVE_STAGING = "directory"
    broker("redis://127.0.0.1:6379/0")
    assert isinstance(get_stager(), DirectoryStager)
    settings.ASYNC_IMAGE_SAVE_STAGING = None
    assert isinstance(get_stager(), RedisStager)
    broker("amqp://localhost//")
    assert isinstance(get_stager(), DirectoryStager)


# ---------------------------------------------------------------------------
# RedisStager against the real server
# ---------------------------------------------------------------------------


@pytest.fixture
def redis_stager(redis_service, settings):
    settings.ASYNC_IMAGE_SAVE_STAGING = "redis"
    settings.ASYNC_IMAGE_SAVE_STAGING_URL = os.environ.get(
        "AIS_REDIS_URL", "redis://127.0.0.1:6379/0"
    )
    stager = get_stager()
    assert isinstance(stager, RedisStager)
    keys: list[str] = []
    yield stager, keys
    for key in keys:
        stager.client.delete(stager.prefix + key)


def test_redis_stager_put_get_delete_with_ttl(redis_stager, settings):
    stager, keys = redis_stager
    assert stager.prefix == settings.ASYNC_IMAGE_SAVE_STAGING_PREFIX
    key = uuid.uuid4().hex
    keys.append(key)
    data = os.urandom(50_000)
    stager.put(key, data)
    assert stager.client.get(settings.ASYNC_IMAGE_SAVE_STAGING_PREFIX + key) == data
    assert stager.get(key) == data
    ttl = stager.client.ttl(stager.prefix + key)
    assert 0 < ttl <= conf.ASYNC_IMAGE_SAVE_STAGING_TTL
    assert stager.ref(key) == f"redis:{key}"
    stager.delete(key)
    assert stager.client.exists(stager.prefix + key) == 0
    stager.delete(key)  # missing key: no error
    with pytest.raises(PayloadMissing, match=key):
        stager.get(key)


def test_redis_stager_ttl_follows_setting(redis_stager, settings):
    settings.ASYNC_IMAGE_SAVE_STAGING_TTL = 120
    stager = get_stager()
    keys = redis_stager[1]
    key = uuid.uuid4().hex
    keys.append(key)
    stager.put(key, b"x")
    assert 0 < stager.client.ttl(stager.prefix + key) <= 120


@pytest.mark.parametrize("size", [0, 10, 70_000, 1_100_000])
def test_redis_stager_put_parts_stores_one_value_with_ttl(redis_stager, size):
    stager, keys = redis_stager
    key = uuid.uuid4().hex
    keys.append(key)
    body = os.urandom(size)
    parts = (b"AIS\x01header", memoryview(body), bytearray(b"tail"), b"")
    stager.put_parts(key, parts)
    assert stager.get(key) == b"".join(bytes(part) for part in parts)
    assert stager.client.type(stager.prefix + key) == b"string"  # what workers GET
    assert 0 < stager.client.ttl(stager.prefix + key) <= conf.ASYNC_IMAGE_SAVE_STAGING_TTL


def test_redis_stager_put_parts_overwrites(redis_stager):
    stager, keys = redis_stager
    key = uuid.uuid4().hex
    keys.append(key)
    stager.put_parts(key, (b"first", b"-long-value"))
    stager.put_parts(key, (b"2nd",))
    assert stager.get(key) == b"2nd"


def test_redis_stager_put_parts_error_reply_is_raised_and_the_connection_stays_usable(
    redis_stager,
):
    import redis

    stager, keys = redis_stager
    key = uuid.uuid4().hex
    keys.append(key)
    stager.ttl = 0  # Redis refuses "EX 0"
    with pytest.raises(redis.ResponseError, match="expire"):
        stager.put_parts(key, (b"head", b"body"))
    assert stager.client.exists(stager.prefix + key) == 0
    stager.ttl = 60
    stager.put_parts(key, (b"head", b"body"))  # the pooled connection is not out of step
    assert stager.get(key) == b"headbody"
    assert stager.client.ping()


def test_redis_stager_put_parts_reconnects_after_the_server_dropped_the_connection(
    redis_stager,
):
    stager, keys = redis_stager
    key = uuid.uuid4().hex
    keys.append(key)
    stager.put_parts(key, (b"warm",))  # a pooled connection now exists
    client_id = _pooled_client_id(stager)
    admin = type(stager.client).from_url(
        os.environ.get("AIS_REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    assert admin.client_kill_filter(_id=client_id) == 1  # only our own connection
    stager.put_parts(key, (b"after", b" reconnect"))
    assert stager.get(key) == b"after reconnect"
    admin.close()


def _pooled_client_id(stager) -> int:
    pool = stager.client.connection_pool
    connection = pool.get_connection()
    try:
        connection.send_command("CLIENT", "ID")
        return int(connection.read_response())
    finally:
        pool.release(connection)


def test_redis_stager_missing(redis_stager):
    stager, _ = redis_stager
    with pytest.raises(PayloadMissing, match="expired"):
        stager.get(uuid.uuid4().hex)


def test_redis_staging_uses_redis_broker_url_when_no_staging_url(settings, broker):
    settings.ASYNC_IMAGE_SAVE_STAGING = "redis"
    settings.ASYNC_IMAGE_SAVE_STAGING_URL = None
    broker("redis://127.0.0.1:6379/3")
    stager = get_stager()
    assert isinstance(stager, RedisStager)
    assert stager.client.connection_pool.connection_kwargs["db"] == 3


def test_redis_staging_with_non_redis_broker_and_no_url(settings, broker):
    settings.ASYNC_IMAGE_SAVE_STAGING = "redis"
    settings.ASYNC_IMAGE_SAVE_STAGING_URL = None
    broker("amqp://guest@localhost//")
    with pytest.raises(ImproperlyConfigured) as info:
        get_stager()
    assert "ASYNC_IMAGE_SAVE_STAGING_URL" in str(info.value)
    assert "amqp://" in str(info.value)


def test_redis_staging_url_must_be_redis(settings):
    settings.ASYNC_IMAGE_SAVE_STAGING_URL = "http://127.0.0.1:6379/0"
    with pytest.raises(ImproperlyConfigured, match="ASYNC_IMAGE_SAVE_STAGING_URL"):
        get_stager("redis")


@pytest.mark.parametrize("scheme", ["nope", "s3", "REDIS"])
def test_get_stager_unknown_scheme(scheme):
    with pytest.raises(ImproperlyConfigured) as info:
        get_stager(scheme)
    assert repr(scheme) in str(info.value)
    assert "ASYNC_IMAGE_SAVE_STAGING" in str(info.value)


def test_get_stager_unknown_configured_scheme(settings):
    settings.ASYNC_IMAGE_SAVE_STAGING = "nope"
    with pytest.raises(ImproperlyConfigured, match="'nope'"):
        get_stager()


# ---------------------------------------------------------------------------
# resolve_ref
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ref",
    [
        "redis:../x",
        "file:abc",
        "file:" + "a" * 32,
        "directory:" + "g" * 32,
        "directory:" + "A" * 32,
        "directory:" + "a" * 31,
        "directory:" + "a" * 33,
        "directory:../../etc/passwd",
        "directory:" + "a" * 32 + "\n",
        "redis:" + "b" * 32 + "\n",
        " redis:" + "b" * 32,
        "redis:",
        "",
        "redis" + "a" * 32,
    ],
)
def test_resolve_ref_rejects(ref):
    with pytest.raises(PayloadDecodeError) as info:
        resolve_ref(ref)
    assert info.value.code == "bad_reference"


def test_resolve_ref_directory(settings, tmp_path):
    settings.ASYNC_IMAGE_SAVE_STAGING_DIR = str(tmp_path)
    key = uuid.uuid4().hex
    stager, got = resolve_ref(f"directory:{key}")
    assert isinstance(stager, DirectoryStager)
    assert stager.path == str(tmp_path)
    assert got == key
    assert stager.ref(got) == f"directory:{key}"


def test_resolve_ref_redis(settings, redis_service):
    settings.ASYNC_IMAGE_SAVE_STAGING_URL = "redis://127.0.0.1:6379/0"
    key = uuid.uuid4().hex
    stager, got = resolve_ref(f"redis:{key}")
    assert isinstance(stager, RedisStager)
    assert got == key
