"""Models used by the tests."""

from __future__ import annotations

from django.db import models

from tests.storages import flaky_storage, slow_storage


class Photo(models.Model):
    title = models.CharField(max_length=100, blank=True)
    image = models.ImageField(upload_to="photos", blank=True)


class Document(models.Model):
    """Two file fields: save_image() must be told which one."""

    cover = models.ImageField(upload_to="covers", blank=True)
    attachment = models.FileField(upload_to="attachments", blank=True)


class Note(models.Model):
    """No file field at all."""

    text = models.CharField(max_length=100)


class FlakyPhoto(models.Model):
    image = models.ImageField(upload_to="photos", storage=flaky_storage, blank=True)


class SlowPhoto(models.Model):
    title = models.CharField(max_length=100, blank=True)
    image = models.ImageField(upload_to="photos", storage=slow_storage, blank=True)
