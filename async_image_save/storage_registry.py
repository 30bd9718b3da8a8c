"""Finding the configured ``QueuedStorage`` instances, by identity.

A transfer message names its storage by identity (``"storages:<alias>"`` or
``"field:<app.Model.field>"``) rather than carrying it, so a worker rebuilds
the same storage from its own settings and models. These functions list the
storages with their identities, turn an identity back into its storage, and
fail the row of a transfer whose storage cannot be found. ``storage.py``
re-exports them.

``QueuedStorage`` is imported inside the functions: ``storage.py`` imports this
module.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone
from django.utils.module_loading import import_string

from async_image_save.models import QueuedFile
from async_image_save.transfer_state import FAILED, LOCAL, TRANSFERRING, cut

if TYPE_CHECKING:  # pragma: no cover
    from async_image_save.storage import QueuedStorage


def iter_queued_storages(*, strict: bool = True) -> Iterator[tuple[str, QueuedStorage]]:
    """Every configured QueuedStorage with its identity: STORAGES aliases, then model fields.

    A STORAGES entry that cannot be built raises ImproperlyConfigured, or is
    skipped when ``strict`` is false.
    """
    from django.apps import apps
    from django.core.files.storage import storages
    from django.db.models import FileField

    from async_image_save.storage import QueuedStorage

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

    from async_image_save.storage import QueuedStorage

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
