"""Deterministic synthetic source images for the thumbnail benchmark.

The content is built to compress like real photos rather than like flat test
patterns: smooth gradients, multi-scale "cloud" texture, soft-edged random
shapes and per-pixel grain (seeded numpy RNG, so every run gets the same bytes).
The 12 MP JPEG comes out at about 2.3 bit/px (3.5 MB), like a phone photo.
Adapted from the team's baseline benchmark (``bench/make_inputs.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


@dataclass(frozen=True)
class InputSpec:
    name: str
    label: str
    width: int
    height: int
    format: str
    save_options: dict
    kind: str  # "photo" (fine detail, opaque) or "graphic_rgba" (smoother, with alpha)
    seed: int

    @property
    def megapixels(self) -> float:
        return self.width * self.height / 1e6


INPUTS = (
    InputSpec("jpeg_12mp.jpg", "12 MP JPEG", 4000, 3000, "JPEG", {"quality": 90}, "photo", 1000),
    InputSpec("jpeg_24mp.jpg", "24 MP JPEG", 6000, 4000, "JPEG", {"quality": 90}, "photo", 1001),
    InputSpec(
        "png_4mp_rgba.png",
        "4 MP RGBA PNG",
        2400,
        1680,
        "PNG",
        {"compress_level": 6},
        "graphic_rgba",
        1002,
    ),
    InputSpec(
        "webp_2mp.webp",
        "2 MP WebP",
        1728,
        1152,
        "WEBP",
        {"quality": 90, "method": 4},
        "photo",
        1003,
    ),
    InputSpec("jpeg_0.3mp.jpg", "0.3 MP JPEG", 640, 480, "JPEG", {"quality": 90}, "photo", 1004),
)
BY_NAME = {spec.name: spec for spec in INPUTS}


def _noise_field(rng, width, height, cell, amplitude):
    """Random values on a coarse grid, bicubically upscaled: texture of scale ``cell`` px."""
    small = rng.uniform(0, 255, (max(2, height // cell), max(2, width // cell))).astype(np.uint8)
    big = Image.fromarray(small, "L").resize((width, height), Image.Resampling.BICUBIC)
    return (np.asarray(big, np.float32) - 127.5) * (amplitude / 127.5)


def _shapes(rng, width, height, count, blur):
    """Semi-transparent ellipses, rectangles and polygons, blurred to soft edges."""
    layer = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    scale = min(width, height)
    for _ in range(count):
        kind = rng.integers(0, 3)
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        r = rng.uniform(0.02, 0.25) * scale
        colour = tuple(int(v) for v in rng.integers(0, 256, 3)) + (int(rng.integers(60, 220)),)
        if kind == 0:
            draw.ellipse([cx - r, cy - r * rng.uniform(0.4, 1.0), cx + r, cy + r], fill=colour)
        elif kind == 1:
            right = cx + r * rng.uniform(0.3, 1.5)
            draw.rectangle([cx - r, cy - r * 0.6, right, cy + r], fill=colour)
        else:
            angles = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(3, 7))))
            draw.polygon([(cx + r * np.cos(a), cy + r * np.sin(a)) for a in angles], fill=colour)
    return layer.filter(ImageFilter.GaussianBlur(blur))


def make_image(spec: InputSpec) -> Image.Image:
    rng = np.random.default_rng(spec.seed)
    w, h = spec.width, spec.height
    photo = spec.kind == "photo"
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    xx /= w
    yy /= h
    pixels = np.empty((h, w, 3), np.float32)
    for c in range(3):
        a, b = rng.uniform(-120, 120, 2)
        fx, fy = rng.uniform(1, 4, 2)
        wave = 30 * np.sin(2 * np.pi * (fx * xx + fy * yy))
        pixels[..., c] = 128 + a * (xx - 0.5) + b * (yy - 0.5) + wave
    # Texture at three scales: large clouds, mid texture, fine detail (photos only).
    layers = [(96, 40 if photo else 20), (12, 24 if photo else 4)] + ([(3, 22)] if photo else [])
    for cell, amplitude in layers:
        for c in range(3):
            pixels[..., c] += _noise_field(rng, w, h, cell, amplitude)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB").convert("RGBA")
    image.alpha_composite(_shapes(rng, w, h, 120 if photo else 60, 2.5 if photo else 0.8))
    pixels = np.asarray(image.convert("RGB"), np.float32)
    pixels += rng.normal(0, 7.0 if photo else 1.2, pixels.shape).astype(np.float32)  # grain
    rgb = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    if spec.kind != "graphic_rgba":
        return rgb
    # Alpha: a rounded cut-out with a feathered border and a few translucent holes.
    mask = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(mask)
    margin = int(min(w, h) * 0.06)
    draw.rounded_rectangle([margin, margin, w - margin, h - margin], radius=margin * 2, fill=255)
    for _ in range(6):
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        r = rng.uniform(0.03, 0.1) * min(w, h)
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=int(rng.integers(0, 160)))
    rgba = rgb.convert("RGBA")
    rgba.putalpha(mask.filter(ImageFilter.GaussianBlur(margin / 3)))
    return rgba


def ensure_inputs(directory: Path, names=None) -> dict[str, Path]:
    """Write the named inputs (default: all) into ``directory`` unless already there."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for spec in INPUTS:
        if names is not None and spec.name not in names:
            continue
        path = directory / spec.name
        if not path.exists():
            tmp = path.with_suffix(".tmp" + path.suffix)
            make_image(spec).save(tmp, spec.format, **spec.save_options)
            tmp.rename(path)
        paths[spec.name] = path
    return paths
