"""The Pillow pipeline: validate bytes as an image, and render every spec from one decode.

Speed comes from two things (see ``docs/benchmarks.rst``): JPEG sources are
decoded once with ``draft()`` at the smallest DCT scale that still covers the
largest spec, and each smaller spec is resized from the previous intermediate
instead of from the full-size source.
"""

from __future__ import annotations

import io
import struct
import warnings
from collections.abc import Iterator
from concurrent.futures import Future, wait
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any

from PIL import Image, ImageCms, ImageColor, ImageOps, ImageSequence, UnidentifiedImageError

from async_image_save import background
from async_image_save.encoding import encode_image
from async_image_save.exceptions import ImageRejected
from async_image_save.specs import CROP_ANCHORS, ThumbnailSpec

#: Formats a source image may have. SVG/EPS/PDF and exotic formats are refused.
ALLOWED_SOURCE_FORMATS = frozenset(
    {"JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF", "MPO", "AVIF", "HEIF"}
)
_EXTENSIONS = {"jpeg": "jpg", "png": "png", "webp": "webp", "avif": "avif", "gif": "gif"}
#: Frames kept from an animation; more are dropped (a frame bomb costs nothing more).
MAX_ANIMATION_FRAMES = 300
#: Canvas pixels decoded for one animated spec when Pillow has no MAX_IMAGE_PIXELS;
#: otherwise that limit is the budget, so an animation costs no more than one big image.
MAX_ANIMATION_PIXELS = 100_000_000
#: What Pillow raises for broken files besides UnidentifiedImageError.
_DECODE_ERRORS = (
    OSError,
    ValueError,
    TypeError,
    SyntaxError,
    EOFError,
    IndexError,
    KeyError,
    struct.error,
    ZeroDivisionError,
)
_SWAPS_AXES = {5, 6, 7, 8}  # EXIF orientations that rotate by 90 degrees


@dataclass(frozen=True)
class RenderedThumbnail:
    """Encoded bytes for one spec, with the facts recorded in the database."""

    spec: ThumbnailSpec
    data: bytes
    width: int
    height: int
    extension: str


@contextmanager
def _bomb_guard() -> Iterator[None]:
    """Treat Pillow's decompression-bomb *warning* range as an error too."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            yield
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageRejected(
                f"Image rejected as a decompression bomb: {exc}", code="decompression_bomb"
            ) from exc


def open_image(fp: IO[bytes]) -> Image.Image:
    """Open ``fp`` lazily, refusing formats outside :data:`ALLOWED_SOURCE_FORMATS`."""
    with _bomb_guard():
        try:
            image = Image.open(fp)
        except UnidentifiedImageError as exc:
            raise ImageRejected("The file is not an image Pillow can read.") from exc
        except _DECODE_ERRORS as exc:  # a header Pillow recognised but could not read
            raise ImageRejected(f"The image is damaged: {exc}", code="damaged_image") from exc
    if image.format not in ALLOWED_SOURCE_FORMATS:
        raise ImageRejected(f"Image format {image.format} is not accepted.", code="format_refused")
    return image


def validate_image(data: bytes | memoryview) -> tuple[str, int, int]:
    """Check that ``data`` is a complete, accepted image; return (format, width, height).

    Runs Pillow's ``verify()`` (structure and checksums), then decodes the pixels
    (JPEG at 1/8 scale, which still reads every entropy-coded byte) so that a
    truncated file is refused before anything is stored. Decompression-bomb
    limits apply to both steps.
    """
    with _bomb_guard():
        image = open_image(io.BytesIO(data))
        try:
            image.verify()
            image = open_image(io.BytesIO(data))
            facts = (str(image.format), image.width, image.height)
            if image.format in ("JPEG", "MPO"):
                image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
            image.load()
        except ImageRejected:
            raise
        except Exception as exc:  # Pillow raises assorted types for broken files
            raise ImageRejected(f"The image is damaged: {exc}", code="damaged_image") from exc
    return facts


def _scale_needed(spec: ThumbnailSpec, width: int, height: int) -> float:
    """Scale factor from source to the spec's intermediate (before any crop)."""
    sx, sy = spec.width / width, spec.height / height
    scale = max(sx, sy) if spec.fit in ("crop", "fill") else min(sx, sy)
    return scale if spec.upscale else min(scale, 1.0)


def _normalise_mode(image: Image.Image) -> Image.Image:
    """Bring any source mode to RGB or RGBA, keeping transparency."""
    if image.mode in ("RGB", "RGBA"):
        return image
    has_alpha = image.mode in ("LA", "PA", "La") or (
        image.mode == "P" and "transparency" in image.info
    )
    if image.mode.startswith("I;16"):
        image = image.convert("I")  # point() only works on I and F
    if image.mode in ("I", "F"):
        # 16-bit and float greyscale: scale down to 8 bits before the RGB convert.
        image = image.point(lambda v: v / 256).convert("L")
    return image.convert("RGBA" if has_alpha else "RGB")


