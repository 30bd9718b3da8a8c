"""Thumbnail specs: what to make from each image field, declared in settings or in code."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from PIL import ImageColor

from async_image_save.conf import conf

FIT_MODES = ("fit", "crop", "fill")
CROP_ANCHORS = {
    "center": (0.5, 0.5),
    "top": (0.5, 0.0),
    "bottom": (0.5, 1.0),
    "left": (0.0, 0.5),
    "right": (1.0, 0.5),
    "top-left": (0.0, 0.0),
    "top-right": (1.0, 0.0),
    "bottom-left": (0.0, 1.0),
    "bottom-right": (1.0, 1.0),
}
FORMATS = ("jpeg", "png", "webp", "avif")
_OPTIONS = {"size", "crop", "fit", "format", "quality", "upscale", "progressive", "background"}


@dataclass(frozen=True)
class ThumbnailSpec:
    """One derived image: a box, how to fit the source into it, and how to encode it.

    ``fit``: ``"fit"`` keeps the aspect ratio inside the box, ``"crop"`` fills the
    box and cuts the overflow around ``anchor``, ``"fill"`` stretches to the box.
    ``format`` ``None`` keeps JPEG/PNG/WebP sources as they are (others become JPEG,
    or PNG when transparent).
    """

    name: str
    width: int
    height: int
    fit: str = "fit"
    anchor: str = "center"
    format: str | None = None
    quality: int = 85
    upscale: bool = False
    progressive: bool = False
    background: str = "#ffffff"

    @classmethod
    def from_options(cls, name: str, options: dict[str, Any]) -> ThumbnailSpec:
        """Build a spec from the settings dict form, raising ImproperlyConfigured on errors."""
        where = f"thumbnail spec {name!r}"
        if not isinstance(options, dict):
            raise ImproperlyConfigured(f"{where} must be a dict of options, got {options!r}.")
        unknown = set(options) - _OPTIONS
        if unknown:
            raise ImproperlyConfigured(
                f"{where} has unknown option(s) {sorted(unknown)}; known: {sorted(_OPTIONS)}."
            )
        size = options.get("size")
        if (
            not isinstance(size, (tuple, list))
            or len(size) != 2
            or not all(
                isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 10000 for v in size
            )
        ):
            raise ImproperlyConfigured(
                f"{where} needs 'size': (width, height) with integers from 1 to 10000, "
                f"got {size!r}."
            )
        crop = options.get("crop")
        fit = options.get("fit", "crop" if crop else "fit")
        anchor = crop if isinstance(crop, str) else "center"
        if fit not in FIT_MODES:
            raise ImproperlyConfigured(f"{where}: 'fit' must be one of {FIT_MODES}, got {fit!r}.")
        if anchor not in CROP_ANCHORS:
            raise ImproperlyConfigured(
                f"{where}: 'crop' must be True or one of {sorted(CROP_ANCHORS)}, got {crop!r}."
            )
        fmt = options.get("format")
        if fmt is not None:
            fmt = str(fmt).lower().replace("jpg", "jpeg")
            if fmt not in FORMATS:
                raise ImproperlyConfigured(
                    f"{where}: 'format' must be one of {FORMATS}, got {fmt!r}."
                )
        quality = options.get("quality", 85)
        if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
            raise ImproperlyConfigured(f"{where}: 'quality' must be an int from 1 to 100.")
        background = str(options.get("background", "#ffffff"))
        try:
            ImageColor.getrgb(background)
        except ValueError:
            raise ImproperlyConfigured(
                f"{where}: 'background' {background!r} is not a colour Pillow knows "
                "(use e.g. '#ffffff' or 'white')."
            ) from None
        return cls(
            name=name,
            width=size[0],
            height=size[1],
            fit=fit,
            anchor=anchor,
            format=fmt,
            quality=quality,
            upscale=bool(options.get("upscale", False)),
            progressive=bool(options.get("progressive", False)),
            background=background,
        )

    @property
    def digest(self) -> str:
        """Short hash of everything that changes the output; part of the file name."""
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:8]


def specs_for(
    model_label: str, field_name: str, *, is_image_field: bool = True
) -> list[ThumbnailSpec]:
    """The specs configured for ``"app_label.Model"``'s ``field_name``.

    Fields listed in ``ASYNC_IMAGE_SAVE_THUMBNAILS`` use their own specs (an empty
    dict turns thumbnails off); other image fields use
    ``ASYNC_IMAGE_SAVE_DEFAULT_THUMBNAILS``; plain file fields get none.
    """
    per_field = conf.ASYNC_IMAGE_SAVE_THUMBNAILS
    key = f"{model_label}.{field_name}"
    lowered = {k.lower(): v for k, v in per_field.items()}
    if key.lower() in lowered:
        options = lowered[key.lower()]
    elif is_image_field:
        options = conf.ASYNC_IMAGE_SAVE_DEFAULT_THUMBNAILS
    else:
        return []
    return [ThumbnailSpec.from_options(name, opts) for name, opts in (options or {}).items()]
