"""Claim-check staging: large payloads wait outside the broker, the message carries a key.

kombu's Redis transport base64s and JSON-escapes every message body (about 8x
the cost of a raw ``SET`` of the same bytes), so above a small size the packed
payload is stored directly and the Celery message carries only a reference
``"<backend>:<job id hex>"``. Which path is the default depends on the broker
(see :func:`transport_defaults`).
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

from async_image_save.conf import conf
from async_image_save.exceptions import PayloadDecodeError, PayloadMissing

KiB = 1024
MiB = 1024 * KiB
_KEY_RE = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class TransportDefaults:
    """What a broker transport is good at: how much to send inline, where to stage the rest."""

    inline_max_bytes: int
    staging: str
    hard_limit_bytes: int


# Chosen from measurements on loopback (docs/benchmarks.rst): on Redis a raw SET
# beats a kombu publish at every size above a few KiB; AMQP carries raw bytes,
# so it stays inline well below RabbitMQ 4's 16 MiB default message cap.
_TRANSPORTS: dict[str, TransportDefaults] = {
    "redis": TransportDefaults(16 * KiB, "redis", 384 * MiB),
    "rediss": TransportDefaults(16 * KiB, "redis", 384 * MiB),
    "amqp": TransportDefaults(8 * MiB, "directory", 16 * MiB),
    "pyamqp": TransportDefaults(8 * MiB, "directory", 16 * MiB),
    "amqps": TransportDefaults(8 * MiB, "directory", 16 * MiB),
    "filesystem": TransportDefaults(16 * KiB, "directory", 64 * MiB),
    "memory": TransportDefaults(16 * KiB, "directory", 64 * MiB),
    "sqs": TransportDefaults(96 * KiB, "directory", 192 * KiB),
}
_FALLBACK = TransportDefaults(1 * MiB, "directory", 16 * MiB)


def broker_url() -> str:
    """The broker URL of the current Celery app."""
    from celery import current_app

    return str(current_app.conf.broker_url or "amqp://")


def transport_defaults(url: str | None = None) -> TransportDefaults:
    """Defaults for the broker at ``url`` (default: the current Celery app's broker)."""
    scheme = urlsplit(url or broker_url()).scheme.split("+")[-1].lower()
    return _TRANSPORTS.get(scheme, _FALLBACK)


def inline_max_bytes() -> int:
    """Largest payload sent inside the message, never above the broker's hard limit."""
    defaults = transport_defaults()
    configured = conf.ASYNC_IMAGE_SAVE_INLINE_MAX_BYTES
    wanted = defaults.inline_max_bytes if configured is None else configured
    return min(int(wanted), defaults.hard_limit_bytes)


class Stager(ABC):
    """A place where packed payloads wait for a worker, addressed by job id.

    ``transactional`` stagers are written inside the caller's transaction (so the
    payload commits or rolls back with the job); the others after commit.
    """

    scheme: str
    transactional: bool = False

    @abstractmethod
    def put(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key`` (a job id in hex)."""

    @abstractmethod
    def get(self, key: str) -> bytes:
        """Return the bytes under ``key``; raise :class:`PayloadMissing` if gone."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key``; a missing key is not an error."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether ``key`` is still stored."""

    def put_parts(self, key: str, parts: Sequence[bytes | bytearray | memoryview]) -> None:
        """Store the concatenation of ``parts``; stagers override this to avoid the copy."""
        self.put(key, b"".join(parts))

    def keys(self) -> Iterator[str]:
        """Every staged key (used by the orphan sweep); stagers with a TTL may yield none."""
        return iter(())

    def ref(self, key: str) -> str:
        """The reference a message carries for ``key``."""
        return f"{self.scheme}:{key}"


class RedisStager(Stager):
    """Stage payloads as plain Redis strings with a TTL (one ``SET``, no base64)."""

    scheme = "redis"

    def __init__(self, url: str, prefix: str, ttl: int) -> None:
        try:
            import redis
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImproperlyConfigured(
                "ASYNC_IMAGE_SAVE_STAGING = 'redis' needs redis-py: "
                "pip install 'async_image_save[redis]'."
            ) from exc
        self.prefix, self.ttl = prefix, ttl
        # Timeouts: a frozen Redis must fail the job, not hang its sender (a pool
        # thread, or the request with ASYNC_IMAGE_SAVE_PUBLISH_IN_BACKGROUND off).
        self.client = redis.Redis.from_url(
            url,
            socket_timeout=conf.ASYNC_IMAGE_SAVE_STAGING_TIMEOUT,
            socket_connect_timeout=min(5.0, conf.ASYNC_IMAGE_SAVE_STAGING_TIMEOUT),
        )

    def put(self, key: str, data: bytes) -> None:
        self.client.set(self.prefix + key, data, ex=self.ttl)

    def put_parts(self, key: str, parts: Sequence[bytes | bytearray | memoryview]) -> None:
        # One SET whose value is written to the socket part by part: the file
        # bytes are never copied here, and Redis keeps the value as it reads it.
        # (A SET of the header plus an APPEND of the bytes made Redis copy them
        # into a buffer twice their size.) redis-py can only send a value that
        # is one object, so the command is framed here, in RESP.
        name = (self.prefix + key).encode()
        ttl = str(self.ttl).encode()
        size = sum(len(part) for part in parts)
        head = b"*5\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n" % (len(name), name, size)
        tail = b"\r\n$2\r\nEX\r\n$%d\r\n%s\r\n" % (len(ttl), ttl)
        self._send_packed([head, *parts, tail])

    def _send_packed(self, chunks: list[bytes | bytearray | memoryview]) -> None:
        """Send one RESP command given as ``chunks``, with redis-py's connection retries."""
        pool = self.client.connection_pool
        try:
            connection = pool.get_connection()
        except TypeError:  # redis-py 5 requires a command name
            connection = pool.get_connection("SET")
        try:

            def send() -> None:
                connection.send_packed_command(chunks)
                connection.read_response()  # raises redis.ResponseError on an error reply

            connection.retry.call_with_retry(send, lambda _error: connection.disconnect())
        finally:
            pool.release(connection)

    def get(self, key: str) -> bytes:
        data = self.client.get(self.prefix + key)
        if data is None:
            raise PayloadMissing(f"Staged payload {key} is no longer in Redis (expired?).")
        return bytes(data)

    def delete(self, key: str) -> None:
        self.client.delete(self.prefix + key)

    def exists(self, key: str) -> bool:
        return bool(self.client.exists(self.prefix + key))


class DirectoryStager(Stager):
    """Stage payloads as files in a directory the web processes and workers share."""

    scheme = "directory"

    def __init__(self, path: str) -> None:
        self.path = path

    def _file(self, key: str) -> str:
        return os.path.join(self.path, key + ".payload")

    def put(self, key: str, data: bytes) -> None:
        os.makedirs(self.path, mode=0o700, exist_ok=True)
        final = self._file(key)
        partial = final + ".part"
        # Write then rename, so a worker never reads a half-written payload.
        with open(partial, "wb") as fh:
            fh.write(data)
        os.replace(partial, final)

    def put_parts(self, key: str, parts: Sequence[bytes | bytearray | memoryview]) -> None:
        os.makedirs(self.path, mode=0o700, exist_ok=True)
        final = self._file(key)
        partial = final + ".part"
        with open(partial, "wb") as fh:
            for part in parts:
                fh.write(part)
        os.replace(partial, final)

    def get(self, key: str) -> bytes:
        try:
            with open(self._file(key), "rb") as fh:
                return fh.read()
        except FileNotFoundError:
            raise PayloadMissing(
                f"Staged payload {key} is not in {self.path}: is "
                "ASYNC_IMAGE_SAVE_STAGING_DIR shared between web and worker machines?"
            ) from None

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.remove(self._file(key))

    def exists(self, key: str) -> bool:
        return os.path.exists(self._file(key))

    def keys(self) -> Iterator[str]:
        try:
            names = os.listdir(self.path)
        except FileNotFoundError:
            return
        for name in names:
            if name.endswith(".payload"):
                yield name[: -len(".payload")]


class DatabaseStager(Stager):
    """Stage payloads in a table, inside the caller's transaction.

    The payload then commits or rolls back with the instance and the job: the
    transactional outbox that ``ASYNC_IMAGE_SAVE_DURABLE`` relies on.
    """

    scheme = "database"
    transactional = True

    def put(self, key: str, data: bytes) -> None:
        from async_image_save.models import StagedPayload

        StagedPayload.objects.update_or_create(key=key, defaults={"data": data})

    def put_parts(self, key: str, parts: Sequence[bytes | bytearray | memoryview]) -> None:
        self.put(key, b"".join(parts))

    def get(self, key: str) -> bytes:
        from async_image_save.models import StagedPayload

        data = StagedPayload.objects.filter(key=key).values_list("data", flat=True).first()
        if data is None:
            raise PayloadMissing(f"Staged payload {key} is not in the database (already used?).")
        return bytes(data)

    def delete(self, key: str) -> None:
        from async_image_save.models import StagedPayload

        StagedPayload.objects.filter(key=key).delete()

    def exists(self, key: str) -> bool:
        from async_image_save.models import StagedPayload

        return StagedPayload.objects.filter(key=key).exists()

    def keys(self) -> Iterator[str]:
        from async_image_save.models import StagedPayload

        yield from StagedPayload.objects.values_list("key", flat=True).iterator()


class StorageStager(Stager):
    """Stage payloads as files in a Django storage (``STORAGES`` alias), e.g. shared S3."""

    scheme = "storage"

    def __init__(self, alias: str, directory: str) -> None:
        from django.core.files.storage import storages

        try:
            self.storage = storages[alias]
        except Exception as exc:
            raise ImproperlyConfigured(
                f"ASYNC_IMAGE_SAVE_STAGING_STORAGE = {alias!r} is not a STORAGES alias: {exc}"
            ) from exc
        self.directory = directory.strip("/")

    def _name(self, key: str) -> str:
        return f"{self.directory}/{key}.payload"

    def put(self, key: str, data: bytes) -> None:
        from django.core.files.base import ContentFile

        name = self._name(key)
        if self.storage.exists(name):
            self.storage.delete(name)
        self.storage.save(name, ContentFile(data))

    def get(self, key: str) -> bytes:
        try:
            with self.storage.open(self._name(key), "rb") as fh:
                return fh.read()
        except (FileNotFoundError, OSError) as exc:
            raise PayloadMissing(f"Staged payload {key} is not in the staging storage.") from exc

    def delete(self, key: str) -> None:
        self.storage.delete(self._name(key))

    def exists(self, key: str) -> bool:
        return self.storage.exists(self._name(key))

    def keys(self) -> Iterator[str]:
        try:
            _dirs, files = self.storage.listdir(self.directory)
        except (FileNotFoundError, OSError):
            return
        for name in files:
            if name.endswith(".payload"):
                yield name[: -len(".payload")]


_cache: dict[tuple[str, ...], Stager] = {}
_cache_lock = threading.Lock()
SCHEMES = ("redis", "directory", "database", "storage")


def get_stager(scheme: str | None = None) -> Stager:
    """Return the stager for ``scheme`` (default: the configured or per-broker one)."""
    if scheme is None and conf.ASYNC_IMAGE_SAVE_DURABLE:
        scheme = "database"
    scheme = scheme or conf.ASYNC_IMAGE_SAVE_STAGING or transport_defaults().staging
    factory: Callable[[], Stager]
    if scheme == "redis":
        url = conf.ASYNC_IMAGE_SAVE_STAGING_URL or broker_url()
        if urlsplit(url).scheme not in ("redis", "rediss", "unix"):
            raise ImproperlyConfigured(
                "ASYNC_IMAGE_SAVE_STAGING = 'redis' needs a Redis URL: set "
                f"ASYNC_IMAGE_SAVE_STAGING_URL (the broker URL {url!r} is not Redis)."
            )
        prefix, ttl = conf.ASYNC_IMAGE_SAVE_STAGING_PREFIX, conf.ASYNC_IMAGE_SAVE_STAGING_TTL
        key: tuple[str, ...] = ("redis", url, prefix, str(ttl))
        factory = lambda: RedisStager(url, prefix, int(ttl))  # noqa: E731
    elif scheme == "directory":
        path = conf.ASYNC_IMAGE_SAVE_STAGING_DIR
        key = ("directory", path)
        factory = lambda: DirectoryStager(path)  # noqa: E731
    elif scheme == "database":
        key = ("database",)
        factory = DatabaseStager
    elif scheme == "storage":
        alias = conf.ASYNC_IMAGE_SAVE_STAGING_STORAGE
        key = ("storage", alias)
        factory = lambda: StorageStager(alias, "async_image_save/staging")  # noqa: E731
    else:
        raise ImproperlyConfigured(
            f"ASYNC_IMAGE_SAVE_STAGING = {scheme!r} is not a staging backend; "
            f"use one of {', '.join(SCHEMES)}."
        )
    with _cache_lock:
        if key not in _cache:
            _cache[key] = factory()
        return _cache[key]


def resolve_ref(ref: str) -> tuple[Stager, str]:
    """Split a message's staging reference into its stager and key, validating both."""
    scheme, _, key = str(ref).partition(":")
    if scheme not in SCHEMES or not _KEY_RE.fullmatch(key):
        raise PayloadDecodeError(f"Malformed staging reference {ref!r}.", code="bad_reference")
    return get_stager(scheme), key
