"""Hostile and broken inputs: each one ends in a clear, machine-readable outcome.

Every input is made by ``tests/hostile_inputs.py``. Two layers:

* **unit** (most cases): ``save_image()`` queues the job with the publish
  recorded, the test forges or keeps the (message, body) pair, and
  ``processing.save_upload`` runs in this process against the real database,
  with a private ``MEDIA_ROOT`` and staging directory so "nothing written" and
  "staging cleaned" mean exactly that;
* **end to end**: forged messages published with ``tasks.publish`` to the real
  worker subprocess (``celery_worker``).

For a refused input the checks are always the same (:func:`assert_refused`):
the job is ``failed`` with the expected ``error_code``, the model field still
names the old file, no file appeared under ``MEDIA_ROOT``, and the staged
payload is gone. Decisions on inputs that are *accepted* are written next to
their cases. Known bugs are ``xfail(strict=True)`` with the reason.
"""

from __future__ import annotations

import io
import os
import time
import unicodedata
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from django import forms
from django.conf import settings as django_settings
from django.contrib.auth.models import User
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import EpsImagePlugin, Image

from async_image_save import imaging, processing, save_image
from async_image_save.exceptions import ImageRejected
from async_image_save.forms import AsyncImageForm
from async_image_save.models import ImageJob, StagedPayload, Thumbnail
from async_image_save.processing import StorageFailure
from async_image_save.specs import ThumbnailSpec
from async_image_save.staging import resolve_ref
from tests import hostile_inputs as H
from tests.conftest import wait_for_job
from tests.models import Photo

# Every test here captures tasks.publish in this process and reads it as the commit returns.
pytestmark = pytest.mark.usefixtures("send_on_commit_thread")

MAX_NAME = Photo._meta.get_field("image").max_length


# ---------------------------------------------------------------------------
# Harness
# ---------------------------------------------------------------------------


def files_under(root: str | Path) -> list[str]:
    found = []
    for base, _dirs, names in os.walk(root):
        found += [os.path.relpath(os.path.join(base, n), root) for n in names]
    return sorted(found)


@pytest.fixture
def media(settings, tmp_path):
    """A private MEDIA_ROOT: "no new file" is checked against an exact listing."""
    settings.MEDIA_ROOT = str(tmp_path / "media")
    os.makedirs(settings.MEDIA_ROOT)
    return settings.MEDIA_ROOT


@pytest.fixture
def staging(settings, tmp_path):
    """Every payload staged as a file in a private directory (nothing inline)."""
    settings.ASYNC_IMAGE_SAVE_STAGING = "directory"
    settings.ASYNC_IMAGE_SAVE_INLINE_MAX_BYTES = 0
    settings.ASYNC_IMAGE_SAVE_STAGING_DIR = str(tmp_path / "staging")
    return tmp_path / "staging"


@dataclass
class Queued:
    job: ImageJob
    message: dict[str, Any]
    body: bytes | str
    data: bytes

    def run(self, message: dict[str, Any] | None = None, body: Any = None) -> str:
        """Run the save step (and the thumbnail step after a save) in this process."""
        message = self.message if message is None else message
        body = self.body if body is None else body
        state = processing.save_upload(
            message["job_id"],
            body,
            model=message["model"],
            pk=message["pk"],
            field=message["field"],
        )
        if state == "saved":
            state = processing.make_thumbnails(message["job_id"])
        return state


@pytest.fixture
def queue(django_capture_on_commit_callbacks):
    """``queue(data, instance, name=...)``: save_image() with the publish recorded, not sent."""

    def make(
        data: bytes,
        instance: Any,
        name: str = "upload.jpg",
        content_type: str | None = "image/jpeg",
        field_name: str | None = None,
    ) -> Queued:
        calls: list[tuple[dict, Any]] = []
        with pytest.MonkeyPatch.context() as mp, django_capture_on_commit_callbacks(execute=True):
            mp.setattr("async_image_save.tasks.publish", lambda m, b: calls.append((m, b)))
            job = save_image(SimpleUploadedFile(name, data, content_type), instance, field_name)
        [(message, body)] = calls
        return Queued(job, message, body, data)

    return make


def photo_with_old_image() -> Photo:
    """A Photo whose field already names a file: "unchanged" is then a real check."""
    photo = Photo.objects.create(title="before")
    photo.image.save("old.jpg", ContentFile(H.jpeg((20, 10))), save=True)
    return photo


def staged_exists(ref: str) -> bool:
    stager, key = resolve_ref(ref)
    return stager.exists(key)


def assert_refused(job_id: Any, code: str, photo: Photo, old_name: str, before: list[str]) -> None:
    job = ImageJob.objects.get(pk=job_id)
    assert (job.state, job.error_code) == ("failed", code), job.error
    assert job.error  # a human-readable reason next to the code
    assert job.saved_name == ""
    photo.refresh_from_db()
    assert photo.image.name == old_name
    assert photo.title == "before"
    assert files_under(django_settings.MEDIA_ROOT) == before
    if job.staged_ref:
        assert not staged_exists(job.staged_ref)


def read(storage: Any, name: str) -> bytes:
    with storage.open(name, "rb") as fh:
        return fh.read()


def thumbnails_of(photo: Photo) -> dict[str, bytes]:
    return {
        t.spec: read(photo.image.storage, t.name)
        for t in Thumbnail.objects.filter(source_name=photo.image.name)
    }


def assert_saved(queued: Queued, photo: Photo, before: list[str]) -> dict[str, bytes]:
    """Done: the field names the new file, which holds exactly the uploaded bytes."""
    job = ImageJob.objects.get(pk=queued.job.pk)
    assert job.state == "done", (job.error_code, job.error)
    photo.refresh_from_db()
    assert photo.image.name == job.saved_name
    assert read(photo.image.storage, photo.image.name) == queued.data
    if job.staged_ref:
        assert not staged_exists(job.staged_ref)
    thumbs = thumbnails_of(photo)
    assert set(thumbs) == {"small", "medium"}
    new = set(files_under(django_settings.MEDIA_ROOT)) - set(before)
    assert len(new) == 3  # the original and two thumbnails, nothing else
    for data in thumbs.values():
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            assert im.format in ("JPEG", "PNG")
    return thumbs


