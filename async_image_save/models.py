"""Database records: one :class:`ImageJob` per offloaded upload, one :class:`Thumbnail` per output.

The job row is the truth that status pages, the admin and recovery read. Every
state change is a single UPDATE made in ``status.py``.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.contrib.contenttypes.fields import GenericForeignKey
from django.contrib.contenttypes.models import ContentType
from django.db import models
from django.utils.translation import gettext_lazy as _


class ImageJob(models.Model):
    """An upload accepted by ``save_image()`` on its way to the field's storage."""

    class State(models.TextChoices):
        PENDING = "pending", _("pending")
        SAVED = "saved", _("saved")
        DONE = "done", _("done")
        FAILED = "failed", _("failed")

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    content_type = models.ForeignKey(ContentType, on_delete=models.CASCADE, related_name="+")
    object_id = models.CharField(max_length=64)
    target = GenericForeignKey("content_type", "object_id")
    field_name = models.CharField(max_length=100)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    error_code = models.CharField(max_length=40, blank=True)
    error = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0)
    claimed_by = models.CharField(max_length=32, blank=True)
    claimed_until = models.DateTimeField(null=True, blank=True)
    partial_name = models.CharField(max_length=500, blank=True)
    source_name = models.CharField(max_length=255)
    size = models.BigIntegerField()
    sha256 = models.CharField(max_length=64)
    codec = models.CharField(max_length=10, default="msgpack")
    staged_ref = models.CharField(max_length=80, blank=True)
    stored_name = models.CharField(max_length=500, blank=True)
    session_key = models.CharField(max_length=40, blank=True)
    thumbnails = models.BooleanField(default=True)
    queue = models.CharField(max_length=200, blank=True)
    saved_name = models.CharField(max_length=500, blank=True)
    task_id = models.CharField(max_length=64, blank=True)
    published_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["state", "created_at"], name="ais_job_state_created"),
            models.Index(fields=["content_type", "object_id", "field_name"], name="ais_job_target"),
        ]

    def __str__(self) -> str:
        target = f"{self.content_type_id}:{self.object_id}.{self.field_name}"
        return f"{self.source_name} -> {target} ({self.state})"

    @property
    def model_label(self) -> str:
        """``"app_label.ModelName"`` of the target model."""
        return self.content_type.model_class()._meta.label  # type: ignore[union-attr]

    @property
    def is_finished(self) -> bool:
        """True once the job is ``done`` or ``failed``."""
        return self.state in (self.State.DONE, self.State.FAILED)


class Thumbnail(models.Model):
    """A generated thumbnail, recorded so URLs and sizes never ask the storage."""

    content_type = models.ForeignKey(ContentType, on_delete=models.CASCADE, related_name="+")
    object_id = models.CharField(max_length=64)
    field_name = models.CharField(max_length=100)
    source_name = models.CharField(max_length=500)
    spec = models.CharField(max_length=100)
    spec_hash = models.CharField(max_length=16)
    name = models.CharField(max_length=500)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    size = models.BigIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["source_name", "spec"], name="ais_thumb_source_spec")
        ]
        indexes = [models.Index(fields=["source_name"], name="ais_thumb_source")]

    def __str__(self) -> str:
        return f"{self.spec}: {self.name} ({self.width}x{self.height})"


# --- QueuedStorage (async_image_save.storage) ------------------------------------------


class QueuedFile(models.Model):
    """Where the current copy of a file written through ``QueuedStorage`` is.

    The row is the truth; Django's cache only mirrors its ``state``. Every
    change is a compare-and-set UPDATE (``local`` -> ``transferring`` ->
    ``remote``), so a redelivered transfer message finds ``remote`` and does nothing.
    """

    class State(models.TextChoices):
        LOCAL = "local", _("local")
        TRANSFERRING = "transferring", _("transferring")
        REMOTE = "remote", _("remote")
        FAILED = "failed", _("failed")

    storage = models.CharField(max_length=200)
    name = models.CharField(max_length=500)
    state = models.CharField(max_length=12, choices=State.choices, default=State.LOCAL)
    size = models.BigIntegerField(null=True, blank=True)
    md5 = models.CharField(max_length=32, blank=True)
    error_code = models.CharField(max_length=40, blank=True)
    error = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    transferred_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["storage", "name"], name="ais_queued_storage_name")
        ]
        indexes = [models.Index(fields=["state", "updated_at"], name="ais_queued_state_updated")]

    def __str__(self) -> str:
        return f"{self.name} ({self.state})"


class StagedPayload(models.Model):
    """A payload staged in the database (``"database"`` staging and durable mode)."""

    key = models.CharField(max_length=32, primary_key=True)
    data = models.BinaryField()
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.key
