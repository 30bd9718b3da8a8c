"""The demo site (demo/) on the embedded default: it checks clean, and an upload goes through.

Everything runs in subprocesses with the demo's own settings (``demo_site.settings``)
and ``DEMO_VAR_DIR``/``DEMO_DATABASE_URL`` pointing into ``tmp_path``, so the
repository's ``demo/var`` is never touched.
"""

from __future__ import annotations

import http.cookiejar
import io
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
import zipfile
from pathlib import Path

import pytest
from django import forms

from tests.conftest import FILES, ROOT

DEMO = ROOT / "demo"


def demo_worker_command(prefix: str) -> list[str]:
    """``celery worker`` for the demo project (solo pool, quiet, unique node name)."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "demo_site",
        "worker",
        "--pool=solo",
        "-l",
        "INFO",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "-n",
        f"{prefix}-{uuid.uuid4().hex[:8]}@%h",
    ]


def demo_env(var_dir: Path) -> dict[str, str]:
    """The embedded default: SQLite, filesystem:// broker and media, all under ``var_dir``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DEMO_", "AIS_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="demo_site.settings",
        PYTHONPATH=os.pathsep.join([str(DEMO), str(ROOT)]),
        DEMO_VAR_DIR=str(var_dir),
        DEMO_DATABASE_URL=f"sqlite:///{var_dir}/demo.sqlite3",  # absolute: sqlite:////tmp/...
    )
    return env


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=DEMO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_demo_checks_clean_and_migrations_are_complete(tmp_path):
    env = demo_env(tmp_path)
    check = manage(env, "check", "--fail-level", "WARNING")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "no issues" in check.stdout
    missing = manage(env, "makemigrations", "--check", "--dry-run")
    assert missing.returncode == 0, missing.stdout + missing.stderr


# ---------------------------------------------------------------------------
# End to end: runserver + a worker, driven over HTTP like upload.js does
# ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Browser:
    """Just enough of a browser: cookies, the CSRF header, multipart posts, JSON."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))
        self.csrf = ""

    def request(
        self, path: str, data: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        req = urllib.request.Request(self.base + path, data=data, headers=headers or {})
        try:
            with self.opener.open(req, timeout=30) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def get(self, path: str, **headers: str) -> tuple[int, str]:
        status, _, body = self.request(path, headers=headers)
        return status, body.decode()

    def get_json(self, path: str) -> dict:
        status, body = self.get(path, Accept="application/json")
        assert status == 200, (path, status, body[:500])
        return json.loads(body)

    def load_csrf(self, path: str) -> None:
        status, html = self.get(path)
        assert status == 200, html[:500]
        match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
        assert match, html[:500]
        self.csrf = match.group(1)

    def post_form(
        self,
        path: str,
        files: list[tuple[str, str, bytes, str]],
        fields: dict[str, str] | None = None,
        **headers: str,
    ) -> tuple[int, bytes]:
        """POST text ``fields`` and ``(field, filename, content, type)`` files as multipart."""
        headers["X-CSRFToken"] = self.csrf
        headers["Referer"] = self.base + path
        boundary = uuid.uuid4().hex
        body = io.BytesIO()
        for name, value in (fields or {}).items():
            body.write(
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
                f"{value}\r\n".encode()
            )
        for field, filename, content, content_type in files:
            body.write(
                f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; '
                f'filename="{filename}"\r\nContent-Type: {content_type}\r\n\r\n'.encode()
            )
            body.write(content + b"\r\n")
        if files or fields:
            body.write(f"--{boundary}--\r\n".encode())
            headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
        status, _, raw = self.request(path, data=body.getvalue(), headers=headers)
        return status, raw

    def post(self, path: str, files: dict[str, tuple[str, bytes, str]]) -> tuple[int, dict]:
        """POST as upload.js's XMLHttpRequest does; return the JSON answer."""
        status, raw = self.post_form(
            path,
            [(field, *spec) for field, spec in files.items()],
            **{"X-Requested-With": "XMLHttpRequest", "Accept": "application/json"},
        )
        return status, json.loads(raw)


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(args, cwd=DEMO, env=env, stdout=out, stderr=subprocess.STDOUT)