# ---------------------------------------------------------------------------
# 1. Image content: refused (unit layer, staged in a directory)
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Content:
    id: str
    build: Callable[[], bytes]
    name: str
    content_type: str
    code: str = ""  # expected error_code; "" means accepted
    marks: tuple[Any, ...] = field(default=())

    def param(self) -> Any:
        return pytest.param(self, id=self.id, marks=self.marks)


def _bug(reason: str) -> tuple[Any, ...]:
    """A bug this suite found and that is fixed: the case stays as a regression test."""
    return ()


LEAKS_OPEN_ERROR = _bug(
    "imaging.open_image() only wraps UnidentifiedImageError; Pillow raises OSError/ValueError "
    "from Image.open() for broken headers. validate_image() lets it escape "
    "job_input.unpack(), processing._save_claimed() does not catch it, so save_upload() "
    "raises, the lease is released and the job stays 'pending' with no error_code (a Celery "
    "task error, acked, never retried). Expected: failed/damaged_image (or not_an_image)."
)

REFUSED = [
    # Decompression bombs, detected from the header alone (a ~100 byte file).
    Content("png-header-bomb-30000x30000", H.png_header_bomb, "bomb.png", "image/png",
            "decompression_bomb"),
    Content("png-warning-range-bomb", H.png_warning_range_bomb, "warn.png", "image/png",
            "decompression_bomb"),
    Content("jpeg-header-bomb", lambda: H.jpeg_claiming_size(30000, 30000), "bomb.jpg",
            "image/jpeg", "decompression_bomb"),
    Content("jpeg-warning-range-bomb", lambda: H.jpeg_claiming_size(*H.warning_range_size()),
            "warn.jpg", "image/jpeg", "decompression_bomb"),
    Content("gif-65535x65535-screen", H.gif_screen_bomb, "screen.gif", "image/gif",
            "decompression_bomb"),
    # Truncated.
    Content("jpeg-cut-in-scan", H.jpeg_cut_in_scan, "cut.jpg", "image/jpeg", "damaged_image"),
    Content("png-cut-in-idat", H.png_cut_in_idat, "cut.png", "image/png", "damaged_image"),
    Content("jpeg-cut-in-header", H.jpeg_cut_in_header, "cut.jpg", "image/jpeg",
            "damaged_image", LEAKS_OPEN_ERROR),
    Content("png-cut-in-ihdr", H.png_cut_in_ihdr, "cut.png", "image/png", "damaged_image",
            LEAKS_OPEN_ERROR),
    Content("png-12-byte-ihdr", H.png_truncated_ihdr, "ihdr.png", "image/png", "damaged_image",
            LEAKS_OPEN_ERROR),
    Content("webp-cut-in-half", H.webp_cut, "cut.webp", "image/webp", "damaged_image",
            LEAKS_OPEN_ERROR),
    Content("bmp-7-bits-per-pixel", H.bmp_bad_depth, "odd.bmp", "image/bmp", "damaged_image",
            LEAKS_OPEN_ERROR),
    # Other formats under an image name and content type.
    Content("svg-as-png", lambda: H.SVG, "logo.png", "image/png", "not_an_image"),
    Content("eps-as-png", lambda: H.EPS, "art.png", "image/png", "format_refused"),
    Content("dos-eps-as-png", H.dos_eps, "art.png", "image/png", "format_refused"),
    Content("pdf-as-jpg", lambda: H.PDF, "doc.jpg", "image/jpeg", "not_an_image"),
    Content("html-as-jpg", lambda: H.HTML, "page.jpg", "image/jpeg", "not_an_image"),
    Content("ico-as-png", H.ico, "icon.png", "image/png", "format_refused"),
    Content("tiff-zero-width", H.tiff_zero_width, "zero.tif", "image/tiff", "not_an_image"),
    Content("empty-file", lambda: b"", "empty.jpg", "image/jpeg", "not_an_image"),
    Content("random-bytes", lambda: H.random_bytes(4096), "noise.jpg", "image/jpeg",
            "not_an_image"),
]  # fmt: skip


@pytest.mark.django_db
@pytest.mark.parametrize("case", [c.param() for c in REFUSED])
def test_hostile_image_is_refused(case, media, staging, queue, monkeypatch):
    # EPS must never reach Ghostscript: the format is refused right after Image.open().
    def ghostscript(*args, **kwargs):
        raise AssertionError("Ghostscript was invoked")

    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", ghostscript)
    photo = photo_with_old_image()
    old_name, before = photo.image.name, files_under(media)
    queued = queue(case.build(), photo, case.name, case.content_type)
    assert queued.body == queued.job.staged_ref and staged_exists(queued.job.staged_ref)
    started = time.monotonic()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        state = queued.run()
    assert time.monotonic() - started < 5  # bombs are refused from the header, never decoded
    assert state == "failed"
    assert_refused(queued.job.pk, case.code, photo, old_name, before)
    assert os.listdir(staging) == []


# ---------------------------------------------------------------------------
# 2. Image content: accepted (odd but valid images; structure bombs that stay bounded)
# ---------------------------------------------------------------------------


def _mode(mode: str, fmt: str, **save: Any) -> Callable[[], bytes]:
    return lambda: H.image_bytes(mode, fmt, (120, 90), **save)


I16B_RENDER = _bug(
    "a big-endian 16-bit greyscale TIFF (mode I;16B) passes validate_image() and is saved, "
    "but imaging._normalise_mode() calls image.point(lambda) which Pillow refuses for I;16B "
    "('point operation not supported for this mode'); make_thumbnails() turns that into a "
    "StorageFailure, retried 5 times, ending failed/thumbnail_error. Expected: thumbnails "
    "(I;16B is listed in _normalise_mode) or at least a non-retryable image error code."
)

