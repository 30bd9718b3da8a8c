"""``QueuedStorage``: write to a fast local storage now, copy to the remote one in a worker.

``save()`` writes the file to the *local* storage, records a
:class:`~async_image_save.models.QueuedFile` row in state ``local`` and, when
the transaction commits, sends the ``async_image_save.transfer_file`` task.
The task copies the file to the *remote* storage, checks the copy (size, and
the MD5 ETag where S3 gives one) and only then flips the row to ``remote``.
Until then ``url()``, ``open()``, ``size()`` and ``exists()`` answer from the
local copy, afterwards from the remote one.

The row is the truth; Django's cache mirrors its state, so rendering a page
of URLs costs neither a query per file nor any call to the remote storage.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from functools import partial
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.files import File
from django.core.files.storage import Storage
from django.db import connections, router, transaction
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.deconstruct import deconstructible
from django.utils.functional import cached_property
from django.utils.module_loading import import_string

from async_image_save import transfer as transfer_tasks  # also registers the task with Celery
from async_image_save.conf import conf
from async_image_save.models import QueuedFile

logger = logging.getLogger("async_image_save")

State = QueuedFile.State
LOCAL, TRANSFERRING, REMOTE, FAILED = State.LOCAL, State.TRANSFERRING, State.REMOTE, State.FAILED
#: Failure codes that ``async_image_save_recover --transfers --retry-failed`` sends again.
RETRYABLE_CODES = frozenset({"remote_error", "verify_failed", "not_queued", "database_error"})
#: Cached for names without a row (files not written through this storage).
_UNKNOWN = "-"
MAX_ERROR_LENGTH = 4000


def _cache() -> Any:
    from django.core.cache import caches

    return caches[conf.ASYNC_IMAGE_SAVE_STORAGE_CACHE]


def _cache_key(identity: str, name: str) -> str:
    # Hashed: memcached refuses keys over 250 bytes or with spaces.
    digest = hashlib.sha256(f"{identity}\0{name}".encode()).hexdigest()[:40]
    return f"async_image_save:qs:{digest}"


def cut(error: object) -> str:
    """``error`` as text, cut so that a huge traceback cannot bloat the row."""
    return str(error)[:MAX_ERROR_LENGTH]


@deconstructible(path="async_image_save.storage.QueuedStorage")
class QueuedStorage(Storage):
    """A storage that saves locally at once and transfers to ``remote`` in a Celery task.

    ``local`` and ``remote`` are each an alias in ``STORAGES``, a dotted path
    (to a storage class, a factory or an instance) or a storage instance; they
    are resolved on first use. Options (``STORAGES[...]["OPTIONS"]`` or
    keyword arguments):

    ``delete_local`` (``False``)
        Remove the local copy once the remote copy is verified.
    ``delay`` (``0``)
        Seconds to wait before the transfer starts (Celery ``countdown``).
    ``queue`` (``None``)
        Celery queue of the transfer task; ``None`` uses
        ``ASYNC_IMAGE_SAVE_QUEUE``, then Celery's default queue.
    ``check_remote`` (``False``)
        Whether ``exists()`` asks the remote about names the state table does
        not know (files put in the bucket by something else). Off, choosing a
        free name in ``save()`` never calls the remote.

    Workers find the storage again from its :attr:`identity`, so it must be
    configured in ``STORAGES`` or be a model field's ``storage``.
    """

    OPTIONS = ("delete_local", "delay", "queue", "check_remote")

    def __init__(self, local: Any = None, remote: Any = None, **options: Any) -> None:
        name = type(self).__name__
        unknown = sorted(set(options) - set(self.OPTIONS))
        if unknown:
            raise ImproperlyConfigured(
                f"{name} got unknown option(s) {', '.join(map(repr, unknown))}; "
                f"its options are local, remote, {', '.join(self.OPTIONS)}."
            )
        for role, value in (("local", local), ("remote", remote)):
            if value is None:
                raise ImproperlyConfigured(
                    f"{name} needs a {role} storage: an alias in STORAGES, a dotted path or "
                    "a storage instance."
                )
        self._specs = {"local": local, "remote": remote}
        self.delete_local = options.get("delete_local", False)
        self.delay = options.get("delay", 0)
        self.queue = options.get("queue")
        self.check_remote = options.get("check_remote", False)
        for option in ("delete_local", "check_remote"):
            if not isinstance(getattr(self, option), bool):
                raise ImproperlyConfigured(f"{name} option {option} must be True or False.")
        if (
            isinstance(self.delay, bool)
            or not isinstance(self.delay, (int, float))
            or self.delay < 0
        ):
            raise ImproperlyConfigured(f"{name} option delay must be seconds (0 or more).")
        if self.queue is not None and (not isinstance(self.queue, str) or not self.queue):
            raise ImproperlyConfigured(f"{name} option queue must be a queue name or None.")
        self._identity: str | None = None

    def __repr__(self) -> str:
        local, remote = self._specs["local"], self._specs["remote"]
        return f"<{type(self).__name__} local={local!r} remote={remote!r}>"

    # --- the two storages -------------------------------------------------------------

    def _resolve(self, role: str) -> Storage:
        value = self._specs[role]
        where = f"{type(self).__name__} {role}={value!r}"
        if isinstance(value, str):
            if value in settings.STORAGES:
                from django.core.files.storage import storages

                value = storages[value]
                if value is self:
                    raise ImproperlyConfigured(f"{where} names this QueuedStorage itself.")
            else:
                try:
                    value = import_string(value)
                except ImportError as exc:
                    raise ImproperlyConfigured(
                        f"{where} is neither an alias in STORAGES ({', '.join(settings.STORAGES)}) "
                        f"nor an importable dotted path: {exc}"
                    ) from exc
        if not isinstance(value, Storage) and callable(value):  # a class or a factory
            value = value()
        if not isinstance(value, Storage):
            raise ImproperlyConfigured(f"{where} is a {type(value).__name__}, not a storage.")
        if isinstance(value, QueuedStorage):
            raise ImproperlyConfigured(f"{where} is itself a QueuedStorage; nest real storages.")
        return value

    @cached_property
    def local(self) -> Storage:
        """The storage ``save()`` writes to (resolved on first use)."""
        return self._resolve("local")

    @cached_property
    def remote(self) -> Storage:
        """The storage files are transferred to (resolved on first use)."""
        return self._resolve("remote")

    @property
    def identity(self) -> str:
        """How a worker finds this storage: ``"storages:<alias>"`` or ``"field:<app.Model.field>"``.

        Transfer messages carry this string rather than the storage, so that a
        worker on another machine rebuilds the same storage from its own
        settings and models (and no credentials travel through the broker).
        """
        if self._identity is None:
            for identity, storage in iter_queued_storages(strict=False):
                if storage is self:
                    self._identity = identity
                    break
            else:
                raise ImproperlyConfigured(
                    f"{self!r} is neither in settings.STORAGES nor a model field's storage, so a "
                    "worker could not find it to transfer its files. Configure it in STORAGES or "
                    "pass it (or a callable returning it) as a FileField's storage=."
                )
        return self._identity

    # --- state: the row, mirrored in the cache ----------------------------------------------

    def _key(self, name: str) -> str:
        return _cache_key(self.identity, name)

    def remember(self, name: str, state: str) -> None:
        """Mirror ``state`` in the cache: ``remote`` for long, the others briefly."""
        timeout = (
            conf.ASYNC_IMAGE_SAVE_STORAGE_CACHE_TIMEOUT
            if state == REMOTE
            else conf.ASYNC_IMAGE_SAVE_STORAGE_PENDING_TIMEOUT
        )
        try:
            _cache().set(self._key(name), state, timeout)
        except Exception:  # the cache is only a mirror: a broken one must not break saves
            logger.exception("async_image_save could not cache the state of %s", name)

    def _forget(self, name: str) -> None:
        try:
            _cache().delete(self._key(name))
        except Exception:
            logger.exception("async_image_save could not uncache the state of %s", name)

    def state_of(self, name: str) -> str | None:
        """The state of ``name`` (cache first, then its row); ``None`` when it has no row."""
        state = None
        try:
            state = _cache().get(self._key(name))
        except Exception:
            logger.exception("async_image_save could not read the cached state of %s", name)
        if state is None:
            state = self.state_of_row(name) or _UNKNOWN
            self.remember(name, state)
        return None if state == _UNKNOWN else state

    def _current(self, name: str) -> Storage:
        state = self.state_of(name)
        if state == REMOTE:
            return self.remote
        if state is None:  # not written through this storage: wherever it is
            return self.local if self.local.exists(name) else self.remote
        return self.local

    # --- Storage API -----------------------------------------------------------------------

    def _save(self, name: str, content: Any) -> str:
        stored = self.local.save(name, content)
        self._record_local(stored)
        self.remember(stored, LOCAL)
        # After commit: the worker must find the row, and a rollback sends nothing.
        using = router.db_for_write(QueuedFile)
        transaction.on_commit(partial(self.queue_transfer, stored), using=using)
        return stored

    def _record_local(self, name: str) -> None:
        """Insert the row in state ``local``, or reset an existing one (a name saved again)."""
        fresh = {
            "state": LOCAL,
            "size": None,
            "md5": "",
            "error": "",
            "error_code": "",
            "attempts": 0,
            "updated_at": timezone.now(),
            "transferred_at": None,
        }
        using = router.db_for_write(QueuedFile)
        if connections[using].features.supports_update_conflicts_with_target:
            # One INSERT ... ON CONFLICT DO UPDATE instead of update_or_create()'s
            # SELECT FOR UPDATE, savepoint and INSERT: this runs in the request.
            QueuedFile.objects.using(using).bulk_create(
                [QueuedFile(storage=self.identity, name=name, **fresh)],
                update_conflicts=True,
                unique_fields=["storage", "name"],
                update_fields=list(fresh),
            )
        else:
            QueuedFile.objects.using(using).update_or_create(
                storage=self.identity, name=name, defaults=fresh
            )

    def queue_transfer(self, name: str) -> None:
        """Send the transfer task for ``name`` now (``save()`` does this after commit).

        A broker error is logged and recorded on the row (``not_queued``); the
        file stays local and ``async_image_save_recover --transfers`` sends it later.
        """
        try:
            transfer_tasks.enqueue(
                self.identity,
                name,
                queue=self.queue or conf.ASYNC_IMAGE_SAVE_QUEUE,
                countdown=self.delay,
            )
        except Exception as exc:
            logger.exception("async_image_save could not queue the transfer of %s", name)
            self.rows(name).filter(state=LOCAL).update(
                error_code="not_queued",
                error=cut(f"The transfer could not be queued ({type(exc).__name__}: {exc})."),
                updated_at=timezone.now(),
            )

    def _open(self, name: str, mode: str = "rb") -> File:
        return self._current(name).open(name, mode)

    def delete(self, name: str) -> None:
        """Remove both copies and the row."""
        rows = self.rows(name)
        state = rows.values_list("state", flat=True).first()
        # The row goes first: a transfer still copying then fails its final
        # compare-and-set, sees the row gone and removes what it uploaded.
        rows.delete()
        self._forget(name)
        if state != LOCAL:  # a remote copy may exist (or the file predates this storage)
            self.remote.delete(name)
        self.local.delete(name)

    def exists(self, name: str) -> bool:
        state = self.state_of(name)
        if state is None:
            return self.local.exists(name) or (self.check_remote and self.remote.exists(name))
        return (self.remote if state == REMOTE else self.local).exists(name)

    def url(self, name: str | None) -> str:
        # No storage call besides building the URL: the state comes from the cache.
        if name is not None and self.state_of(name) not in (None, REMOTE):
            return self.local.url(name)
        return self.remote.url(name)

    def size(self, name: str) -> int:
        return self._current(name).size(name)

    def path(self, name: str) -> str:
        return self._current(name).path(name)

    def listdir(self, path: str) -> tuple[list[str], list[str]]:
        directories: set[str] = set()
        files: set[str] = set()
        for storage in (self.local, self.remote):
            try:
                found = storage.listdir(path)
            except (FileNotFoundError, NotImplementedError):
                continue
            directories.update(found[0])
            files.update(found[1])
        return sorted(directories), sorted(files)

    def get_accessed_time(self, name: str) -> Any:
        return self._current(name).get_accessed_time(name)

    def get_created_time(self, name: str) -> Any:
        return self._current(name).get_created_time(name)

    def get_modified_time(self, name: str) -> Any:
        return self._current(name).get_modified_time(name)

    # --- transfer bookkeeping (the copy itself is in async_image_save.transfer) --------

    def transfer(self, name: str) -> str:
        """Copy ``name`` to the remote storage now, in this process.

        What the task runs; see :func:`~async_image_save.transfer.copy_to_remote`.
        """
        return transfer_tasks.copy_to_remote(self, name)

    def state_of_row(self, name: str) -> str | None:
        """The row's state, read from the database (never the cache)."""
        return self.rows(name).values_list("state", flat=True).first()

    def fail_transfer(self, name: str, code: str, error: str) -> bool:
        """``local``/``transferring`` -> ``failed``; the local copy keeps being served."""
        moved = (
            self.rows(name)
            .filter(state__in=(LOCAL, TRANSFERRING))
            .update(state=FAILED, error_code=code, error=cut(error), updated_at=timezone.now())
        )
        if moved:
            logger.warning("async_image_save transfer of %s failed (%s): %s", name, code, error)
            self.remember(name, FAILED)
        return bool(moved)

    def rows(self, name: str) -> QuerySet[QueuedFile]:
        """The state row of ``name`` (a queryset: every change is a filtered UPDATE)."""
        return QueuedFile.objects.filter(storage=self.identity, name=name)


