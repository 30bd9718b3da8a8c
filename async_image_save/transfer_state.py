"""The state of a ``QueuedStorage`` file: its ``QueuedFile`` row, mirrored in Django's cache.

:class:`TransferStateMixin` holds the bookkeeping that
:class:`~async_image_save.storage.QueuedStorage` inherits: reading and writing
the row of a name and keeping the cache in step with it. The row is the
truth; the cache only saves a query per URL. The storage itself (choosing the
local or remote copy, the Storage API) stays in ``storage.py``, which
re-exports the names below.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from django.db import connections, router
from django.db.models import QuerySet
from django.utils import timezone

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


class TransferStateMixin:
    """The row and cache bookkeeping of a QueuedStorage, keyed by its :attr:`identity`.

    A mixin rather than a separate object, so that these stay methods of the
    storage (the transfer, recovery and tests call them on it) and a subclass
    overriding one of them changes what the others do, as before.
    """

    @property
    def identity(self) -> str:
        """The storage's identity (the first column of its rows); the storage defines it."""
        raise NotImplementedError

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
