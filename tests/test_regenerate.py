"""regenerate_thumbnails --spec and --prune, and the regenerate task's own checks."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.files.base import ContentFile
from django.core.management import call_command

from async_image_save import processing
from async_image_save.models import Thumbnail
from tests.conftest import jpeg_bytes
from tests.models import Photo

pytestmark = pytest.mark.django_db


@pytest.fixture
def photo():
    photo = Photo.objects.create()
    photo.image.save("regen.jpg", ContentFile(jpeg_bytes(900, 600)))
    return photo


def run(*args):
    out = StringIO()
    call_command("regenerate_thumbnails", "tests.Photo.image", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_spec_option_makes_only_that_spec(photo):
    run("--sync", "--spec", "small")
    assert list(Thumbnail.objects.values_list("spec", flat=True)) == ["small"]


def test_prune_deletes_thumbnails_of_a_changed_spec(photo, settings):
    run("--sync")
    old = Thumbnail.objects.get(spec="small")
    assert photo.image.storage.exists(old.name)
    settings.ASYNC_IMAGE_SAVE_DEFAULT_THUMBNAILS = {"small": {"size": (120, 120)}}
    output = run("--sync", "--prune")
    assert "2 stale thumbnail(s) deleted." in output  # old small and the dropped medium
    assert not photo.image.storage.exists(old.name)
    new = Thumbnail.objects.get(spec="small")
    assert (new.width, new.height) == (120, 80)
    assert Thumbnail.objects.count() == 1


def test_regenerate_task_drops_a_message_naming_a_non_file_field(photo):
    assert processing.regenerate("tests.Photo", str(photo.pk), "title") == 0
    assert processing.regenerate("tests.Photo", str(photo.pk), "no_such_field") == 0
    assert processing.regenerate("nope.Model", str(photo.pk), "image") == 0
    assert not Thumbnail.objects.exists()
    assert processing.regenerate("tests.Photo", str(photo.pk), "image", ["medium"]) == 1