BROKEN_PAGE = _bug(
    "a one-page TIFF whose next-IFD pointer names an IFD without ImageWidth passes "
    "validate_image() (first page only) and is saved, but render_thumbnails() evaluates "
    "image.n_frames (for animated specs, even when none is configured) outside its try: "
    "Pillow raises TypeError('Missing dimensions'), make_thumbnails() wraps it as "
    "StorageFailure, retried, ending failed/thumbnail_error. Expected: thumbnails from the "
    "first page (or an ImageRejected code)."
)

ACCEPTED = [
    # Frame and page bombs: only the first frame is ever decoded.
    Content("gif-20000-frames", H.gif_frame_bomb, "frames.gif", "image/gif"),
    Content("apng-claims-2e31-frames", H.apng_frame_count_bomb, "anim.png", "image/png"),
    Content("tiff-ifd-loop", H.tiff_ifd_loop, "loop.tif", "image/tiff"),
    Content(
        "tiff-broken-second-page",
        H.tiff_broken_second_page,
        "pages.tif",
        "image/tiff",
        marks=BROKEN_PAGE,
    ),
    # Polyglots: valid images with something else attached. Accepted, stored byte for byte
    # (the original is the user's file), thumbnails re-encoded so the extra part is gone.
    Content("jpeg+zip-polyglot", H.jpeg_zip_polyglot, "poly.jpg", "image/jpeg"),
    Content("jpeg-html-comment", H.jpeg_html_comment_polyglot, "poly.jpg", "image/jpeg"),
    Content("png-html-trailer", H.png_html_trailer_polyglot, "poly.png", "image/png"),
    # Odd modes and bit depths.
    Content("png-16bit-grey", _mode("I;16", "PNG"), "g16.png", "image/png"),
    Content("png-16bit-rgb", H.png_16bit_rgb, "rgb16.png", "image/png"),
    Content("png-1bit-palette", lambda: H.png_low_bit_palette(1), "p1.png", "image/png"),
    Content("png-2bit-palette", lambda: H.png_low_bit_palette(2), "p2.png", "image/png"),
    Content("png-4bit-palette", lambda: H.png_low_bit_palette(4), "p4.png", "image/png"),
    Content("png-1bit-mode-1", _mode("1", "PNG"), "bw.png", "image/png"),
    Content("png-LA", _mode("LA", "PNG"), "la.png", "image/png"),
    Content("png-P-transparency", H.png_palette_with_transparency, "pt.png", "image/png"),
    Content("jpeg-CMYK", _mode("CMYK", "JPEG"), "cmyk.jpg", "image/jpeg"),
    Content("tiff-I;16", _mode("I;16", "TIFF"), "i16.tif", "image/tiff"),
    Content("tiff-I;16B", _mode("I;16B", "TIFF"), "i16b.tif", "image/tiff", marks=I16B_RENDER),
    Content("tiff-I-32bit", _mode("I", "TIFF"), "i32.tif", "image/tiff"),
    Content("tiff-F-float", _mode("F", "TIFF"), "f.tif", "image/tiff"),
    Content("tiff-LAB", _mode("LAB", "TIFF"), "lab.tif", "image/tiff"),
    Content("tiff-CMYK", _mode("CMYK", "TIFF"), "cmyk.tif", "image/tiff"),
    Content("tiff-RGBA", _mode("RGBA", "TIFF"), "rgba.tif", "image/tiff"),
    Content("jpeg-corrupt-exif", H.jpeg_with_corrupt_exif, "exif.jpg", "image/jpeg"),
    # Content-type lies: the bytes decide, the declared type is never trusted or used.
    Content("jpeg-declared-png", lambda: H.jpeg((64, 48)), "a.jpg", "image/png"),
    Content("jpeg-declared-text-html", lambda: H.jpeg((64, 48)), "a.jpg", "text/html"),
    Content("png-named-jpg", lambda: H.png((64, 48)), "a.jpg", "image/jpeg"),
]


@pytest.mark.django_db
@pytest.mark.parametrize("case", [c.param() for c in ACCEPTED])
def test_odd_but_valid_image_is_saved_with_thumbnails(case, media, staging, queue):
    photo = photo_with_old_image()
    before = files_under(media)
    queued = queue(case.build(), photo, case.name, case.content_type)
    started = time.monotonic()
    assert queued.run() == "done", ImageJob.objects.get(pk=queued.job.pk).error
    assert time.monotonic() - started < 10
    thumbs = assert_saved(queued, photo, before)
    assert os.listdir(staging) == []
    if case.id == "jpeg+zip-polyglot":
        assert b"PK\x03\x04" in read(photo.image.storage, photo.image.name)
        assert all(b"PK\x03\x04" not in data for data in thumbs.values())


ANIMATED = {"tests.Photo.image": {"anim": {"size": (100, 100), "animated": True}}}


@pytest.mark.django_db
def test_frame_bomb_with_an_animated_spec_keeps_a_bounded_frame_count(settings, media, queue):
    settings.ASYNC_IMAGE_SAVE_THUMBNAILS = ANIMATED
    photo = photo_with_old_image()
    queued = queue(H.gif_frame_bomb(20000), photo, "frames.gif", "image/gif")
    started = time.monotonic()
    assert queued.run() == "done", ImageJob.objects.get(pk=queued.job.pk).error
    assert time.monotonic() - started < 10
    photo.refresh_from_db()
    [thumb] = thumbnails_of(photo).values()
    with Image.open(io.BytesIO(thumb)) as im:
        assert 1 < im.n_frames <= imaging.MAX_ANIMATION_FRAMES


def test_animated_frames_times_pixels_are_bounded(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 200_000)  # scale the attack down: 400x400
    data = H.gif_raw(300, screen=(400, 400))  # 160 000 pixels a frame, under the limit
    decoded = []
    resize = imaging._resize
    monkeypatch.setattr(
        imaging,
        "_resize",
        lambda im, size: decoded.append(im.width * im.height) or resize(im, size),
    )
    spec = ThumbnailSpec("anim", 100, 100, animated=True)
    try:
        imaging.render_thumbnails(io.BytesIO(data), [spec])
    except ImageRejected as exc:
        assert exc.code == "decompression_bomb"
    assert sum(decoded) <= 2 * Image.MAX_IMAGE_PIXELS  # observed: 300 x 160 000 = 48 000 000


