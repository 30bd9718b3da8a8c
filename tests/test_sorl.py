"""contrib.sorl.QueuedThumbnailBackend: sorl's tag answers at once, a worker makes the file."""

from __future__ import annotations

import time

import pytest
from django.core.files.base import ContentFile
from django.template import engines

from async_image_save import tasks
from async_image_save.thumbnails import placeholder_url
from tests.conftest import jpeg_bytes
from tests.models import Photo

TEMPLATE = (
    '{% load thumbnail %}{% thumbnail photo.image "100x100" crop="center" as im %}'
    "{{ im.url }}|{{ im.width }}x{{ im.height }}{% endthumbnail %}"
)


def render(photo) -> str:
    return engines["django"].from_string(TEMPLATE).render({"photo": photo})


def make_photo(name="sorl.jpg") -> Photo:
    photo = Photo.objects.create()
    photo.image.save(name, ContentFile(jpeg_bytes(640, 480)))
    return photo


@pytest.mark.django_db
def test_tag_returns_placeholder_at_once_and_queues_once(monkeypatch):
    sent = []
    monkeypatch.setattr(
        tasks.sorl_thumbnail, "apply_async", lambda args, **kw: sent.append((args, kw))
    )
    photo = make_photo()
    calls = []
    storage = photo.image.storage
    for method in ("exists", "open", "size"):
        original = getattr(storage, method)
        monkeypatch.setattr(
            storage, method, lambda *a, _m=method, _o=original, **k: calls.append(_m) or _o(*a, **k)
        )
    assert render(photo) == f"{placeholder_url()}|100x100"
    assert render(photo) == f"{placeholder_url()}|100x100"
    assert len(sent) == 1  # deduplicated
    (source, storage_path, geometry, options), kwargs = sent[0]
    assert (source, geometry, kwargs) == (photo.image.name, "100x100", {"serializer": "msgpack"})
    assert options["crop"] == "center"
    assert all(isinstance(v, (str, int, float, bool, list, type(None))) for v in options.values())
    assert calls == []  # nothing asked of the storage in the request


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_worker_makes_the_thumbnail_and_the_tag_then_shows_it(celery_worker):
    photo = make_photo("sorl-e2e.jpg")
    assert render(photo).startswith(placeholder_url())
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        output = render(photo)
        if not output.startswith(placeholder_url()):
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"sorl thumbnail never appeared:\n{celery_worker.log_tail()}")
    url, size = output.split("|")
    assert size == "100x100"
    from sorl.thumbnail import default

    name = url.split(default.storage.base_url, 1)[-1]
    assert default.storage.exists(name)
