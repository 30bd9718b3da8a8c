"""Exceptions raised by async_image_save.

Runtime errors share one root, :class:`AsyncImageSaveError`, and each also
inherits from the builtin a caller would naturally catch (``ValueError``,
``TypeError``...). Configuration errors are ``ImproperlyConfigured``.
"""

from __future__ import annotations


class AsyncImageSaveError(Exception):
    """Base class for runtime errors raised by async_image_save."""


class InvalidUpload(AsyncImageSaveError, TypeError):
    """``save_image()`` was given something that is not a usable upload or instance."""


class UploadTooLarge(AsyncImageSaveError, ValueError):
    """The upload is larger than ``ASYNC_IMAGE_SAVE_MAX_UPLOAD_BYTES``."""

    def __init__(self, message: str, *, size: int, limit: int) -> None:
        super().__init__(message)
        self.size, self.limit = size, limit


class PayloadDecodeError(AsyncImageSaveError, ValueError):
    """Queued bytes could not be decoded into an upload payload.

    ``code`` is a short machine-readable reason recorded on the job.
    """

    def __init__(self, message: str, *, code: str = "payload_invalid") -> None:
        super().__init__(message)
        self.code = code


class PayloadMissing(AsyncImageSaveError, LookupError):
    """A staged payload is gone (expired, swept, or never written)."""


class ChecksumMismatch(AsyncImageSaveError, ValueError):
    """The bytes a worker received do not match their sha256, or its signature is not ours.

    ``code`` is ``checksum_mismatch`` or ``bad_signature``, recorded on the job.
    """

    def __init__(self, message: str, *, code: str = "checksum_mismatch") -> None:
        super().__init__(message)
        self.code = code


class ImageRejected(AsyncImageSaveError, ValueError):
    """The bytes are not an image Pillow accepts (or exceed its decompression-bomb limit)."""

    def __init__(self, message: str, *, code: str = "not_an_image") -> None:
        super().__init__(message)
        self.code = code


class AlreadyRegistered(AsyncImageSaveError, ValueError):
    """A thumbnail spec of that name already exists for the field."""


class NotRegistered(AsyncImageSaveError, KeyError):
    """No thumbnail spec of that name exists for the field."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""
