"""Builders for hostile and broken inputs: every one is real bytes made here, nothing committed.

Images are either saved by Pillow or assembled byte by byte (PNG chunks with
correct CRCs, GIF blocks, patched JPEG markers), so each input is exactly what
its name says: a header-only decompression bomb never holds the pixels it
claims, a frame bomb really has thousands of frames. Frames and message parts
mirror ``async_image_save.payload`` without calling it, so a forged frame can
be wrong in exactly one place. No Django or pytest imports here.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import struct
import zipfile
import zlib
from typing import Any

import msgpack
from PIL import ExifTags, Image, PngImagePlugin

# ---------------------------------------------------------------------------
# Plain images
# ---------------------------------------------------------------------------


def image_bytes(
    mode: str = "RGB", fmt: str = "JPEG", size: tuple[int, int] = (64, 48), **save: Any
) -> bytes:
    """A real image of ``mode`` saved as ``fmt`` (a gradient, so it is not all one colour)."""
    base = Image.linear_gradient("L").resize(size)
    image = base if mode == "L" else base.convert(mode)
    out = io.BytesIO()
    image.save(out, fmt, **save)
    return out.getvalue()


def jpeg(size: tuple[int, int] = (64, 48), **save: Any) -> bytes:
    return image_bytes("RGB", "JPEG", size, **save)


def png(size: tuple[int, int] = (64, 48), mode: str = "RGB", **save: Any) -> bytes:
    return image_bytes(mode, "PNG", size, **save)


# ---------------------------------------------------------------------------
# Hand-made PNG (for headers that lie)
# ---------------------------------------------------------------------------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_chunk(tag: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(tag + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)


def png_raw(
    width: int,
    height: int,
    *,
    bit_depth: int = 8,
    color_type: int = 2,
    idat: bytes | None = None,
    before_idat: tuple[bytes, ...] = (),
) -> bytes:
    """A PNG whose IHDR says ``width`` x ``height``; ``idat`` defaults to 64 zlib'd zeros."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    data = zlib.compress(b"\0" * 64) if idat is None else idat
    return (
        PNG_SIGNATURE
        + png_chunk(b"IHDR", ihdr)
        + b"".join(before_idat)
        + png_chunk(b"IDAT", data)
        + png_chunk(b"IEND", b"")
    )


def png_header_bomb(width: int = 30000, height: int = 30000) -> bytes:
    """900 megapixels by its header, about 100 bytes long: must be refused before decoding."""
    return png_raw(width, height)


def warning_range_size() -> tuple[int, int]:
    """Dimensions just over ``Image.MAX_IMAGE_PIXELS``: where Pillow only *warns*."""
    width = 10000
    height = Image.MAX_IMAGE_PIXELS // width + 1
    assert Image.MAX_IMAGE_PIXELS < width * height <= 2 * Image.MAX_IMAGE_PIXELS
    return width, height


def png_warning_range_bomb() -> bytes:
    return png_raw(*warning_range_size())


def png_16bit_rgb(size: tuple[int, int] = (40, 30)) -> bytes:
    """An RGB PNG with 16 bits per sample (Pillow cannot write one; built by hand)."""
    width, height = size
    row = b"\0" + b"".join(
        struct.pack(">HHH", x * 1500, 65535 - x * 1500, 30000) for x in range(width)
    )
    return png_raw(width, height, bit_depth=16, color_type=2, idat=zlib.compress(row * height))


def png_low_bit_palette(bits: int, size: tuple[int, int] = (40, 30)) -> bytes:
    """A palette PNG with 1, 2 or 4 bits per pixel."""
    colours = 1 << bits
    image = Image.linear_gradient("L").resize(size).quantize(colours)
    out = io.BytesIO()
    image.save(out, "PNG", bits=bits)
    return out.getvalue()


def png_palette_with_transparency() -> bytes:
    image = Image.new("P", (40, 30), 0)
    image.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    image.paste(1, (10, 10, 30, 20))
    out = io.BytesIO()
    image.save(out, "PNG", transparency=0)
    return out.getvalue()


def png_truncated_ihdr() -> bytes:
    """The IHDR chunk says (and has) 12 bytes instead of 13."""
    ihdr = struct.pack(">IIBBBBB", 16, 16, 8, 2, 0, 0, 0)[:12]
    return PNG_SIGNATURE + png_chunk(b"IHDR", ihdr) + png_chunk(b"IEND", b"")


