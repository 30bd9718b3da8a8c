"""A small per-process thread pool for work that can overlap the caller's.

A web process sends committed jobs' messages on these threads
(``dispatching.py``), so requests never wait for the broker.
The Pillow thumbnail engine encodes one size on it while the worker's thread
resizes the next (both release the GIL; see ``encoding.py``).
The pool is created on first use and forgotten in a forked child (a prefork
server that imported the app before forking gets a fresh pool per process).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")
#: Threads per process: one per request handing off at the same moment, bounded.
MAX_THREADS = 8

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None


def submit(function: Callable[..., T], *args: Any, here: bool = False) -> Future[T]:
    """Run ``function(*args)`` on the pool; the caller must call ``result()`` on the future.

    With ``here``, run it on this thread now instead and return a done future
    (an exception is raised at once), so a caller that hands off all but its
    last piece of work treats every piece alike.
    """
    if here:
        done: Future[T] = Future()
        done.set_result(function(*args))
        return done
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(MAX_THREADS, thread_name_prefix="async_image_save")
        pool = _pool
    return pool.submit(function, *args)


def _forget_pool() -> None:
    global _pool, _lock
    _pool, _lock = None, threading.Lock()  # the parent's threads do not exist here


os.register_at_fork(after_in_child=_forget_pool)