@pytest.mark.django_db
@pytest.mark.parametrize(
    "build", [H.jpeg_with_gps, H.png_with_exif_and_text], ids=["jpeg-exif+xmp", "png-exif+text"]
)
def test_gps_never_reaches_thumbnails(build, media, queue):
    """Decision: the original is stored as uploaded (GPS included); thumbnails carry none."""
    photo = photo_with_old_image()
    before = files_under(media)
    data = build()
    queued = queue(data, photo, "gps.jpg")
    assert queued.run() == "done"
    thumbs = assert_saved(queued, photo, before)
    for thumb in thumbs.values():
        with Image.open(io.BytesIO(thumb)) as im:
            assert dict(im.getexif()) == {}
            assert not {"exif", "xmp", "XML:com.adobe.xmp", "Comment"} & set(im.info)
        for needle in (b"Exif\x00\x00", b"eXIf", b"HostileCam", b"52,31", b"GPS", b"xmpmeta"):
            assert needle not in thumb


@pytest.mark.django_db
def test_exif_orientation_8_is_applied_to_thumbnails_only(media, queue):
    photo = photo_with_old_image()
    before = files_under(media)
    queued = queue(H.jpeg_with_gps(orientation=8, size=(400, 200)), photo, "rotated.jpg")
    assert queued.run() == "done"
    thumbs = assert_saved(queued, photo, before)
    sizes = {spec: Image.open(io.BytesIO(data)).size for spec, data in thumbs.items()}
    assert sizes == {"small": (100, 200), "medium": (200, 400)}  # rotated by 90 degrees
    with Image.open(io.BytesIO(read(photo.image.storage, photo.image.name))) as original:
        assert original.size == (400, 200)  # the original is not rewritten


# ---------------------------------------------------------------------------
# 3. File names
# ---------------------------------------------------------------------------

EMPTY_AFTER_DJANGO = _bug(
    "sanitize_name() keeps names made only of characters Django's get_valid_name() drops "
    "(emoji, punctuation); FileField.generate_filename() then raises SuspiciousFileOperation "
    "inside committing.write_file(), which wraps every exception as StorageFailure: the task "
    "retries ASYNC_IMAGE_SAVE_MAX_RETRIES times and ends failed/storage_error (retryable, the "
    "staged payload is kept for a retry that can never succeed). Expected: a fallback name "
    "(e.g. 'upload') or an immediate non-retryable failure."
)

LONG_EXTENSION = _bug(
    "a name whose 'extension' is over 16 bytes keeps it whole (sanitize_name() budget is 200 "
    "bytes, the field's max_length is 100); Storage.get_available_name() cannot shorten the "
    "root enough and raises SuspiciousFileOperation -> StorageFailure, retried, ending "
    "failed/storage_error. Expected: saved under a name within max_length, or a clear "
    "non-retryable failure."
)

LINE_SEPARATOR = _bug(
    "sanitize_name() drops Unicode category C only; U+2028/U+2029 (Zl/Zp line and paragraph "
    "separators) stay in ImageJob.source_name (the stored file name is fine: Django's "
    "get_valid_name() drops them). Expected: no line breaks of any kind in the recorded name."
)


@dataclass(frozen=True)
class Name:
    id: str
    raw: str
    stored: str | None = None  # expected stored base name, when exact
    marks: tuple[Any, ...] = ()


NAMES = [
    Name("posix-traversal", "../../etc/passwd.jpg", "passwd.jpg"),
    Name("windows-traversal", "..\\..\\windows\\win.ini.jpg", "win.ini.jpg"),
    Name("absolute-path", "/var/www/static/site.jpg", "site.jpg"),
    Name("nul-byte", "a\x00b.jpg", "ab.jpg"),
    Name("newline", "line\nbreak\r.jpg", "linebreak.jpg"),
    Name("escape-sequences", "\x1b[31mred\x1b[0m.jpg", "31mred0m.jpg"),
    Name("rtl-override", "photo\u202egpj.exe.jpg", "photogpj.exe.jpg"),
    Name("hidden-dotfile", ".htaccess.jpg", "htaccess.jpg"),
    # Decision: Windows device names are kept (the storage is POSIX; Django keeps them too).
    Name("windows-reserved-CON", "CON.jpg", "CON.jpg"),
    Name("windows-reserved-nul", "nul.png", "nul.png"),
    Name("overlong-300", "x" * 300 + ".jpg"),
    Name("overlong-multibyte", "\u6f22" * 300 + ".jpg"),
    Name("only-dots", "....", "upload"),
    Name("percent-encoded-traversal", "%2e%2e%2f%2e%2e%2fx.jpg", "2e2e2f2e2e2fx.jpg"),
    Name("line-separator", "a\u2028b\u2029c.jpg", "abc.jpg", LINE_SEPARATOR),
    Name("emoji-only", "\U0001f600", None, EMPTY_AFTER_DJANGO),
    Name("punctuation-only", "@@@", None, EMPTY_AFTER_DJANGO),
    Name("overlong-extension", "a." + "x" * 150, None, LONG_EXTENSION),
]


def _no_bad_chars(text: str) -> bool:
    return not any(unicodedata.category(ch)[0] == "C" or ch in "\u2028\u2029" for ch in text)


@pytest.mark.django_db
@pytest.mark.parametrize("case", [pytest.param(n, id=n.id, marks=n.marks) for n in NAMES])
def test_hostile_name_is_neutralised(case, media, staging, queue):
    photo = photo_with_old_image()
    before = files_under(media)
    queued = queue(H.jpeg((64, 48)), photo, case.raw)
    assert _no_bad_chars(queued.job.source_name)
    assert "/" not in queued.job.source_name and "\\" not in queued.job.source_name
    try:
        state = queued.run()
    except StorageFailure as exc:  # what a name the storage cannot use ends in
        pytest.fail(f"retryable StorageFailure for a permanent name problem: {exc}")
    job = ImageJob.objects.get(pk=queued.job.pk)
    assert state == "done", (job.error_code, job.error)
    assert_saved(queued, photo, before)
    name = photo.image.name
    directory, base = name.rsplit("/", 1)
    assert directory == "photos"
    assert len(name) <= MAX_NAME
    assert base and not base.startswith(".") and "\\" not in base and _no_bad_chars(base)
    root = os.path.realpath(media)
    assert os.path.realpath(photo.image.path).startswith(root + os.sep)
    if case.stored is not None:
        assert base == case.stored


