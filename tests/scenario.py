"""Run one upload scenario in a separate process (the "web" side) and print JSON.

``python -m tests.scenario FILE [FILE...]`` creates a Photo per file, calls
``save_image()``, waits for each job to finish, and prints what happened, so a
test can drive a configuration (SQLite + filesystem broker, RabbitMQ...) that
differs from the pytest process's own.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

import django


def main(paths: list[str]) -> None:
    django.setup()
    from django.core.files.uploadedfile import SimpleUploadedFile

    from async_image_save import save_image
    from async_image_save.models import ImageJob, Thumbnail
    from tests.models import Photo

    jobs = []
    for path in paths:
        data = Path(path).read_bytes()
        photo = Photo.objects.create(title=Path(path).name)
        job = save_image(SimpleUploadedFile(Path(path).name, data, "image/jpeg"), photo)
        jobs.append((job, photo, hashlib.sha256(data).hexdigest()))
    results = []
    deadline = time.monotonic() + 90
    for job, photo, digest in jobs:
        while time.monotonic() < deadline:
            job.refresh_from_db()
            if job.state in ("done", "failed"):
                break
            time.sleep(0.1)
        photo.refresh_from_db()
        stored = ""
        if photo.image:
            with photo.image.open("rb") as fh:
                stored = hashlib.sha256(fh.read()).hexdigest()
        results.append(
            {
                "state": job.state,
                "error": job.error,
                "staged_ref": job.staged_ref,
                "upload_sha256": digest,
                "stored_sha256": stored,
                "thumbnails": {
                    t.spec: [t.width, t.height]
                    for t in Thumbnail.objects.filter(source_name=photo.image.name)
                }
                if photo.image
                else {},
                "vendor": django.db.connection.vendor,
                "left_in_queue": ImageJob.objects.filter(state="pending").count(),
            }
        )
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1:])
