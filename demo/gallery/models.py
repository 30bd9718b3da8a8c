"""The gallery's models: photos, and the zip bundles of all their sizes."""

from __future__ import annotations

from django.db import models
from django.urls import reverse


class Photo(models.Model):
    """A photo; ``image`` stays empty until the worker has saved the upload."""

    title = models.CharField(max_length=200, blank=True)
    image = models.ImageField(upload_to="photos", blank=True)
    created = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created", "-pk"]

    def __str__(self) -> str:
        return self.title or f"Photo {self.pk}"

    def get_absolute_url(self) -> str:
        return reverse("gallery:detail", args=[self.pk])


class SizeBundle(models.Model):
    """A zip of a photo's original and its thumbnails, built by the ``gallery.build_zip`` task."""

    class State(models.TextChoices):
        PENDING = "pending", "pending"
        BUILDING = "building", "building"
        DONE = "done", "done"
        FAILED = "failed", "failed"

    photo = models.ForeignKey(Photo, on_delete=models.CASCADE, related_name="bundles")
    source_name = models.CharField(max_length=500, help_text="The image the zip was built from.")
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    file = models.FileField(upload_to="zips", blank=True)
    error = models.TextField(blank=True)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created", "-pk"]

    def __str__(self) -> str:
        return f"Sizes of {self.photo} ({self.state})"

    def get_absolute_url(self) -> str:
        return reverse("gallery:bundle", args=[self.pk])

    @property
    def is_finished(self) -> bool:
        return self.state in (self.State.DONE, self.State.FAILED)