def apng_frame_count_bomb() -> bytes:
    """An animated PNG whose acTL claims 2**31 - 1 frames while holding two."""
    frames = [Image.new("RGB", (32, 24), colour) for colour in ("red", "blue")]
    out = io.BytesIO()
    frames[0].save(out, "PNG", save_all=True, append_images=frames[1:])
    data = out.getvalue()
    start = data.index(b"acTL") - 4
    forged = png_chunk(b"acTL", struct.pack(">II", 2**31 - 1, 0))
    return data[:start] + forged + data[start + 20 :]


def png_with_exif_and_text() -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "GPS 52.52N 13.40E")
    out = io.BytesIO()
    Image.linear_gradient("L").resize((60, 40)).convert("RGB").save(
        out, "PNG", pnginfo=info, exif=gps_exif().tobytes()
    )
    return out.getvalue()


# ---------------------------------------------------------------------------
# JPEG with patched markers
# ---------------------------------------------------------------------------


def _sof_offset(data: bytes) -> int:
    """Offset of the SOF0/SOF2 segment's height field."""
    pos = 2
    while pos < len(data):
        marker, length = data[pos + 1], struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            return pos + 5
        pos += 2 + length
    raise ValueError("no SOF marker")


def jpeg_claiming_size(width: int, height: int) -> bytes:
    """A small real JPEG whose SOF header claims ``width`` x ``height``."""
    data = bytearray(jpeg((16, 16)))
    at = _sof_offset(bytes(data))
    data[at : at + 4] = struct.pack(">HH", height, width)
    return bytes(data)


def jpeg_segment(marker: int, payload: bytes) -> bytes:
    return b"\xff" + bytes((marker,)) + struct.pack(">H", len(payload) + 2) + payload


def gps_exif(orientation: int | None = None) -> Image.Exif:
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "HostileCam"
    if orientation is not None:
        exif[ExifTags.Base.Orientation] = orientation
    exif[ExifTags.IFD.GPSInfo] = {
        ExifTags.GPS.GPSLatitudeRef: "N",
        ExifTags.GPS.GPSLatitude: (52.0, 31.0, 12.0),
        ExifTags.GPS.GPSLongitudeRef: "E",
        ExifTags.GPS.GPSLongitude: (13.0, 24.0, 36.0),
    }
    return exif


XMP_WITH_GPS = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
    b'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
    b'xmlns:exif="http://ns.adobe.com/exif/1.0/" exif:GPSLatitude="52,31.2N" '
    b'exif:GPSLongitude="13,24.6E"/></rdf:RDF></x:xmpmeta>'
)


def jpeg_with_gps(orientation: int | None = None, size: tuple[int, int] = (400, 200)) -> bytes:
    """A JPEG carrying EXIF GPS (and an XMP packet with GPS too)."""
    return jpeg(size, exif=gps_exif(orientation).tobytes(), xmp=XMP_WITH_GPS)


def jpeg_with_corrupt_exif() -> bytes:
    data = jpeg((60, 40))
    return data[:2] + jpeg_segment(0xE1, b"Exif\x00\x00II*\x00\xff\xff\xff\x7fGARBAGE") + data[2:]


