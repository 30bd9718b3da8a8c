"""Tests for async_image_save.background: the per-process pool save_image() stages on."""

from __future__ import annotations

import os
import threading

import pytest

from async_image_save import background


def test_submit_runs_on_another_thread_and_returns_its_result():
    future = background.submit(lambda a, b: (a + b, threading.current_thread().name), 2, 3)
    total, thread_name = future.result(timeout=10)
    assert total == 5
    assert thread_name.startswith("async_image_save")
    assert thread_name != threading.current_thread().name


def test_submit_passes_the_exception_to_the_caller():
    def fail():
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        background.submit(fail).result(timeout=10)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
def test_a_forked_child_gets_its_own_pool():
    assert background.submit(lambda: 1).result(timeout=10) == 1  # the parent's pool exists
    pid = os.fork()
    if pid == 0:  # the child: the parent's threads are gone; a new pool must serve it
        code = 1
        try:
            code = 0 if background.submit(lambda: 7).result(timeout=10) == 7 else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_submit_here_runs_on_this_thread_and_returns_a_done_future():
    future = background.submit(lambda a: (a * 2, threading.current_thread().name), 4, here=True)
    assert future.done()
    assert future.result() == (8, threading.current_thread().name)


def test_submit_here_raises_at_once():
    def fail():
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        background.submit(fail, here=True)
