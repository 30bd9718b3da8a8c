"""When, where and how a benchmark ran: the metadata every ``--json`` file carries.

``benchmarks/report.py`` prints it above each generated table, so a figure in the
docs always says which machine, date and command it came from. Standard library
only. ``request_cost.py`` and ``remote_storage.py`` import it as
``benchmarks.runmeta``; ``thumbnails.py``, which puts this directory rather than
the repository root on ``sys.path``, as ``runmeta``.
"""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _relative(path: str) -> str:
    """``path`` relative to the repository root when it lies inside it."""
    try:  # absolute(), not resolve(): .venv/bin/python is a symlink out of the tree
        return str(Path(path).absolute().relative_to(ROOT))
    except ValueError:
        return path


def _proc_field(path: str, field: str) -> str | None:
    try:
        with open(path) as fh:
            for line in fh:
                if line.startswith(field):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def run_meta(packages: tuple[str, ...] = ("Django", "celery")) -> dict:
    """Date, command line, Python and package versions, machine; call when the run starts.

    ``AIS_BENCH_INVOKED_BY`` (set by ``scripts/benchmarks``) records the wrapper's
    own command line, the one that regenerates the docs.
    """

    def pkg(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    mem_kib = _proc_field("/proc/meminfo", "MemTotal")
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join([_relative(sys.executable), _relative(sys.argv[0]), *sys.argv[1:]]),
        "invoked_by": os.environ.get("AIS_BENCH_INVOKED_BY"),
        "python": platform.python_version(),
        "versions": {name: pkg(name) for name in packages},
        "platform": platform.platform(),
        "cpu_model": _proc_field("/proc/cpuinfo", "model name") or platform.processor() or None,
        "cpus": os.cpu_count(),
        "memory_gib": round(int(mem_kib.split()[0]) / 2**20, 1) if mem_kib else None,
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        "_started": time.monotonic(),
    }


def finish(meta: dict) -> dict:
    """Add the run's duration and the load average at its end; call before writing."""
    started = meta.pop("_started", None)
    if started is not None:
        meta["elapsed_s"] = round(time.monotonic() - started, 1)
    meta["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    return meta
