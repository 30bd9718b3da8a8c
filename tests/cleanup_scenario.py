"""Delete/replace clean-up with django-cleanup installed (run in a subprocess).

``python -m tests.cleanup_scenario`` uses tests.settings plus django-cleanup on
a throwaway SQLite database, runs the jobs in-process, and prints JSON facts.
"""

from __future__ import annotations

import json
import os

import django


def main() -> None:
    from django.conf import settings

    django.setup()
    from django.core.management import call_command
    from django.db import transaction

    from async_image_save import save_image
    from async_image_save.models import Thumbnail
    from async_image_save.testing import make_image_file, run_jobs_eagerly
    from tests.models import Photo

    call_command("migrate", verbosity=0)

    def files() -> list[str]:
        found = []
        for base, _dirs, names in os.walk(settings.MEDIA_ROOT):
            found += sorted(
                os.path.relpath(os.path.join(base, n), settings.MEDIA_ROOT) for n in names
            )
        return sorted(found)

    facts = {"apps": [a for a in settings.INSTALLED_APPS if "cleanup" in a]}
    with run_jobs_eagerly():
        photo = Photo.objects.create()
        with transaction.atomic():
            save_image(make_image_file("first.jpg", size=(400, 300)), photo)
        photo.refresh_from_db()
        facts["after_first"] = files()
        with transaction.atomic():
            save_image(make_image_file("second.jpg", size=(400, 300)), photo)
        photo.refresh_from_db()
        facts["after_replace"] = files()
        facts["records_after_replace"] = sorted(Thumbnail.objects.values_list("name", flat=True))
        with transaction.atomic():
            photo.delete()
        facts["after_delete"] = files()
        facts["records_after_delete"] = Thumbnail.objects.count()
    print(json.dumps(facts))


if __name__ == "__main__":
    main()
