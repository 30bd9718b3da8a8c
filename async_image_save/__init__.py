"""Take Django image uploads off the request path.

``save_image(upload, instance)`` turns a validated upload into a compact,
versioned payload and hands it to a Celery worker, which saves it through the
field's storage and then generates thumbnails.

Only names that do not need the app registry are imported eagerly; the rest
are resolved on first access so that ``INSTALLED_APPS`` can import this
package before models are ready.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from async_image_save.exceptions import (
    AlreadyRegistered,
    AsyncImageSaveError,
    ChecksumMismatch,
    InvalidUpload,
    NotRegistered,
    PayloadDecodeError,
    PayloadMissing,
    UploadTooLarge,
)

__version__ = "0.1.0"

__all__ = [
    "AlreadyRegistered",
    "AsyncImageSaveError",
    "ChecksumMismatch",
    "InvalidUpload",
    "NotRegistered",
    "PayloadDecodeError",
    "PayloadMissing",
    "UploadTooLarge",
    "ThumbnailSpec",
    "__version__",
    "process_stored",
    "register",
    "unregister",
    "save_image",
    "thumbnail",
    "wait_for_publishes",
]

_LAZY = {
    "save_image": "async_image_save.saving",
    "process_stored": "async_image_save.saving",
    "ThumbnailSpec": "async_image_save.specs",
    "register": "async_image_save.specs",
    "unregister": "async_image_save.specs",
    "thumbnail": "async_image_save.thumbnails",
    "wait_for_publishes": "async_image_save.dispatching",
}

if TYPE_CHECKING:  # pragma: no cover
    from async_image_save.dispatching import wait_for_publishes
    from async_image_save.saving import process_stored, save_image
    from async_image_save.specs import ThumbnailSpec, register, unregister
    from async_image_save.thumbnails import thumbnail


def __getattr__(name: str) -> Any:
    module_path = _LAZY.get(name)
    if module_path is None:
        raise AttributeError(f"module 'async_image_save' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(module_path), name)
