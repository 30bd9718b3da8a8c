"""A real S3-compatible server for the tests: moto in server mode on loopback.

:class:`MotoServer` runs ``moto_server`` as a subprocess that a test can stop
and start again, and counts the HTTP requests that reached it by reading the
request lines werkzeug logs (one per request). The ``moto_server`` fixture
starts one for the session on the port in ``settings.AIS_S3_ENDPOINT_URL``
and creates the run's bucket; like the other services it skips locally and
fails in CI when the server cannot start. The benchmarks use the class too.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.conf import settings

from tests.conftest import SERVICES_REQUIRED, port_open

# 127.0.0.1 - - [23/Nov/2026 17:26:33] "PUT /bucket/key HTTP/1.1" 200 -
REQUEST_LINE = re.compile(rb'\] "(GET|PUT|POST|HEAD|DELETE|PATCH|OPTIONS) [^"]*" \d{3} ')


def moto_command(port: int) -> list[str]:
    """``moto_server`` from this interpreter's environment, bound to loopback."""
    script = Path(sys.executable).parent / "moto_server"
    head = [str(script)] if script.exists() else [sys.executable, "-m", "moto.server"]
    return [*head, "-H", "127.0.0.1", "-p", str(port)]


class MotoServer:
    """A ``moto_server`` subprocess on ``127.0.0.1:port``; its log is ``log_path``."""

    def __init__(self, port: int, log_path: Path, access_key: str, secret_key: str) -> None:
        self.port, self.log_path = port, log_path
        self.access_key, self.secret_key = access_key, secret_key
        self.endpoint_url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None
        self.buckets: list[str] = []

    def start(self, timeout: float = 30) -> None:
        """Start the server and wait for its port; recreate the buckets (moto keeps no state)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the subprocess
        try:
            self.proc = subprocess.Popen(
                moto_command(self.port), stdout=log, stderr=subprocess.STDOUT
            )
        except OSError as exc:
            raise RuntimeError(f"moto_server could not be run: {exc}") from exc
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while not port_open("127.0.0.1", self.port, timeout=0.2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"moto_server did not start:\n{self.log_tail()}")
            time.sleep(0.1)
        for bucket in self.buckets:
            self.client().create_bucket(Bucket=bucket)

    def stop(self) -> None:
        """Stop the server (its objects are gone: moto keeps them in memory)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
        )

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)
        self.buckets.append(name)

    def requests(self) -> int:
        """How many HTTP requests have reached the server so far (all its runs)."""
        if not self.log_path.exists():
            return 0
        return len(REQUEST_LINE.findall(self.log_path.read_bytes()))

    def settled_requests(self, quiet: float = 0.2, timeout: float = 5) -> int:
        """:meth:`requests` once the count has not changed for ``quiet`` seconds.

        werkzeug writes the log line while it answers, so a request the client
        has just seen answered may be logged a moment later.
        """
        deadline = time.monotonic() + timeout
        count = self.requests()
        while time.monotonic() < deadline:
            time.sleep(quiet)
            now = self.requests()
            if now == count:
                return now
            count = now
        return count

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def objects(self, bucket: str, prefix: str = "") -> dict[str, int]:
        """Key -> size of every object under ``prefix`` (asked with boto3, counted as requests)."""
        found = {}
        pages = (
            self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        )
        for page in pages:
            for item in page.get("Contents", ()):
                found[item["Key"]] = item["Size"]
        return found


@pytest.fixture(scope="session")
def moto_server():
    """moto's S3 server for the session, with the run's bucket ``settings.AIS_S3_BUCKET``."""
    port = urlsplit(settings.AIS_S3_ENDPOINT_URL).port
    server = MotoServer(
        port,
        Path(settings.BASE_TMP) / "moto.log",
        settings.AIS_S3_ACCESS_KEY,
        settings.AIS_S3_SECRET_KEY,
    )
    try:
        server.start()
        server.create_bucket(settings.AIS_S3_BUCKET)
    except Exception as exc:  # not installed, port taken, crashed on start
        server.stop()
        message = f"moto's S3 server could not start on port {port}: {exc}"
        if SERVICES_REQUIRED:
            pytest.fail(message)
        pytest.skip(message)
    yield server
    server.stop()
