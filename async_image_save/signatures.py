"""Signing a payload's checksum to its job, so a worker can trust a frame without the row's.

``save_image()`` records the job before it hashes the upload: the hash is
computed after commit, by the thread that sends the task, so the request never
pays for it. The frame then carries the sha256 with an HMAC of the job id and
that sha256, keyed by the project's ``SECRET_KEY`` (Django's ``salted_hmac``).
A worker accepts a frame whose job row has no sha256 only when that signature
matches: bytes written into the broker or the staging store by anyone without
the key are rejected, as they are when the row holds the sha256. Keys in
``SECRET_KEY_FALLBACKS`` are accepted, so rotating the key loses no queued job.
"""

from __future__ import annotations

from django.conf import settings
from django.utils.crypto import constant_time_compare, salted_hmac

_SALT = "async_image_save.payload.sha256"


def sign(job_id: str, sha256: str) -> str:
    """The signature of ``sha256`` for the job whose hex id is ``job_id``."""
    return _signature(job_id, sha256, settings.SECRET_KEY)


def is_valid(job_id: str, sha256: str, signature: str) -> bool:
    """True if ``signature`` was made by :func:`sign` with the current or a fallback key."""
    keys = [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", ())]
    return any(constant_time_compare(signature, _signature(job_id, sha256, key)) for key in keys)


def _signature(job_id: str, sha256: str, key: str | bytes) -> str:
    return salted_hmac(_SALT, f"{job_id}:{sha256}", secret=key, algorithm="sha256").hexdigest()