def iter_queued_storages(*, strict: bool = True) -> Iterator[tuple[str, QueuedStorage]]:
    """Every configured QueuedStorage with its identity: STORAGES aliases, then model fields.

    A STORAGES entry that cannot be built raises ImproperlyConfigured, or is
    skipped when ``strict`` is false.
    """
    from django.apps import apps
    from django.core.files.storage import storages
    from django.db.models import FileField

    for alias, params in settings.STORAGES.items():
        try:
            backend = import_string(params["BACKEND"])
        except (ImportError, KeyError):
            continue
        if isinstance(backend, type) and issubclass(backend, QueuedStorage):
            try:
                storage = storages[alias]
            except ImproperlyConfigured:
                if strict:
                    raise
                continue
            yield f"storages:{alias}", storage
    for model in apps.get_models():
        for field in model._meta.local_concrete_fields:
            if isinstance(field, FileField) and isinstance(field.storage, QueuedStorage):
                yield f"field:{model._meta.label}.{field.name}", field.storage


def resolve_storage(identity: str) -> QueuedStorage:
    """The QueuedStorage named by ``identity``; ImproperlyConfigured naming it otherwise."""
    from django.apps import apps
    from django.core.files.storage import storages

    kind, _, rest = identity.partition(":")
    storage: Any = None
    try:
        if kind == "storages":
            storage = storages[rest]
        elif kind == "field":
            label, _, field = rest.rpartition(".")
            storage = apps.get_model(label)._meta.get_field(field).storage
    except (LookupError, ValueError, ImproperlyConfigured) as exc:
        raise ImproperlyConfigured(
            f"No QueuedStorage {identity!r} here ({exc}); web and worker must run the same "
            "STORAGES and models."
        ) from exc
    if not isinstance(storage, QueuedStorage):
        raise ImproperlyConfigured(
            f"{identity!r} is not a QueuedStorage in this process; web and worker must run the "
            "same STORAGES and models."
        )
    return storage


def fail_unresolved(identity: str, name: str, error: str) -> None:
    """Fail the row of a transfer whose storage this process cannot find."""
    QueuedFile.objects.filter(storage=identity, name=name, state__in=(LOCAL, TRANSFERRING)).update(
        state=FAILED, error_code="storage_unresolved", error=cut(error), updated_at=timezone.now()
    )