# ---------------------------------------------------------------------------
# 4. Forged and corrupted messages (unit layer)
# ---------------------------------------------------------------------------


@dataclass
class Ctx:
    queued: Queued
    photo: Photo
    other: Photo
    tmp: Path
    settings: Any
    queue: Callable[..., Queued]

    @property
    def data(self) -> bytes:
        return self.queued.data

    @property
    def message(self) -> dict[str, Any]:
        return dict(self.queued.message)


def _body(build: Callable[[Ctx], Any]) -> Callable[[Ctx], tuple[dict, Any]]:
    """A forgery that only replaces the message body."""
    return lambda ctx: (ctx.message, build(ctx))


def _target(**changes: Any) -> Callable[[Ctx], tuple[dict, Any]]:
    def forge(ctx: Ctx) -> tuple[dict, Any]:
        message = ctx.message
        for key, value in changes.items():
            message[key] = value(ctx) if callable(value) else value
        return message, ctx.queued.body

    return forge


def _allow_pickle(build: Callable[[Ctx], Any]) -> Callable[[Ctx], Any]:
    def wrapped(ctx: Ctx) -> Any:
        ctx.settings.ASYNC_IMAGE_SAVE_ALLOW_PICKLE = True
        return build(ctx)

    return wrapped


def _other_jobs_ref(ctx: Ctx) -> str:
    """The staging reference of another pending job (a real, different payload)."""
    ctx.settings.ASYNC_IMAGE_SAVE_STAGING = "directory"
    ctx.settings.ASYNC_IMAGE_SAVE_INLINE_MAX_BYTES = 0
    ctx.settings.ASYNC_IMAGE_SAVE_STAGING_DIR = str(ctx.tmp / "staging")
    other = ctx.queue(H.jpeg((30, 20)), ctx.other, "other.jpg")
    ctx.other_job = other  # type: ignore[attr-defined]
    return other.job.staged_ref


def _too_large(ctx: Ctx) -> bytes:
    ctx.settings.ASYNC_IMAGE_SAVE_MAX_UPLOAD_BYTES = len(ctx.data) - 1  # the worker's limit
    return ctx.queued.body


@dataclass(frozen=True)
class Forgery:
    id: str
    forge: Callable[[Ctx], tuple[dict, Any]]
    code: str
    marks: tuple[Any, ...] = ()


FORGERIES = [
    Forgery("random-bytes-body", _body(lambda c: H.random_bytes(2048)), "payload_invalid"),
    Forgery("empty-body", _body(lambda c: b""), "payload_invalid"),
    Forgery("int-body", _body(lambda c: 42), "payload_invalid"),
    Forgery("list-body", _body(lambda c: [1, 2]), "payload_invalid"),
    Forgery("version-3-frame", _body(lambda c: b"AIS\x03" + c.queued.body[4:]), "payload_version"),
    Forgery("unknown-codec", _body(lambda c: b"AIS\x01j" + c.queued.body[5:]), "payload_invalid"),
    Forgery("header-length-10MB",
            _body(lambda c: H.frame(b"\x80", c.data, header_len=10 * 2**20)), "payload_invalid"),
    Forgery("header-length-4GiB",
            _body(lambda c: H.frame(b"\x80", c.data, header_len=2**32 - 1)), "payload_invalid"),
    Forgery("header-sha-wrong", _body(lambda c: H.msgpack_frame(c.data, sha256="0" * 64)),
            "checksum_mismatch"),
    Forgery("size-claims-more", _body(lambda c: H.msgpack_frame(c.data, size=len(c.data) + 1)),
            "size_mismatch"),
    Forgery("size-claims-less", _body(lambda c: H.msgpack_frame(c.data, size=10)),
            "size_mismatch"),
    Forgery("size-is-bool", _body(lambda c: H.msgpack_frame(b"x", size=True)), "size_mismatch"),
    Forgery("msgpack-map32-bomb", _body(lambda c: H.msgpack_huge_map_header(c.data)),
            "payload_invalid"),
    Forgery("msgpack-5000-key-map", _body(lambda c: H.msgpack_wide_map_header(c.data)),
            "payload_invalid"),
    Forgery("msgpack-20000-deep", _body(lambda c: H.msgpack_deep_header(c.data)),
            "payload_invalid"),
    Forgery("header-missing-key", _body(lambda c: H.frame(b"\x81\xa4size\x01", c.data)),
            "payload_invalid"),
    Forgery("header-extra-key", _body(lambda c: H.msgpack_frame(c.data, owner="root")),
            "payload_invalid"),
    Forgery("other-valid-image", _body(lambda c: H.msgpack_frame(H.png((9, 9)))),
            "bad_signature"),
    Forgery("signed-with-another-key",
            _body(lambda c: H.signed_frame(H.png((9, 9)), c.queued.job.pk.hex, "not-our-key")),
            "bad_signature"),
    Forgery("signed-for-another-job",
            _body(lambda c: H.signed_frame(H.png((9, 9)), uuid.uuid4().hex, c.settings.SECRET_KEY)),
            "bad_signature"),
    Forgery("signature-not-a-string",
            _body(lambda c: H.msgpack_frame(c.data, version=2, signature=5)), "payload_invalid"),
    Forgery("signature-missing-in-version-2",
            _body(lambda c: H.msgpack_frame(c.data, version=2)), "payload_invalid"),
    Forgery("pickle-refused", _body(lambda c: H.pickle_frame(c.data)), "pickle_refused"),
    Forgery("pickle-reduce-refused",
            _body(lambda c: H.evil_pickle_frame(c.data, str(c.tmp / "pwned"))), "pickle_refused"),
    Forgery("pickle-reduce-allowed",
            _body(_allow_pickle(lambda c: H.evil_pickle_frame(c.data, str(c.tmp / "pwned")))),
            "pickle_refused"),
    Forgery("pickle-binbytes8-16GiB",
            _body(_allow_pickle(lambda c: H.pickle_huge_declared_bytes())), "payload_invalid"),
    Forgery("over-max-upload-bytes", _body(_too_large), "too_large"),
    Forgery("ref-path-traversal", _body(lambda c: "directory:../../etc/passwd"), "bad_reference"),
    Forgery("ref-file-url", _body(lambda c: "file:///etc/passwd"), "bad_reference"),
    Forgery("ref-redis-glob", _body(lambda c: "redis:*"), "bad_reference"),
    Forgery("ref-key-with-suffix", _body(lambda c: f"directory:{'a' * 32}/../x"), "bad_reference"),
    Forgery("ref-missing-key", _body(lambda c: f"directory:{uuid.uuid4().hex}"), "payload_missing"),
    Forgery("ref-to-another-jobs-payload", _body(_other_jobs_ref), "bad_signature"),
    Forgery("names-another-model", _target(model="tests.Document", field="cover"),
            "target_mismatch"),
    Forgery("names-another-field", _target(field="title"), "target_mismatch"),
    Forgery("names-auth-user-password", _target(model="auth.User", field="password",
                                                 pk=lambda c: str(User.objects.get().pk)),
            "target_mismatch"),
    Forgery("names-another-pk", _target(pk=lambda c: str(c.other.pk)), "target_mismatch"),
    Forgery("pk-with-whitespace", _target(pk=lambda c: f" {c.photo.pk}"), "target_mismatch"),
]  # fmt: skip