def _encode(
    image: Image.Image,
    spec: ThumbnailSpec,
    source_format: str,
    icc: bytes | None,
    release_gil: bool = False,
) -> tuple[bytes, str]:
    fmt = spec.format
    if fmt is None:
        fmt = {"JPEG": "jpeg", "MPO": "jpeg", "PNG": "png", "WEBP": "webp"}.get(source_format)
        if fmt is None:
            fmt = "png" if image.mode == "RGBA" else "jpeg"
    if fmt == "jpeg" and image.mode == "RGBA":
        background = Image.new("RGB", image.size, ImageColor.getrgb(spec.background)[:3])
        background.paste(image, mask=image.getchannel("A"))
        image = background
    options: dict[str, object] = {}
    if icc:
        options["icc_profile"] = icc
    if fmt == "jpeg":
        options.update(quality=spec.quality, progressive=spec.progressive)
    elif fmt in ("webp", "avif"):
        options.update(quality=spec.quality)
    # Pillow writes no EXIF unless asked to, so GPS and camera data are dropped here.
    data = encode_image(image, fmt.upper(), options, release_gil=release_gil)
    return data, _EXTENSIONS[fmt]


def _frame_count(image: Image.Image) -> int:
    """Frames in the file; a broken later frame counts as none (the first still serves)."""
    try:
        return int(getattr(image, "n_frames", 1))
    except _DECODE_ERRORS:
        return 1


def _to_srgb(image: Image.Image, icc: bytes | None) -> Image.Image:
    """CMYK to sRGB through the embedded profile when there is one (else Pillow's formula)."""
    if image.mode != "CMYK":
        return image
    if icc:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            return ImageCms.profileToProfile(
                image, source, ImageCms.createProfile("sRGB"), outputMode="RGB"
            )
        except (ImageCms.PyCMSError, OSError, ValueError):
            pass  # a broken profile: fall back to the plain conversion
    return image.convert("RGB")