def wait_until(predicate, timeout: float, what: str, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.1)
    tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    raise AssertionError(f"{what} after {timeout} s\n{tail}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.e2e
def test_demo_upload_end_to_end(tmp_path):
    env = demo_env(tmp_path)
    migrate = manage(env, "migrate", "--noinput")
    assert migrate.returncode == 0, migrate.stderr
    admin_env = dict(env, DJANGO_SUPERUSER_PASSWORD="admin-pass")
    admin = manage(
        admin_env, "createsuperuser", "--noinput", "--username=staff", "--email=staff@example.com"
    )
    assert admin.returncode == 0, admin.stderr

    port = free_port()
    server_log, worker_log = tmp_path / "server.log", tmp_path / "worker.log"
    server = start(
        [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
        env,
        server_log,
    )
    worker = None
    try:
        browser = Browser(f"http://127.0.0.1:{port}")

        def server_up() -> bool:
            assert server.poll() is None, server_log.read_text()
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return True
            except OSError:
                return False

        wait_until(server_up, 30, "runserver not listening", server_log)
        browser.load_csrf("/upload/")

        # A real image is accepted at once; no worker runs yet, so it stays queued.
        photo = (FILES / "photo.jpg").read_bytes()
        status, answer = browser.post("/upload/", {"image": ("harbour.jpg", photo, "image/jpeg")})
        assert status == 202, answer
        assert set(answer) >= {"job", "status_url", "photo_url"}
        assert browser.get_json(answer["status_url"])["stage"] == "queued"
        # The status URL carries the job's token: it works without the session
        # (parallel uploads may race on it), and without the token nothing is shown.
        assert "?token=" in answer["status_url"]
        stranger = Browser(browser.base)
        assert stranger.get_json(answer["status_url"])["id"] == answer["job"]
        assert stranger.get(answer["status_url"].split("?")[0], Accept="application/json")[0] == 404
        status, html = browser.get("/")
        assert status == 200
        assert f'data-status-url="{answer["status_url"]}"' in html  # the page will poll it
        # The placeholder until the worker is done, tagged with its job for status.js.
        assert 'data-async-image-spec="small"' in html
        assert f'data-async-image-job="{answer["job"]}"' in html
        assert 'data-async-image-job="' not in stranger.get("/")[1]  # not the stranger's job

        # Without JavaScript: one plain form POST with several files, then the gallery.
        status, raw = browser.post_form(
            "/upload/",
            [
                ("image", "one.png", (FILES / "tiny.png").read_bytes(), "image/png"),
                ("image", "two.jpg", photo, "image/jpeg"),
            ],
        )
        assert status == 200 and b"2 photo(s) received" in raw  # redirected to the gallery
        status, raw = browser.post_form(
            "/upload/", [("image", "three.jpg", b"not a jpeg", "image/jpeg")]
        )
        assert status == 400 and b"Upload a valid image" in raw  # the form again, with the error

        # Not an image: Django's own ImageField error, as JSON.
        status, refused = browser.post(
            "/upload/", {"image": ("notes.jpg", b"just some text\n" * 20, "image/jpeg")}
        )
        assert status == 400, refused
        message = str(forms.ImageField.default_error_messages["invalid_image"])
        assert refused["errors"]["image"][0]["message"] == message
        assert refused["errors"]["image"][0]["code"] == "invalid_image"

        worker = start(
            demo_worker_command("demo-test"),
            env,
            worker_log,
        )

        def finished() -> dict | None:
            assert worker.poll() is None, worker_log.read_text()
            job = browser.get_json(answer["status_url"])
            return job if job["finished"] else None

        job = wait_until(finished, 20, "job not finished", worker_log)
        # kombu keeps the exchange bindings in the var dir, not in demo/control.
        assert list((tmp_path / "broker" / "control").glob("*.exchange"))
        assert job["state"] == "done", job
        assert set(job["thumbnails"]) == {"small", "medium"}
        small = job["thumbnails"]["small"]
        assert (small["width"], small["height"]) == (240, 240)

        # The plain-form uploads get their thumbnails too: no placeholder is left.
        def gallery_complete() -> str | None:
            page = browser.get("/")[1]
            return page if "async-image-pending" not in page else None

        html = wait_until(gallery_complete, 15, "placeholders left in the gallery", worker_log)
        assert small["url"] in html
        assert 'alt="one"' in html and 'alt="two"' in html
        status, html = browser.get(answer["photo_url"])
        assert status == 200 and job["thumbnails"]["medium"]["url"] in html
        status, headers, body = browser.request(small["url"])
        assert status == 200 and headers["Content-Type"] == "image/jpeg" and body[:2] == b"\xff\xd8"
        status, html = browser.get("/jobs/")
        assert status == 200 and "harbour.jpg" in html

        # The admin is enabled, and its upload goes through the worker as well.
        staff = Browser(browser.base)
        staff.load_csrf("/admin/login/")
        status, raw = staff.post_form(
            "/admin/login/", [], {"username": "staff", "password": "admin-pass", "next": "/admin/"}
        )
        assert status == 200 and b"Site administration" in raw, raw[:2000]
        staff.load_csrf("/admin/gallery/photo/add/")
        status, raw = staff.post_form(
            "/admin/gallery/photo/add/",
            [("image", "from-admin.png", (FILES / "transparent.png").read_bytes(), "image/png")],
            {"title": "from the admin", "_save": "Save"},
        )
        assert status == 200 and b"was added successfully" in raw, raw[:3000]

        def admin_job_done() -> bool:
            page = staff.get("/jobs/")[1]  # staff see every job
            unfinished = '<tr class="pending">' in page or '<tr class="saved">' in page
            return "from-admin.png" in page and "harbour.jpg" in page and not unfinished

        wait_until(admin_job_done, 15, "the admin's upload is not done", worker_log)
        status, html = staff.get("/admin/async_image_save/imagejob/")
        assert status == 200 and "from-admin.png" in html

        # "Download all sizes": a task builds the zip, the page polls its JSON view.
        browser.load_csrf(answer["photo_url"])
        status, bundle = browser.post(answer["photo_url"] + "all-sizes/", {})
        assert status == 202, bundle

        def zipped() -> dict | None:
            state = browser.get_json(bundle["status_url"])
            return state if state["state"] in ("done", "failed") else None

        bundle = wait_until(zipped, 20, "zip not built", worker_log)
        assert bundle["state"] == "done", bundle
        status, _, body = browser.request(bundle["url"])
        assert status == 200
        with zipfile.ZipFile(io.BytesIO(body)) as archive:
            names = sorted(archive.namelist())
            assert len(names) == 3, names
            assert any(n.endswith(".small.jpg") for n in names), names
            assert any(n.endswith(".medium.jpg") for n in names), names
            original = [n for n in names if not n.endswith((".small.jpg", ".medium.jpg"))]
            assert archive.read(original[0]) == photo
    finally:
        if worker is not None:
            stop(worker)
        stop(server)