@pytest.mark.django_db
@pytest.mark.parametrize("case", [pytest.param(f, id=f.id, marks=f.marks) for f in FORGERIES])
def test_forged_message_fails_the_job_cleanly(case, media, queue, settings, tmp_path):
    user = User.objects.create(username="victim", password="unusable-hash")  # no hashing cost
    password = user.password
    other = Photo.objects.create(title="other")
    photo = photo_with_old_image()
    old_name, before = photo.image.name, files_under(media)
    queued = queue(H.jpeg((64, 48)), photo, "legit.jpg")
    assert isinstance(queued.body, bytes)  # inline: the body is the frame
    ctx = Ctx(queued, photo, other, tmp_path, settings, queue)
    message, body = case.forge(ctx)
    assert queued.run(message, body) == "failed"
    assert_refused(queued.job.pk, case.code, photo, old_name, before)
    assert not (tmp_path / "pwned").exists()  # no pickle was ever executed
    other.refresh_from_db()
    assert (other.title, other.image.name) == ("other", "")
    user.refresh_from_db()
    assert user.password == password
    if hasattr(ctx, "other_job"):  # the other job's payload was read, never deleted
        assert staged_exists(ctx.other_job.job.staged_ref)
        assert ctx.other_job.run() == "done"


@pytest.mark.django_db
def test_message_for_a_job_that_does_not_exist_is_dropped(media, queue):
    photo = photo_with_old_image()
    old_name, before = photo.image.name, files_under(media)
    queued = queue(H.jpeg(), photo, "legit.jpg")
    message = dict(queued.message, job_id=uuid.uuid4().hex)
    assert queued.run(message) == "missing"
    photo.refresh_from_db()
    assert photo.image.name == old_name
    assert files_under(media) == before
    assert ImageJob.objects.get(pk=queued.job.pk).state == "pending"  # the real job untouched


@pytest.mark.django_db
@pytest.mark.parametrize("job_id", ["../../etc/passwd", "x" * 1000])
def test_message_with_a_malformed_job_id_is_dropped(media, queue, job_id):
    photo = photo_with_old_image()
    queued = queue(H.jpeg(), photo, "legit.jpg")
    assert queued.run(dict(queued.message, job_id=job_id)) == "missing"


@pytest.mark.django_db
def test_replayed_message_with_other_bytes_changes_nothing(media, queue):
    photo = photo_with_old_image()
    queued = queue(H.jpeg(), photo, "legit.jpg")
    assert queued.run() == "done"
    photo.refresh_from_db()
    saved, after = photo.image.name, files_under(media)
    forged = H.msgpack_frame(H.png((9, 9)), name="replaced.png")
    assert queued.run(body=forged) == "done"  # the job is finished: nothing to do
    photo.refresh_from_db()
    assert photo.image.name == saved
    assert files_under(media) == after


@pytest.mark.django_db
def test_forged_header_name_is_sanitised_again_by_the_worker(media, queue):
    """A frame made outside save_image(), with a traversal name and a correct checksum.

    The job's row holds the sha256 (as in the outbox), so the worker accepts
    the unsigned frame's bytes; the name is still its to clean.
    """
    photo = photo_with_old_image()
    before = files_under(media)
    queued = queue(H.jpeg(), photo, "legit.jpg")
    ImageJob.objects.filter(pk=queued.job.pk).update(sha256=H.sha256(queued.data))
    body = H.msgpack_frame(queued.data, name="../../../../etc/cron.d/evil\n.jpg")
    assert queued.run(body=body) == "done"
    assert_saved(queued, photo, before)
    assert photo.image.name == "photos/evil.jpg"


