"""Thumbnail specs: what to make from each image field, declared in settings or in code."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from PIL import ImageColor

from async_image_save.conf import conf
from async_image_save.exceptions import AlreadyRegistered, NotRegistered

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
FORMATS = ("jpeg", "png", "webp", "avif", "gif")
ANIMATED_FORMATS = ("webp", "gif")
_OPTIONS = {
    "size",
    "crop",
    "fit",
    "format",
    "quality",
    "upscale",
    "progressive",
    "background",
    "animated",
}


@dataclass(frozen=True)
class ThumbnailSpec:
    """One derived image: a box, how to fit the source into it, and how to encode it.

    ``fit``: ``"fit"`` keeps the aspect ratio inside the box, ``"crop"`` fills the
    box and cuts the overflow around ``anchor``, ``"fill"`` stretches to the box.
    ``format`` ``None`` keeps JPEG/PNG/WebP sources as they are (others become JPEG,
    or PNG when transparent). ``animated`` keeps every frame of an animated GIF or
    WebP (as WebP or GIF); otherwise the first frame is used.
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
    animated: bool = False

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
        animated = bool(options.get("animated", False))
        if animated and fmt not in (None, *ANIMATED_FORMATS):
            raise ImproperlyConfigured(
                f"{where}: 'animated' needs format {' or '.join(ANIMATED_FORMATS)} "
                f"(or None), not {fmt!r}."
            )
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
            animated=animated,
        )

    @property
    def digest(self) -> str:
        """Short hash of everything that changes the output; part of the file name."""
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:8]


_registry: dict[str, dict[str, ThumbnailSpec]] = {}
_cache: dict[tuple[str, str, bool], list[ThumbnailSpec]] = {}


def _target_key(target: str) -> str:
    parts = str(target).split(".")
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"{target!r} is not an 'app_label.Model.field' target.")
    return target.lower()


def register(target: str, spec: ThumbnailSpec | str, **options: Any) -> ThumbnailSpec:
    """Add a spec for ``"app_label.Model.field"``, in code (e.g. an app's ``thumbnails.py``).

    ``register("gallery.Photo.image", "small", size=(200, 200), crop="center")`` or
    ``register("gallery.Photo.image", ThumbnailSpec(...))``. Raises
    :class:`~async_image_save.exceptions.AlreadyRegistered` if the field already has
    a spec of that name (in settings or in code).
    """
    key = _target_key(target)
    if isinstance(spec, str):
        spec = ThumbnailSpec.from_options(spec, options)
    elif options:
        raise TypeError("Pass either a ThumbnailSpec or a name with options, not both.")
    model_label, _, field_name = target.rpartition(".")
    existing = {s.name for s in specs_for(model_label, field_name)} | set(_registry.get(key, {}))
    if spec.name in existing:
        raise AlreadyRegistered(f"{target} already has a thumbnail spec named {spec.name!r}.")
    _registry.setdefault(key, {})[spec.name] = spec
    _cache.clear()
    return spec


def unregister(target: str, name: str) -> None:
    """Remove a spec added with :func:`register`; NotRegistered if there is none."""
    key = _target_key(target)
    if name not in _registry.get(key, {}):
        raise NotRegistered(
            f"{target} has no spec {name!r} registered in code "
            f"(registered: {sorted(_registry.get(key, {})) or 'none'})."
        )
    del _registry[key][name]
    _cache.clear()


def get_spec(target: str, name: str) -> ThumbnailSpec:
    """The spec ``name`` of ``"app_label.Model.field"``; NotRegistered naming the known ones."""
    model_label, _, field_name = _target_key(target).rpartition(".")
    specs = {s.name: s for s in specs_for(model_label, field_name)}
    if name not in specs:
        raise NotRegistered(
            f"{target} has no thumbnail spec {name!r}; known: {sorted(specs) or 'none'}."
        )
    return specs[name]


def specs_for(
    model_label: str, field_name: str, *, is_image_field: bool = True
) -> list[ThumbnailSpec]:
    """The specs of ``"app_label.Model"``'s ``field_name``: settings, then code.

    Fields listed in ``ASYNC_IMAGE_SAVE_THUMBNAILS`` use their own specs (an empty
    dict turns the settings specs off); other image fields use
    ``ASYNC_IMAGE_SAVE_DEFAULT_THUMBNAILS``; plain file fields get none from
    settings. Specs added with :func:`register` come on top. Parsed once and
    cached until a setting or the registry changes.
    """
    cache_key = (model_label.lower(), field_name, is_image_field)
    cached = _cache.get(cache_key)
    if cached is not None:
        return cached
    key = f"{model_label}.{field_name}".lower()
    lowered = {k.lower(): v for k, v in conf.ASYNC_IMAGE_SAVE_THUMBNAILS.items()}
    if key in lowered:
        options = lowered[key]
    elif is_image_field:
        options = conf.ASYNC_IMAGE_SAVE_DEFAULT_THUMBNAILS
    else:
        options = {}
    specs = [ThumbnailSpec.from_options(name, opts) for name, opts in (options or {}).items()]
    specs += list(_registry.get(key, {}).values())
    _cache[cache_key] = specs
    return specs


def clear_cache(**kwargs: Any) -> None:
    """Forget parsed specs (connected to ``setting_changed``)."""
    if kwargs.get("setting", "ASYNC_IMAGE_SAVE_").startswith("ASYNC_IMAGE_SAVE_"):
        _cache.clear()


setting_changed.connect(clear_cache)
