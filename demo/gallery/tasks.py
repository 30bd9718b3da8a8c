"""The "download all sizes" zip, built by a worker like in the image_parroter tutorial.

The detail page asks for a :class:`SizeBundle`; :func:`request_bundle` records
it and queues ``gallery.build_zip`` once the row is committed; the task zips the
original and every thumbnail into ``zips/`` of the photo's storage and marks the
bundle ``done`` (or ``failed``, with the reason). The page polls the bundle's
JSON view until then.
"""

from __future__ import annotations

import logging
import posixpath
import shutil
import tempfile
import time
import zipfile

from celery import shared_task
from django.core.files import File
from django.db import transaction
from django.utils import timezone

from async_image_save.models import Thumbnail
from gallery.models import Photo, SizeBundle

logger = logging.getLogger("gallery")
State = SizeBundle.State


def request_bundle(photo: Photo) -> SizeBundle:
    """Return a bundle of ``photo``'s current image: a reusable one, or a new one being built.

    A bundle is reused while it is on its way, or when it is done and no
    thumbnail was (re)made after it. Raises ``ValueError`` when the image is not
    saved yet.
    """
    if not photo.image:
        raise ValueError("The image is not saved yet; try again when its thumbnails are shown.")
    source = photo.image.name
    existing = (
        SizeBundle.objects.filter(photo=photo, source_name=source)
        .exclude(state=State.FAILED)
        .first()
    )
    if existing is not None:
        newest_thumb = Thumbnail.objects.filter(source_name=source).order_by("-created_at").first()
        stale = existing.state == State.DONE and (
            newest_thumb is not None and newest_thumb.created_at > existing.created
        )
        if not stale:
            return existing
    bundle = SizeBundle.objects.create(photo=photo, source_name=source)
    transaction.on_commit(lambda: queue_build(bundle.pk))
    return bundle


def queue_build(bundle_id: int) -> None:
    """Send ``gallery.build_zip``; a broker that cannot be reached fails the bundle."""
    try:
        build_zip.apply_async(
            (bundle_id,), retry=True, retry_policy={"max_retries": 2, "interval_start": 0}
        )
    except Exception as exc:
        logger.exception("could not queue gallery.build_zip for bundle %s", bundle_id)
        SizeBundle.objects.filter(pk=bundle_id).update(
            state=State.FAILED,
            error=f"Could not reach the broker ({type(exc).__name__}: {exc}).",
            updated=timezone.now(),
        )


def zip_members(photo: Photo) -> list[tuple[str, str]]:
    """``(name in the zip, name in the storage)`` of the original and each thumbnail."""
    source = photo.image.name
    base = posixpath.basename(source)
    stem = base.rsplit(".", 1)[0]
    members = [(f"{stem}/{base}", source)]
    for thumb in Thumbnail.objects.filter(source_name=source).order_by("spec"):
        extension = posixpath.splitext(thumb.name)[1]
        members.append((f"{stem}/{stem}.{thumb.spec}{extension}", thumb.name))
    return members


def write_zip(bundle: SizeBundle) -> str:
    """Zip the photo's files (read through its storage) and store the zip; return its name."""
    photo = bundle.photo
    if not photo.image or photo.image.name != bundle.source_name:
        raise ValueError("The photo's image changed or was removed; ask for a new zip.")
    storage = photo.image.storage
    stem = posixpath.basename(bundle.source_name).rsplit(".", 1)[0]
    with tempfile.SpooledTemporaryFile(max_size=16 * 1024 * 1024) as spool:
        # Images are compressed already: store them as they are.
        with zipfile.ZipFile(spool, "w", compression=zipfile.ZIP_STORED) as archive:
            now = time.localtime()[:6]
            for arcname, name in zip_members(photo):
                info = zipfile.ZipInfo(arcname, date_time=now)
                info.external_attr = 0o644 << 16  # rw-r--r-- when unpacked
                with storage.open(name, "rb") as src, archive.open(info, "w") as dst:
                    shutil.copyfileobj(src, dst, 1024 * 1024)
        spool.seek(0)
        zip_name = f"{stem}-all-sizes.zip"
        bundle.file.save(zip_name, File(spool, name=zip_name), save=False)
    return bundle.file.name


@shared_task(name="gallery.build_zip", serializer="msgpack", ignore_result=True)
def build_zip(bundle_id: int) -> str:
    """Build the zip of bundle ``bundle_id``; a redelivered message finds it taken and stops."""
    claimed = SizeBundle.objects.filter(pk=bundle_id, state=State.PENDING).update(
        state=State.BUILDING, updated=timezone.now()
    )
    if not claimed:
        logger.info("bundle %s is gone or already built; nothing to do", bundle_id)
        return "skipped"
    bundle = SizeBundle.objects.select_related("photo").get(pk=bundle_id)
    try:
        name = write_zip(bundle)
    except Exception as exc:
        logger.exception("could not build the zip of bundle %s", bundle_id)
        SizeBundle.objects.filter(pk=bundle_id).update(
            state=State.FAILED, error=f"{type(exc).__name__}: {exc}", updated=timezone.now()
        )
        return State.FAILED
    SizeBundle.objects.filter(pk=bundle_id).update(
        state=State.DONE, file=name, error="", updated=timezone.now()
    )
    return State.DONE