# ---------------------------------------------------------------------------
# 5. Staging backends: a refused upload leaves no staged payload anywhere
# ---------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("backend", ["inline", "directory", "database", "storage", "redis"])
def test_refused_upload_cleans_every_staging_backend(
    backend, media, queue, settings, tmp_path, request
):
    if backend == "redis":
        request.getfixturevalue("redis_service")
    if backend != "inline":
        settings.ASYNC_IMAGE_SAVE_STAGING = backend
        settings.ASYNC_IMAGE_SAVE_INLINE_MAX_BYTES = 0
        settings.ASYNC_IMAGE_SAVE_STAGING_DIR = str(tmp_path / "staging")
    photo = photo_with_old_image()
    old_name, before = photo.image.name, files_under(media)
    queued = queue(H.png_header_bomb(), photo, "bomb.png", "image/png")
    if backend == "inline":
        assert isinstance(queued.body, bytes) and queued.job.staged_ref == ""
    else:
        assert queued.body == queued.job.staged_ref and staged_exists(queued.body)
    assert queued.run() == "failed"
    assert_refused(queued.job.pk, "decompression_bomb", photo, old_name, before)
    assert not StagedPayload.objects.exists()
    assert not (tmp_path / "staging").exists() or os.listdir(tmp_path / "staging") == []


# ---------------------------------------------------------------------------
# 6. process_stored() / bind_stored messages
# ---------------------------------------------------------------------------


@pytest.fixture
def bind(django_capture_on_commit_callbacks):
    """process_stored() with its publish recorded; returns (job, message, name)."""
    from async_image_save import process_stored

    def make(name: str, instance: Any) -> tuple[ImageJob, dict[str, Any], str]:
        calls: list[tuple[dict, str]] = []
        with pytest.MonkeyPatch.context() as mp, django_capture_on_commit_callbacks(execute=True):
            mp.setattr("async_image_save.tasks.publish_stored", lambda m, n: calls.append((m, n)))
            job = process_stored(name, instance)
        [(message, stored)] = calls
        return job, message, stored

    return make


def run_bind(message: dict[str, Any], name: str) -> str:
    return processing.bind_stored(
        message["job_id"], name, model=message["model"], pk=message["pk"], field=message["field"]
    )


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("build", "code"),
    [(lambda: H.SVG, "not_an_image"), (lambda: H.EPS, "format_refused"),
     (H.png_header_bomb, "decompression_bomb"), (H.jpeg_cut_in_scan, "damaged_image")],
    ids=["svg", "eps", "bomb", "truncated"],
)  # fmt: skip
def test_process_stored_refuses_a_hostile_file(build, code, media, bind):
    photo = photo_with_old_image()
    name = default_storage.save("direct/upload.png", ContentFile(build()))
    old_name, before = photo.image.name, files_under(media)
    job, message, stored = bind(name, photo)
    assert run_bind(message, stored) == "failed"
    assert_refused(job.pk, code, photo, old_name, before)


@pytest.mark.django_db
@pytest.mark.parametrize("forged", ["../../etc/passwd", "/etc/passwd", "direct/other.jpg"])
def test_forged_bind_message_naming_another_file(forged, media, bind):
    photo = photo_with_old_image()
    name = default_storage.save("direct/ok.jpg", ContentFile(H.jpeg()))
    default_storage.save("direct/other.jpg", ContentFile(H.jpeg((30, 30))))
    old_name, before = photo.image.name, files_under(media)
    job, message, _stored = bind(name, photo)
    assert run_bind(message, forged) == "failed"
    assert_refused(job.pk, "target_mismatch", photo, old_name, before)


@pytest.mark.django_db
def test_forged_bind_message_cannot_swap_the_file_of_a_save_image_job(media, queue):
    """The checksum that protects save_upload() cannot be sidestepped with a bind message."""
    photo = photo_with_old_image()
    victim = default_storage.save("private/someone-else.jpg", ContentFile(H.jpeg((30, 30))))
    old_name, before = photo.image.name, files_under(media)
    queued = queue(H.jpeg(), photo, "legit.jpg")
    assert run_bind(queued.message, victim) == "failed"
    assert_refused(queued.job.pk, "target_mismatch", photo, old_name, before)


@pytest.mark.django_db
def test_forged_upload_message_for_a_process_stored_job(media, bind):
    photo = photo_with_old_image()
    name = default_storage.save("direct/ok.jpg", ContentFile(H.jpeg()))
    old_name, before = photo.image.name, files_under(media)
    job, message, _stored = bind(name, photo)
    data = H.jpeg((30, 30))
    state = processing.save_upload(
        message["job_id"], H.msgpack_frame(data), model=message["model"], pk=message["pk"],
        field=message["field"],
    )  # fmt: skip
    assert state == "failed"
    assert_refused(job.pk, "target_mismatch", photo, old_name, before)


# ---------------------------------------------------------------------------
# 7. Forms: Django's own validation is the first line
# ---------------------------------------------------------------------------


class PhotoForm(AsyncImageForm, forms.ModelForm):
    class Meta:
        model = Photo
        fields = ["title", "image"]


INVALID_IMAGE = forms.ImageField.default_error_messages["invalid_image"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("build", "name"),
    [
        (lambda: H.SVG, "logo.png"),
        (lambda: H.HTML, "page.jpg"),
        (lambda: H.PDF, "doc.jpg"),
        (H.png_header_bomb, "bomb.png"),
        (H.png_cut_in_ihdr, "cut.png"),
        (H.jpeg_cut_in_header, "cut.jpg"),
        (H.png_cut_in_idat, "cut.png"),
        (lambda: H.jpeg(), "page.html"),
        (lambda: H.jpeg(), "\U0001f600"),
    ],
    ids=["svg", "html", "pdf", "bomb", "png-cut-ihdr", "jpeg-cut-header", "png-cut-idat",
         "jpeg-named-html", "emoji-name"],
)  # fmt: skip
def test_form_rejects_with_djangos_message_and_creates_no_job(build, name, media):
    upload = SimpleUploadedFile(name, build(), "image/png")
    form = PhotoForm(data={"title": "x"}, files={"image": upload})
    assert not form.is_valid()
    [message] = form.errors["image"]
    assert message == INVALID_IMAGE or message.startswith("File extension")
    assert form.image_jobs == {} and form._pending_uploads == {}
    assert not ImageJob.objects.exists()
    assert files_under(media) == []


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("build", "name", "code"),
    [
        (lambda: H.EPS, "art.png", "format_refused"),
        (H.png_warning_range_bomb, "warn.png", "decompression_bomb"),
        (H.jpeg_cut_in_scan, "cut.jpg", "damaged_image"),
    ],
    ids=["eps", "warning-range-bomb", "jpeg-cut-in-scan"],
)
def test_what_djangos_form_lets_through_the_worker_refuses(
    build, name, code, media, monkeypatch, django_capture_on_commit_callbacks
):
    """Django's ImageField only runs Image.open() + verify(): the worker is the second line."""
    calls: list[tuple[dict, Any]] = []
    monkeypatch.setattr("async_image_save.tasks.publish", lambda m, b: calls.append((m, b)))
    photo = photo_with_old_image()
    old_name, before = photo.image.name, files_under(media)
    upload = SimpleUploadedFile(name, build(), "image/png")
    form = PhotoForm(data={"title": "before"}, files={"image": upload}, instance=photo)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        assert form.is_valid(), form.errors
        with django_capture_on_commit_callbacks(execute=True):
            form.save()
        [(message, body)] = calls
        job = form.image_jobs["image"]
        queued = Queued(job, message, body, b"")
        assert queued.run() == "failed"
    assert_refused(job.pk, code, photo, old_name, before)


