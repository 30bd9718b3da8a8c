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
That bookkeeping is in :mod:`async_image_save.transfer_state`, finding the
configured storages by identity in :mod:`async_image_save.storage_registry`;
both are re-exported here.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.files import File
from django.core.files.storage import Storage
from django.db import router, transaction
from django.utils import timezone
from django.utils.deconstruct import deconstructible
from django.utils.functional import cached_property
from django.utils.module_loading import import_string

from async_image_save import dispatching
from async_image_save import transfer as transfer_tasks  # also registers the task with Celery
from async_image_save.conf import conf
from async_image_save.models import QueuedFile

# Re-exported: these were defined here before the registry and the row/cache
# bookkeeping moved to their own modules, and are still imported from here.
from async_image_save.storage_registry import (  # noqa: F401
    fail_unresolved,
    iter_queued_storages,
    resolve_storage,
)
from async_image_save.transfer_state import (  # noqa: F401
    _UNKNOWN,
    FAILED,
    LOCAL,
    MAX_ERROR_LENGTH,
    REMOTE,
    RETRYABLE_CODES,
    TRANSFERRING,
    State,
    TransferStateMixin,
    _cache,
    _cache_key,
    cut,
)

logger = logging.getLogger("async_image_save")


@deconstructible(path="async_image_save.storage.QueuedStorage")
class QueuedStorage(TransferStateMixin, Storage):
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
        # Sent like save_image()'s jobs: by default from a background thread.
        using = router.db_for_write(QueuedFile)
        send = partial(dispatching.after_commit, self.queue_transfer, stored)
        transaction.on_commit(send, using=using)
        return stored

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
