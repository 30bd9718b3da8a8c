"""Signing a payload's sha256 to its job (``async_image_save.signatures``)."""

from __future__ import annotations

import hashlib
import uuid

from async_image_save import signatures

SHA = hashlib.sha256(b"photo").hexdigest()


def test_a_signature_is_valid_for_its_job_and_sha256_only():
    job_id = uuid.uuid4().hex
    signature = signatures.sign(job_id, SHA)
    assert len(signature) == 64 and signature == signatures.sign(job_id, SHA)
    assert signatures.is_valid(job_id, SHA, signature)
    assert not signatures.is_valid(uuid.uuid4().hex, SHA, signature)
    assert not signatures.is_valid(job_id, hashlib.sha256(b"other").hexdigest(), signature)
    assert not signatures.is_valid(job_id, SHA, signature[:-1] + "0")


def test_the_signature_depends_on_the_secret_key(settings):
    job_id = uuid.uuid4().hex
    settings.SECRET_KEY = "web-key"
    signature = signatures.sign(job_id, SHA)
    settings.SECRET_KEY = "another-key"
    assert signatures.sign(job_id, SHA) != signature
    assert not signatures.is_valid(job_id, SHA, signature)


def test_keys_in_secret_key_fallbacks_still_verify(settings):
    job_id = uuid.uuid4().hex
    settings.SECRET_KEY = "old-key"
    signature = signatures.sign(job_id, SHA)
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = "new-key", ["old-key"]
    assert signatures.is_valid(job_id, SHA, signature)
    assert signatures.sign(job_id, SHA) != signature  # new frames use the new key
