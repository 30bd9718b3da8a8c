"""The libvips engine (``ASYNC_IMAGE_SAVE_ENGINE = "vips"``, extra ``[vips]``).

Same geometry as the Pillow engine (sizes from ``imaging._intermediate_size``),
but libvips shrinks on load and resamples faster. The first spec is made with
``thumbnail_buffer`` (one decode, EXIF rotation applied, colour converted to
sRGB), every smaller one from the previous with ``thumbnail_image``, while a
pool thread encodes the size before. Animated specs are handed to the Pillow
engine.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from concurrent.futures import Future, wait
from contextlib import contextmanager
from typing import IO, Any

from async_image_save import background
from async_image_save.exceptions import ImageRejected
from async_image_save.imaging import (
    _EXTENSIONS,
    _SWAPS_AXES,
    RenderedThumbnail,
    _bomb_guard,
    _frame_count,
    _intermediate_size,
    _scale_needed,
    open_image,
    render_thumbnails,
)
from async_image_save.specs import CROP_ANCHORS, ThumbnailSpec

_SAVERS = {"jpeg": ".jpg", "png": ".png", "webp": ".webp", "avif": ".avif", "gif": ".gif"}


class VipsEngine:
    """Render specs with pyvips."""

    def __init__(self) -> None:
        import pyvips  # noqa: F401  (fail at startup, not at the first upload)

    def render(self, fp: IO[bytes], specs: list[ThumbnailSpec]) -> list[RenderedThumbnail]:
        """Render ``specs`` from ``fp``."""
        import pyvips

        # A local file is read by libvips itself (no copy into Python); else the bytes.
        path = getattr(fp, "name", None)
        local = isinstance(path, str) and os.path.isfile(path)
        data = b"" if local else fp.read()
        header_source = open(path, "rb") if local else io.BytesIO(data)  # noqa: SIM115
        with header_source, _bomb_guard():
            # Pillow reads the header only: same format policy and pixel limits as uploads.
            header = open_image(header_source)
            source_format = str(header.format)
            width, height = header.size
            if header.getexif().get(0x0112, 1) in _SWAPS_AXES:
                width, height = height, width
            animated = any(s.animated for s in specs) and _frame_count(header) > 1
            needs_colour = header.mode == "CMYK" or "icc_profile" in header.info
        still = [s for s in specs if not (s.animated and animated)]
        animated_specs = [s for s in specs if s not in still]
        results = []
        if animated_specs:
            source = open(path, "rb") if local else io.BytesIO(data)  # noqa: SIM115
            with source:
                results = render_thumbnails(source, animated_specs)
        ordered = sorted(still, key=lambda s: _scale_needed(s, width, height), reverse=True)
        # Every size but the last is encoded on a pool thread while this one makes
        # the next size (libvips runs without the GIL); the last is encoded here.
        encodes: list[tuple[ThumbnailSpec, Any, Future[tuple[bytes, str]]]] = []
        working: Any = None
        try:
            for index, spec in enumerate(ordered):
                w, h = _intermediate_size(spec, width, height)
                with _libvips_errors():
                    if working is None:
                        # Decoded once, sequentially: keep it in memory for the cascade.
                        # Colour management only when there is something to convert:
                        # it costs 4x the whole thumbnail on a plain sRGB JPEG.
                        extra = {"export_profile": "srgb"} if needs_colour else {}
                        if local:
                            first = pyvips.Image.thumbnail(path, w, height=h, size="force", **extra)
                        else:
                            first = pyvips.Image.thumbnail_buffer(
                                data, w, height=h, size="force", **extra
                            )
                        working = first.copy_memory()
                    elif (w, h) != (working.width, working.height):
                        working = working.thumbnail_image(w, height=h, size="force").copy_memory()
                    output = _crop(working, spec) if spec.fit == "crop" else working
                    last = index == len(ordered) - 1
                    task = background.submit(_encode, output, spec, source_format, here=last)
                encodes.append((spec, output, task))
        finally:
            wait([task for _spec, _output, task in encodes])  # none outlives this call
        for spec, output, task in encodes:
            with _libvips_errors():
                body, extension = task.result()
            results.append(RenderedThumbnail(spec, body, output.width, output.height, extension))
        return results


@contextmanager
def _libvips_errors() -> Iterator[None]:
    """A libvips error on the image is ``ImageRejected("damaged_image")``."""
    import pyvips

    try:
        yield
    except pyvips.Error as exc:
        raise ImageRejected(
            f"libvips could not process the image: {exc}", code="damaged_image"
        ) from exc


def _crop(image: Any, spec: ThumbnailSpec) -> Any:
    ax, ay = CROP_ANCHORS[spec.anchor]
    w, h = min(spec.width, image.width), min(spec.height, image.height)
    return image.crop(round((image.width - w) * ax), round((image.height - h) * ay), w, h)


def _encode(image: Any, spec: ThumbnailSpec, source_format: str) -> tuple[bytes, str]:
    fmt = spec.format or {"JPEG": "jpeg", "MPO": "jpeg", "PNG": "png", "WEBP": "webp"}.get(
        source_format, "png" if image.hasalpha() else "jpeg"
    )
    if image.format != "uchar" or image.interpretation != "srgb":
        # Grey, 16-bit or other spaces: 8-bit sRGB, as the Pillow engine writes.
        image = image.colourspace("srgb").cast("uchar")
    if fmt == "jpeg" and image.hasalpha():
        from PIL import ImageColor

        image = image.flatten(background=list(ImageColor.getrgb(spec.background)[:3]))
    options: dict[str, Any] = {"keep": "none"}  # no EXIF, GPS or XMP in thumbnails
    if fmt == "jpeg":
        options.update(Q=spec.quality, interlace=spec.progressive)
    elif fmt in ("webp", "avif"):
        options.update(Q=spec.quality)
    return image.write_to_buffer(_SAVERS[fmt], **options), _EXTENSIONS[fmt]