def jpeg_zip_polyglot() -> bytes:
    """A valid JPEG with a ZIP archive appended: both ``Image.open`` and ``zipfile`` accept it."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("payload.html", "<script>alert(document.cookie)</script>")
    return jpeg((64, 48)) + archive.getvalue()


def jpeg_html_comment_polyglot() -> bytes:
    """A valid JPEG whose COM segment is an HTML document."""
    data = jpeg((64, 48))
    html = b"<html><body><script>alert(document.domain)</script></body></html>"
    return data[:2] + jpeg_segment(0xFE, html) + data[2:]


def png_html_trailer_polyglot() -> bytes:
    """A valid PNG with an HTML document after IEND."""
    return png() + b"<!DOCTYPE html><script>alert(1)</script>"


# ---------------------------------------------------------------------------
# GIF and TIFF structure bombs
# ---------------------------------------------------------------------------


def gif_raw(
    frames: int, *, screen: tuple[int, int] = (2, 2), frame_size: tuple[int, int] = (2, 2)
) -> bytes:
    """A GIF89a assembled by hand: ``frames`` tiny frames of one colour each."""
    header = b"GIF89a" + struct.pack("<HH", *screen) + b"\x80\x00\x00"  # 2-colour table
    palette = b"\xff\x00\x00\x00\x00\xff"
    loop = b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"
    # One frame: graphic control (delay 0) + descriptor + LZW data for 2x2 pixels of colour
    # 0 or 1, alternating (as Pillow writes it: minimum code size 8, one 6-byte sub-block).
    gce = b"\x21\xf9\x04\x00\x00\x00\x00\x00"
    descriptor = b"\x2c" + struct.pack("<HHHH", 0, 0, *frame_size) + b"\x00"
    colours = (b"\x08\x06\x00\x01\x08\x04\x10\x10\x00", b"\x08\x06\x00\x03\x08\x0c\x10\x10\x00")
    pair = gce + descriptor + colours[0] + gce + descriptor + colours[1]
    body = pair * (frames // 2) + (gce + descriptor + colours[0]) * (frames % 2)
    return header + palette + loop + body + b"\x3b"


def gif_frame_bomb(frames: int = 20000) -> bytes:
    return gif_raw(frames)


def gif_screen_bomb() -> bytes:
    """A 1-frame GIF whose logical screen is 65535 x 65535."""
    return gif_raw(1, screen=(65535, 65535))


def tiff_ifd_loop() -> bytes:
    """A TIFF whose first IFD names itself as the next one (an endless page chain)."""
    data = bytearray(image_bytes("RGB", "TIFF", (32, 24)))
    assert data[:4] == b"II*\x00"
    ifd = struct.unpack("<I", data[4:8])[0]
    entries = struct.unpack("<H", data[ifd : ifd + 2])[0]
    next_at = ifd + 2 + 12 * entries
    data[next_at : next_at + 4] = struct.pack("<I", ifd)
    return bytes(data)


def tiff_broken_second_page() -> bytes:
    """A valid one-page TIFF whose next-IFD pointer names a page with no dimensions."""
    data = bytearray(image_bytes("RGB", "TIFF", (32, 24)))
    ifd = struct.unpack("<I", data[4:8])[0]
    next_at = ifd + 2 + 12 * struct.unpack("<H", data[ifd : ifd + 2])[0]
    data += b"\0" * (len(data) % 2)  # IFDs start on a word boundary
    second = len(data)
    data += struct.pack("<H", 1) + struct.pack("<HHII", 259, 3, 1, 1) + b"\0\0\0\0"  # Compression
    data[next_at : next_at + 4] = struct.pack("<I", second)
    return bytes(data)


def tiff_zero_width() -> bytes:
    """A TIFF whose ImageWidth tag is 0."""
    data = bytearray(image_bytes("L", "TIFF", (8, 8)))
    ifd = struct.unpack("<I", data[4:8])[0]
    for index in range(struct.unpack("<H", data[ifd : ifd + 2])[0]):
        at = ifd + 2 + 12 * index
        tag, kind = struct.unpack("<HH", data[at : at + 4])
        if tag == 256:  # ImageWidth
            data[at + 8 : at + 12] = b"\0\0\0\0"
            return bytes(data)
    raise ValueError("no ImageWidth tag")


def bmp_bad_depth() -> bytes:
    """A BMP whose info header says 7 bits per pixel."""
    data = bytearray(image_bytes("RGB", "BMP", (8, 8)))
    data[28:30] = struct.pack("<H", 7)
    return bytes(data)


def truncated(data: bytes, keep: float | int) -> bytes:
    """The first ``keep`` bytes (an int) or fraction (a float) of ``data``."""
    n = keep if isinstance(keep, int) else int(len(data) * keep)
    return data[:n]


def jpeg_cut_in_scan() -> bytes:
    """A JPEG cut inside its entropy-coded data: headers intact, pixels missing."""
    data = jpeg((256, 192), quality=95)
    sos = data.index(b"\xff\xda")
    return data[: sos + (len(data) - sos) // 2]


def jpeg_cut_in_header() -> bytes:
    """A JPEG cut before its start-of-scan marker (inside the Huffman tables)."""
    data = jpeg((64, 48))
    return data[: data.index(b"\xff\xc4") + 20]


def png_cut_in_idat() -> bytes:
    data = png((128, 96))
    idat = data.index(b"IDAT")
    return data[: idat + 4 + (len(data) - idat) // 3]


def png_cut_in_ihdr() -> bytes:
    return png()[:24]


def webp_cut() -> bytes:
    data = image_bytes("RGB", "WEBP", (64, 48))
    return data[: len(data) // 2]


# ---------------------------------------------------------------------------
# Not images (disguised as images by name and content type)
# ---------------------------------------------------------------------------

SVG = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<svg xmlns="http://www.w3.org/2000/svg" width="100" height="100" onload="alert(1)">'
    b'<script>fetch("/admin/")</script><rect width="100" height="100"/></svg>'
)

EPS = (
    b"%!PS-Adobe-3.0 EPSF-3.0\n"
    b"%%BoundingBox: 0 0 64 48\n"
    b"%%EndComments\n"
    b"(/tmp/async-image-save-eps-was-run) (w) file closefile\n"  # what a gs exploit would do
    b"0 0 moveto 64 48 lineto stroke\nshowpage\n%%EOF\n"
)

PDF = (
    b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
    b"2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n"
    b"3 0 obj<</Type/Page/MediaBox[0 0 64 48]/Parent 2 0 R>>endobj\n"
    b"trailer<</Root 1 0 R>>\n%%EOF\n"
)

HTML = b"<!DOCTYPE html><html><body><script>alert(document.cookie)</script></body></html>"


def dos_eps() -> bytes:
    """A DOS EPS binary header (C5 D0 D3 C6) around the PostScript above."""
    offset = 32
    header = b"\xc5\xd0\xd3\xc6" + struct.pack("<IIIIIIH", offset, len(EPS), 0, 0, 0, 0, 0xFFFF)
    return header.ljust(offset, b"\0") + EPS


def ico() -> bytes:
    """A Windows icon: a format Pillow reads but the library does not accept."""
    return image_bytes("RGB", "ICO", (32, 32))


# ---------------------------------------------------------------------------
# Payload frames, mirroring async_image_save.payload (version 1)
# ---------------------------------------------------------------------------

MAGIC = b"AIS"
CODEC_MSGPACK = ord("m")
CODEC_PICKLE = ord("p")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def header_for(data: bytes, **changes: Any) -> dict[str, Any]:
    header: dict[str, Any] = {
        "name": "photo.jpg",
        "content_type": "image/jpeg",
        "charset": None,
        "size": len(data),
        "extra": None,
        "sha256": sha256(data),
    }
    header.update(changes)
    return header


def frame(
    header: bytes,
    data: bytes = b"",
    *,
    version: int = 1,
    codec: int = CODEC_MSGPACK,
    header_len: int | None = None,
) -> bytes:
    length = len(header) if header_len is None else header_len
    return MAGIC + bytes((version, codec)) + length.to_bytes(4, "big") + header + data


def msgpack_frame(data: bytes, *, version: int = 1, **changes: Any) -> bytes:
    return frame(
        msgpack.packb(header_for(data, **changes), use_bin_type=True), data, version=version
    )


def signed_frame(data: bytes, job_id: str, secret: str, **changes: Any) -> bytes:
    """A version-2 frame whose sha256 is signed to ``job_id`` with the key ``secret``."""
    from django.test import override_settings

    from async_image_save import signatures

    with override_settings(SECRET_KEY=secret):
        signature = signatures.sign(job_id, sha256(data))
    header = msgpack.packb(header_for(data, signature=signature, **changes), use_bin_type=True)
    return frame(header, data, version=2)


def pickle_frame(data: bytes, **changes: Any) -> bytes:
    header = pickle.dumps(header_for(data, **changes), protocol=pickle.HIGHEST_PROTOCOL)
    return frame(header, data, codec=CODEC_PICKLE)


class CreatesFileWhenUnpickled:
    """Pickles to a call of ``open(path, "x")``: unpickling it creates ``path``."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "x"))


