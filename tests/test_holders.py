"""Lease tokens that name their holder process (async_image_save.holders)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from async_image_save import holders


def token_for(pid: int, tag: str | None = None) -> str:
    return "ab" * 8 + f"{pid:08x}" + (tag or holders.namespace_tag())


def ended_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_new_token_names_this_process_and_namespace():
    token = holders.new_token()
    assert len(token) == 32  # ImageJob.claimed_by
    int(token, 16)
    assert int(token[16:24], 16) == os.getpid()
    assert token[24:] == holders.namespace_tag()
    assert holders.new_token() != token


def test_a_process_that_ended_is_dead():
    assert holders.holder_is_dead(token_for(ended_pid())) is True


def test_this_process_and_a_running_one_are_alive():
    assert holders.holder_is_dead(holders.new_token()) is False
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert holders.holder_is_dead(token_for(child.pid)) is False
    finally:
        child.kill()
        child.wait()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_an_exited_process_not_yet_collected_is_dead():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    stat = Path(f"/proc/{child.pid}/stat")
    deadline = time.monotonic() + 30
    while stat.read_text().rpartition(")")[2].split()[0] != "Z":  # a zombie until wait()
        assert time.monotonic() < deadline, "the child never exited"
        time.sleep(0.01)
    try:
        assert holders.holder_is_dead(token_for(child.pid)) is True
    finally:
        child.wait()


@pytest.mark.parametrize(
    "token",
    [
        "",
        "0123456789abcdef0123456789abcdef",  # a uuid4().hex from before, or another namespace
        token_for(1, tag="00000000"),
        token_for(0),
        "zz" * 8 + "zzzzzzzz" + "0" * 8,
        "short",
    ],
    ids=["empty", "other-format", "other-namespace", "pid-0", "not-hex", "short"],
)
def test_what_cannot_be_known_is_not_dead(token):
    if token.endswith("0" * 8) and holders.namespace_tag() == "0" * 8:
        pytest.skip("this namespace's tag happens to be 00000000")
    assert holders.holder_is_dead(token) is False


def test_the_namespace_tag_is_stable_and_hex():
    tag = holders.namespace_tag()
    assert len(tag) == 8 and int(tag, 16) >= 0
    assert holders.namespace_tag() == tag
