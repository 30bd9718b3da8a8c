"""Real FileSystemStorage subclasses with injected faults, shared with worker processes.

Faults are driven by files in the test temp dir so that a test in the pytest
process can arm them and a worker subprocess sees them.
"""

from __future__ import annotations

import os
import time

from django.conf import settings
from django.core.files.storage import FileSystemStorage


def control_path(name: str) -> str:
    """Path of a fault-control file in the shared test temp dir."""
    return os.path.join(settings.BASE_TMP, "control", name)


def write_control(name: str, value: str) -> None:
    """Arm a fault from a test."""
    os.makedirs(os.path.dirname(control_path(name)), exist_ok=True)
    with open(control_path(name), "w") as fh:
        fh.write(value)


def read_control(name: str, default: str = "") -> str:
    """Read a fault-control value ('' when not armed)."""
    try:
        with open(control_path(name)) as fh:
            return fh.read().strip()
    except FileNotFoundError:
        return default


class FlakyStorage(FileSystemStorage):
    """Fails the first N saves (N read from the 'flaky-failures' control file).

    Each failure first writes part of the file, so the test can check that no
    half-written file survives.
    """

    def _save(self, name, content):
        remaining = int(read_control("flaky-failures", "0") or 0)
        attempts = int(read_control("flaky-attempts", "0") or 0)
        write_control("flaky-attempts", str(attempts + 1))
        if remaining > 0:
            write_control("flaky-failures", str(remaining - 1))
            partial = self.path(name)
            os.makedirs(os.path.dirname(partial), exist_ok=True)
            with open(partial, "wb") as fh:
                fh.write(b"half-written")
            raise OSError("injected storage failure")
        return super()._save(name, content)


class SlowStorage(FileSystemStorage):
    """Signals that a save started, then waits until the test releases it."""

    def _save(self, name, content):
        write_control("slow-started", "1")
        deadline = time.monotonic() + 30
        while read_control("slow-release") != "1" and time.monotonic() < deadline:
            time.sleep(0.05)
        return super()._save(name, content)


def flaky_storage():
    return FlakyStorage(location=os.path.join(settings.MEDIA_ROOT, "flaky"))


def slow_storage():
    return SlowStorage(location=os.path.join(settings.MEDIA_ROOT, "slow"))
