"""The one model request_cost.py saves images into (``benchmarks`` is its Django app).

Its table is made with ``migrate --run-syncdb``. A module of the ``benchmarks``
package rather than a sub-package, so that setup.py's ``find_packages`` (which
excludes ``benchmarks`` but not ``benchmarks.*``) never puts it in the wheel.
"""

from __future__ import annotations

from django.db import models


class Photo(models.Model):
    image = models.ImageField(upload_to="photos", blank=True)

    def __str__(self) -> str:
        return f"Photo {self.pk}"