def evil_pickle_frame(data: bytes, marker_path: str) -> bytes:
    """A pickle frame for ``data`` whose name would create ``marker_path`` if unpickled."""
    return pickle_frame(data, name=CreatesFileWhenUnpickled(marker_path))


def pickle_huge_declared_bytes(declared: int = 2**34) -> bytes:
    """A 20-byte pickle header: BINBYTES8 declaring ``declared`` bytes, then 3 bytes."""
    return frame(b"\x80\x05\x8e" + struct.pack("<Q", declared) + b"abc", codec=CODEC_PICKLE)


def msgpack_huge_map_header(data: bytes) -> bytes:
    """A header whose ``extra`` is a map32 claiming 4 294 967 295 entries (in 5 bytes)."""
    packed = msgpack.packb(header_for(data, extra=None), use_bin_type=True)
    packed = packed.replace(b"\xa5extra\xc0", b"\xa5extra\xdf\xff\xff\xff\xff")
    return frame(packed, data)


def msgpack_wide_map_header(data: bytes) -> bytes:
    """A header whose ``extra`` is a real map of 5000 entries (under the 64 KiB header cap)."""
    extra = {f"k{i}": i for i in range(5000)}
    return frame(msgpack.packb(header_for(data, extra=extra), use_bin_type=True), data)


def msgpack_deep_header(data: bytes, depth: int = 20000) -> bytes:
    """A header whose ``extra`` nests one-element arrays ``depth`` levels deep."""
    packed = msgpack.packb(header_for(data, extra=None), use_bin_type=True)
    packed = packed.replace(b"\xa5extra\xc0", b"\xa5extra" + b"\x91" * depth + b"\xc0")
    return frame(packed, data)


def random_bytes(n: int, seed: int = 7) -> bytes:
    import random

    return random.Random(seed).randbytes(n)
