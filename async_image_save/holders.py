"""Lease tokens that name the process holding them, so a dead holder's lease is taken over.

A worker claims a job by writing a token into ``ImageJob.claimed_by`` (32
characters). The token is 16 random hex digits, then the holder's process id
(8 hex digits) and a tag of its process namespace (8 hex digits: a hash of
the host name, the kernel's boot id and the PID namespace). A worker that
finds a job leased by a process of its own namespace that no longer exists
(a prefork child killed by the OOM killer, a worker killed with SIGKILL and
restarted by its supervisor) takes the lease over at once instead of waiting
``ASYNC_IMAGE_SAVE_LEASE_SECONDS`` for it to expire. Leases held from other
machines or containers expire as before. A wrong guess costs only work: the
commit step still lets one lease holder win.
"""

from __future__ import annotations

import functools
import hashlib
import os
import socket
import uuid
from pathlib import Path

_RANDOM, _PID, _TAG = 16, 8, 8


@functools.cache
def namespace_tag() -> str:
    """A tag shared by the processes that can see each other's process ids."""
    parts = [socket.gethostname()]
    for path in ("/proc/sys/kernel/random/boot_id", "/proc/self/ns/pid"):
        try:
            parts.append(Path(path).read_text().strip() if "boot" in path else os.readlink(path))
        except OSError:
            parts.append("")
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:_TAG]


def new_token() -> str:
    """A fresh lease token for this process."""
    return uuid.uuid4().hex[:_RANDOM] + f"{os.getpid() & 0xFFFFFFFF:08x}" + namespace_tag()


def holder_is_dead(token: str) -> bool:
    """Whether ``token`` was issued by a process of this namespace that has ended.

    ``False`` whenever that cannot be known: a token from another machine or
    container, one in another format, or a process that still exists (or is
    owned by another user).
    """
    if len(token) != _RANDOM + _PID + _TAG or token[-_TAG:] != namespace_tag():
        return False
    try:
        pid = int(token[_RANDOM : _RANDOM + _PID], 16)
    except ValueError:
        return False
    if pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    """A process that has exited but whose parent has not collected it yet (Linux only)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] == ["Z"]
