"""The one model the benchmark saves images into."""

from __future__ import annotations

from django.db import models


class Photo(models.Model):
    image = models.ImageField(upload_to="photos", blank=True)

    def __str__(self) -> str:
        return f"Photo {self.pk}"