# ---------------------------------------------------------------------------
# 8. End to end: forged messages through the real worker
# ---------------------------------------------------------------------------


def e2e_job(data: bytes, photo: Photo, name: str = "e2e.jpg") -> Queued:
    """Create a job with save_image() without publishing it; the test publishes."""
    calls: list[tuple[dict, Any]] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("async_image_save.tasks.publish", lambda m, b: calls.append((m, b)))
        job = save_image(SimpleUploadedFile(name, data, "image/jpeg"), photo)  # commits at once
    [(message, body)] = calls
    return Queued(job, message, body, data)


def publish(message: dict[str, Any], body: Any) -> None:
    from async_image_save.tasks import publish as real_publish

    real_publish(message, body)


def e2e_photo() -> Photo:
    photo = Photo.objects.create(title="before")
    photo.image.save("e2e-old.jpg", ContentFile(H.jpeg((20, 10))), save=True)
    return photo


@pytest.mark.parametrize(
    ("build", "code"),
    [(H.png_header_bomb, "decompression_bomb"), (lambda: H.EPS, "format_refused")],
    ids=["png-header-bomb", "eps-as-png"],
)
@pytest.mark.usefixtures("celery_worker")
@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_e2e_hostile_image_staged_in_a_directory(build, code, settings):
    settings.ASYNC_IMAGE_SAVE_STAGING = "directory"  # the worker's STAGING_DIR is the same
    settings.ASYNC_IMAGE_SAVE_INLINE_MAX_BYTES = 0
    photo = e2e_photo()
    old_name, before = photo.image.name, files_under(settings.MEDIA_ROOT)
    queued = e2e_job(build(), photo, "hostile.png")
    assert queued.body.startswith("directory:") and staged_exists(queued.body)
    publish(queued.message, queued.body)
    wait_for_job(queued.job.pk)
    assert_refused(queued.job.pk, code, photo, old_name, before)


@pytest.mark.usefixtures("celery_worker")
@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_e2e_pickle_frame_is_refused_and_never_executed(settings):
    """The worker runs with ASYNC_IMAGE_SAVE_ALLOW_PICKLE off (the default)."""
    marker = Path(settings.BASE_TMP) / f"pwned-{uuid.uuid4().hex}"
    photo = e2e_photo()
    old_name, before = photo.image.name, files_under(settings.MEDIA_ROOT)
    queued = e2e_job(H.jpeg(), photo)
    publish(queued.message, H.evil_pickle_frame(queued.data, str(marker)))
    wait_for_job(queued.job.pk)
    assert_refused(queued.job.pk, "pickle_refused", photo, old_name, before)
    assert not marker.exists()


@pytest.mark.usefixtures("celery_worker")
@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_e2e_message_naming_another_object_and_a_traversal_ref(settings):
    other = e2e_photo()
    photo = e2e_photo()
    other_name = other.image.name
    old_name, before = photo.image.name, files_under(settings.MEDIA_ROOT)
    first = e2e_job(H.jpeg(), photo)
    publish(dict(first.message, pk=str(other.pk)), first.body)
    second = e2e_job(H.jpeg(), photo)
    publish(second.message, "directory:../../../etc/passwd")
    wait_for_job(first.job.pk)
    wait_for_job(second.job.pk)
    assert_refused(first.job.pk, "target_mismatch", photo, old_name, before)
    assert_refused(second.job.pk, "bad_reference", photo, old_name, before)
    other.refresh_from_db()
    assert other.image.name == other_name


@pytest.mark.usefixtures("celery_worker")
@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_e2e_message_for_an_unknown_job_is_dropped(settings, celery_worker):
    photo = e2e_photo()
    old_name, before = photo.image.name, files_under(settings.MEDIA_ROOT)
    template = e2e_job(H.jpeg(), photo)
    ghost = uuid.uuid4().hex
    publish(dict(template.message, job_id=ghost, task_id=str(uuid.uuid4())), template.body)
    # A later job on the same queue: when it is done, the forged message was handled.
    marker_photo = Photo.objects.create(title="marker")
    marker = save_image(SimpleUploadedFile("marker.jpg", H.jpeg(), "image/jpeg"), marker_photo)
    assert wait_for_job(marker.pk).state == "done"
    assert f"job {ghost} no longer exists" in celery_worker.log_tail(400)
    photo.refresh_from_db()
    assert photo.image.name == old_name
    new = set(files_under(settings.MEDIA_ROOT)) - set(before)
    assert new and all("marker" in n for n in new)
    assert ImageJob.objects.get(pk=template.job.pk).state == "pending"  # never sent


@pytest.mark.usefixtures("celery_worker")
@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_e2e_truncated_header_ends_the_job(settings):
    photo = e2e_photo()
    queued = e2e_job(H.jpeg_cut_in_header(), photo)
    publish(queued.message, queued.body)
    job = wait_for_job(queued.job.pk, timeout=4)  # observed: still pending, attempts == 1
    assert (job.state, job.error_code) == ("failed", "damaged_image")