def _render_animation(
    image: Image.Image, spec: ThumbnailSpec, width: int, height: int
) -> RenderedThumbnail:
    """Every frame (up to MAX_ANIMATION_FRAMES) resized; WebP or GIF out."""
    size = _intermediate_size(spec, width, height)
    frames, durations = [], []
    # Decoding every frame composites the full canvas: budget frames x canvas pixels.
    pixel_budget = Image.MAX_IMAGE_PIXELS or MAX_ANIMATION_PIXELS
    budget = min(MAX_ANIMATION_FRAMES, max(1, pixel_budget // (image.width * image.height)))
    with _bomb_guard():
        for index, frame in enumerate(ImageSequence.Iterator(image)):
            if index >= budget:
                break
            resized = _resize(frame.convert("RGBA"), size)
            frames.append(_crop(resized, spec) if spec.fit == "crop" else resized)
            durations.append(int(frame.info.get("duration", 100)))
    fmt = spec.format or ("gif" if image.format == "GIF" else "webp")
    out = io.BytesIO()
    options: dict[str, object] = {"quality": spec.quality} if fmt == "webp" else {}
    frames[0].save(
        out,
        format=fmt.upper(),
        save_all=True,
        append_images=frames[1:],
        duration=durations,
        loop=image.info.get("loop", 0),
        **options,
    )
    first = frames[0]
    return RenderedThumbnail(spec, out.getvalue(), first.width, first.height, _EXTENSIONS[fmt])


def _intermediate_size(spec: ThumbnailSpec, width: int, height: int) -> tuple[int, int]:
    """Size before cropping, computed from the original (oriented) size on both axes.

    Computing it from the source dimensions, not from a draft-reduced
    intermediate, keeps outputs exact whatever scale the JPEG was decoded at.
    """
    if spec.fit == "fill":
        return spec.width, spec.height
    scale = _scale_needed(spec, width, height)
    w, h = max(1, round(width * scale)), max(1, round(height * scale))
    if spec.fit == "fit":
        if scale <= 1.0 or spec.upscale:
            w, h = min(w, spec.width), min(h, spec.height)
    elif width * scale >= spec.width - 0.5 and height * scale >= spec.height - 0.5:
        w, h = max(w, spec.width), max(h, spec.height)  # cover: never short of the box
    return w, h


def _crop(image: Image.Image, spec: ThumbnailSpec) -> Image.Image:
    ax, ay = CROP_ANCHORS[spec.anchor]
    w, h = min(spec.width, image.width), min(spec.height, image.height)
    left = round((image.width - w) * ax)
    top = round((image.height - h) * ay)
    return image.crop((left, top, left + w, top + h))


def _resize(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Resize for thumbnails, trading a little sharpness for speed where it cannot be seen.

    ``reducing_gap=1.0`` lets Pillow box-reduce by every whole factor first (one
    cheap pass) and resample only the rest; a step under 2x uses BILINEAR, which
    at that ratio is as sharp as BICUBIC to the eye (measured in
    benchmarks/thumbnails.py: 12 MP JPEG three sizes, 2.2x -> 3.3x plain Pillow).
    """
    if size == image.size:
        return image
    small_step = image.width < 2 * size[0] and image.height < 2 * size[1]
    resample = Image.Resampling.BILINEAR if small_step else Image.Resampling.BICUBIC
    return image.resize(size, resample, reducing_gap=1.0)


def render_thumbnails(fp: IO[bytes], specs: list[ThumbnailSpec]) -> list[RenderedThumbnail]:
    """Decode ``fp`` once and render every spec, largest first, each from the last."""
    if not specs:
        return []
    with _bomb_guard():
        image = open_image(fp)
        source_format = str(image.format)
        orientation = image.getexif().get(0x0112, 1)
        width, height = image.size
        if orientation in _SWAPS_AXES:
            width, height = height, width
        ordered = sorted(specs, key=lambda s: _scale_needed(s, width, height), reverse=True)
        largest = _scale_needed(ordered[0], width, height)
        if source_format in ("JPEG", "MPO") and largest < 1.0:
            box = (int(image.width * largest) + 1, int(image.height * largest) + 1)
            image.draft("RGB", box)  # DCT-domain downscale: decode at 1/2, 1/4 or 1/8
        source_icc = image.info.get("icc_profile")
        # A CMYK profile is wrong once the pixels are in sRGB; RGB profiles are kept.
        icc = None if image.mode == "CMYK" else source_icc
        try:
            animated = any(s.animated for s in specs) and _frame_count(image) > 1
            image.seek(0)  # first frame of an animation
            image.load()
            # exif_transpose() copies the image even when nothing turns: skip it then.
            oriented = ImageOps.exif_transpose(image) if orientation not in (0, 1) else image
            working = _normalise_mode(_to_srgb(oriented, source_icc))
        except _DECODE_ERRORS as exc:
            raise ImageRejected(f"The image is damaged: {exc}", code="damaged_image") from exc
    results: list[RenderedThumbnail] = []
    for spec in [s for s in ordered if s.animated and animated]:
        results.append(_render_animation(image, spec, width, height))
    stills = [s for s in ordered if not (s.animated and animated)]
    return results + _render_stills(working, stills, width, height, source_format, icc)


def _render_stills(
    working: Image.Image,
    specs: list[ThumbnailSpec],
    width: int,
    height: int,
    source_format: str,
    icc: bytes | None,
) -> list[RenderedThumbnail]:
    """Resize down through the specs (largest first), encoding each size meanwhile.

    Every output but the last is encoded on a pool thread, which releases the
    GIL (see ``encoding.py``), while this thread resizes the next one (Pillow's
    resize releases it too); the last is encoded here. Specs whose output is
    the very same image (e.g. two sizes a small source already fits) are
    encoded once.
    """
    # key -> (the image, kept so that its id() cannot be reused; its encoding)
    encoded: dict[tuple[Any, ...], tuple[Image.Image, Future[tuple[bytes, str]]]] = {}
    planned: list[tuple[ThumbnailSpec, Image.Image, tuple[Any, ...]]] = []
    try:
        for index, spec in enumerate(specs):
            size = _intermediate_size(spec, width, height)
            if spec.fit == "fill":
                output = _resize(working, size)  # distorted: never cascade from it
            else:
                # Each spec is smaller than the last, so shrink the shared intermediate.
                working = _resize(working, size)
                output = _crop(working, spec) if spec.fit == "crop" else working
            key = (id(output), spec.format, spec.quality, spec.progressive, spec.background)
            if key not in encoded:
                # The last size is encoded here; freeing the GIL (an in-memory file) pays off
                # only on the pool.
                last = index == len(specs) - 1
                task = background.submit(
                    _encode, output, spec, source_format, icc, not last, here=last
                )
                encoded[key] = (output, task)
            planned.append((spec, output, key))
    finally:
        # Every encode has ended before this returns or raises.
        wait([task for _output, task in encoded.values()])
    results = []
    for spec, output, key in planned:
        data, extension = encoded[key][1].result()
        results.append(RenderedThumbnail(spec, data, output.width, output.height, extension))
    return results
