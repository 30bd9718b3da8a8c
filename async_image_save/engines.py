"""Thumbnail engines: Pillow (the default) or libvips, behind the same spec API.

``ASYNC_IMAGE_SAVE_ENGINE`` is ``"pillow"``, ``"vips"`` (``pip install
"async_image_save[vips]"``) or the dotted path of a class with the same
``render(fp, specs)`` method. Validation of uploads always uses Pillow, so the
accepted formats and the decompression-bomb limits do not depend on the engine.
"""

from __future__ import annotations

from functools import cache
from typing import IO, Protocol

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from async_image_save.conf import conf
from async_image_save.imaging import RenderedThumbnail, render_thumbnails
from async_image_save.specs import ThumbnailSpec

ENGINES = {
    "pillow": "async_image_save.engines.PillowEngine",
    "vips": "async_image_save.vips.VipsEngine",
}


class Engine(Protocol):
    """What an engine does: every spec from one source, largest first."""

    def render(self, fp: IO[bytes], specs: list[ThumbnailSpec]) -> list[RenderedThumbnail]: ...


class PillowEngine:
    """One decode with JPEG ``draft()``, then a cascade of resizes (see ``imaging.py``)."""

    def render(self, fp: IO[bytes], specs: list[ThumbnailSpec]) -> list[RenderedThumbnail]:
        """Render ``specs`` from ``fp``."""
        return render_thumbnails(fp, specs)


@cache
def _load(path: str) -> Engine:
    try:
        engine_class = import_string(path)
    except ImportError as exc:
        hint = " (pip install 'async_image_save[vips]')" if "vips" in path else ""
        raise ImproperlyConfigured(
            f"ASYNC_IMAGE_SAVE_ENGINE {path!r} cannot be imported: {exc}{hint}"
        ) from exc
    try:
        return engine_class()
    except ImportError as exc:  # e.g. VipsEngine without pyvips
        raise ImproperlyConfigured(
            f"ASYNC_IMAGE_SAVE_ENGINE {path!r} needs a missing package: {exc} "
            "(pip install 'async_image_save[vips]')"
        ) from exc


def get_engine() -> Engine:
    """The configured engine (instances are cached per dotted path)."""
    name = conf.ASYNC_IMAGE_SAVE_ENGINE
    return _load(ENGINES.get(name, name))
