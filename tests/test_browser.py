"""The demo site in a real headless browser: Playwright driving Debian's chromium.

One demo site (runserver + a Celery worker, embedded default in a temp dir, as
in ``test_demo``) serves every test of this module. The worker is paused
(SIGSTOP) while a test needs to see the placeholders, then resumed.

Screenshots go to ``test-artifacts/`` at the repository root (``browser-*.png``;
a failing test also leaves ``browser-FAILED-<test>-<n>.png`` of its pages).

Chromium is Debian's package (``apt-get install chromium``, which scripts/test
does when ``/usr/bin/chromium`` is missing); Playwright's own browser downloads
are never used. Without chromium or the ``playwright`` package the tests skip
locally and fail when ``CI=true`` or ``AIS_SERVICES_REQUIRED=1``.
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django import forms
from PIL import Image

from tests.conftest import FILES, ROOT, SERVICES_REQUIRED, port_open
from tests.test_demo import (
    demo_env,
    demo_worker_command,
    free_port,
    manage,
    start,
    stop,
    wait_until,
)

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = ROOT / "test-artifacts"
ADMIN_USER, ADMIN_PASSWORD = "staff", "browser-test-pass"
INVALID_IMAGE = str(forms.ImageField.default_error_messages["invalid_image"])
PLACEHOLDER = "/static/async_image_save/placeholder.svg"
NOT_AN_IMAGE = (FILES / "not_an_image.txt").read_bytes()


def require_browser() -> None:
    """Skip (locally) or fail (CI, scripts/test) without chromium or playwright."""
    problem = ""
    if not os.access(CHROMIUM, os.X_OK):
        problem = f"{CHROMIUM} is missing; scripts/test installs it (apt-get install chromium)."
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            problem = 'the playwright package is missing; pip install -e ".[test]".'
    if problem:
        if SERVICES_REQUIRED:
            pytest.fail(problem)
        pytest.skip(problem)


def screenshot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"browser-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def picture(width: int = 800, height: int = 600, hue: int = 0) -> bytes:
    """A colourful JPEG (a two-way gradient), so the screenshots show real thumbnails."""
    x = Image.linear_gradient("L").rotate(90).resize((width, height))
    y = Image.linear_gradient("L").resize((width, height))
    image = Image.merge(
        "HSV", (Image.new("L", (width, height), hue), x, y.point(lambda v: 90 + v // 2))
    )
    out = io.BytesIO()
    image.convert("RGB").save(out, "JPEG", quality=85)
    return out.getvalue()


# ---------------------------------------------------------------------------
# The demo site and the browser, one of each for the module
# ---------------------------------------------------------------------------


class DemoSite:
    def __init__(self, base: str, worker: subprocess.Popen, worker_log: Path) -> None:
        self.base, self.worker, self.worker_log = base, worker, worker_log

    def url(self, path: str) -> str:
        return self.base + path

    @contextlib.contextmanager
    def worker_paused(self) -> Iterator[None]:
        """Freeze the worker (SIGSTOP): jobs stay queued and placeholders stay up."""
        assert self.worker.poll() is None, self.worker_log.read_text(errors="replace")[-3000:]
        self.worker.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            self.worker.send_signal(signal.SIGCONT)


@pytest.fixture(scope="module")
def demo_site(tmp_path_factory) -> Iterator[DemoSite]:
    require_browser()
    var = tmp_path_factory.mktemp("demo-browser")
    env = demo_env(var)
    migrate = manage(env, "migrate", "--noinput")
    assert migrate.returncode == 0, migrate.stderr
    admin = manage(
        dict(env, DJANGO_SUPERUSER_PASSWORD=ADMIN_PASSWORD),
        "createsuperuser",
        "--noinput",
        f"--username={ADMIN_USER}",
        "--email=staff@example.com",
    )
    assert admin.returncode == 0, admin.stderr

    port = free_port()
    server_log, worker_log = var / "server.log", var / "worker.log"
    server = start(
        [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
        env,
        server_log,
    )
    worker = start(
        demo_worker_command("demo-browser"),
        env,
        worker_log,
    )
    try:

        def server_up() -> bool:
            assert server.poll() is None, server_log.read_text()
            return port_open("127.0.0.1", port, timeout=0.5)

        def worker_ready() -> bool:
            assert worker.poll() is None, worker_log.read_text()
            return worker_log.exists() and b" ready." in worker_log.read_bytes()

        wait_until(server_up, 30, "runserver not listening", server_log)
        wait_until(worker_ready, 60, "the worker is not ready", worker_log)
        yield DemoSite(f"http://127.0.0.1:{port}", worker, worker_log)
    finally:
        with contextlib.suppress(ProcessLookupError):
            worker.send_signal(signal.SIGCONT)  # in case a test left it paused
        stop(worker)
        stop(server)


@pytest.fixture(scope="module")
def chromium(demo_site) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # launch() (not launch_persistent_context) starts chromium with a fresh
        # temporary --user-data-dir of Playwright's, removed on close.
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def new_page(chromium, request) -> Iterator[Callable[..., Any]]:
    """Open a page in a new context (own cookies); JavaScript errors fail the test.

    When the test fails, every page it opened is saved as
    ``browser-FAILED-<test>-<n>.png``.
    """
    contexts: list[Any] = []
    pages: list[Any] = []
    errors: list[str] = []
    failed_before = request.session.testsfailed

    def open_page(**context_options: Any) -> Any:
        context = chromium.new_context(viewport={"width": 1000, "height": 700}, **context_options)
        context.set_default_timeout(15_000)
        contexts.append(context)

        def track(page: Any) -> None:
            pages.append(page)
            page.on("pageerror", lambda exc: errors.append(f"{page.url}: {exc}"))

        context.on("page", track)  # also the tabs a test opens itself
        return context.new_page()

    yield open_page
    if request.session.testsfailed > failed_before:
        name = re.sub(r"\W+", "-", request.node.name).strip("-")
        for n, page in enumerate(pages):
            with contextlib.suppress(Exception):
                screenshot(page, f"FAILED-{name}-{n}")
    for context in contexts:
        context.close()
    assert not errors, errors


def log_in(page: Any, site: DemoSite, next_path: str) -> None:
    page.goto(site.url(f"/admin/login/?next={next_path}"))
    page.fill("#id_username", ADMIN_USER)
    page.fill("#id_password", ADMIN_PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(site.url(next_path))


# ---------------------------------------------------------------------------
# The upload page
# ---------------------------------------------------------------------------

# Counts the XMLHttpRequests in flight, to see the uploads go up in parallel.
COUNT_UPLOADS = """
window.__uploads = { active: 0, max: 0, sent: 0 };
const send = XMLHttpRequest.prototype.send;
XMLHttpRequest.prototype.send = function (body) {
  const u = window.__uploads;
  u.sent += 1; u.active += 1; u.max = Math.max(u.max, u.active);
  this.addEventListener("loadend", () => { u.active -= 1; });
  return send.call(this, body);
};
"""

# Drops files on the drop zone as a user's drag and drop would.
DROP_FILES = """
(files) => {
  const transfer = new DataTransfer();
  for (const f of files) {
    const bytes = Uint8Array.from(atob(f.data), (c) => c.charCodeAt(0));
    transfer.items.add(new File([bytes], f.name, { type: f.type }));
  }
  const zone = document.getElementById("dropzone");
  for (const type of ["dragenter", "dragover", "drop"]) {
    const init = { bubbles: true, cancelable: true, dataTransfer: transfer };
    zone.dispatchEvent(new DragEvent(type, init));
  }
}
"""

ROW = "#uploads .upload-row"


def test_upload_two_images_in_parallel(demo_site, new_page):
    page = new_page()
    page.add_init_script(COUNT_UPLOADS)
    page.goto(demo_site.url("/upload/"))
    tag = uuid.uuid4().hex[:6]
    files = [
        {
            "name": f"harbour-{tag}.jpg",
            "type": "image/jpeg",
            "data": (FILES / "photo.jpg").read_bytes(),
        },
        {"name": f"sunset-{tag}.jpg", "type": "image/jpeg", "data": picture(hue=20)},
    ]
    for f in files:
        f["data"] = base64.b64encode(f["data"]).decode()

    with demo_site.worker_paused():
        page.evaluate(DROP_FILES, files)
        rows = page.locator(ROW)
        # Both uploads answered, both jobs queued: the placeholders stay.
        page.wait_for_function(
            "document.querySelectorAll('#uploads .upload-row[data-state=queued]').length === 2"
        )
        uploads = page.evaluate("window.__uploads")
        assert uploads["sent"] == 2 and uploads["max"] == 2, uploads  # both at once
        jobs = rows.evaluate_all("rows => rows.map(r => r.dataset.job)")
        assert len(set(jobs)) == 2 and all(jobs), jobs
        for n in range(2):
            row = rows.nth(n)
            img = row.locator("img.thumb")
            assert img.get_attribute("data-async-image-job") == jobs[n]
            assert PLACEHOLDER in img.get_attribute("src")
            assert row.locator("progress").evaluate("p => p.value") == 100
            assert row.locator(".stages li.current").inner_text() == "queued"
        screenshot(page, "demo-upload-queued")

        # The gallery, in another tab of the same session: placeholders tagged
        # with their jobs, polled by gallery.js.
        gallery = page.context.new_page()
        gallery.goto(demo_site.url("/"))
        for job in jobs:
            card = gallery.locator(f"li.card:has(img[data-async-image-job='{job}'])")
            # Missing when parallel uploads lost a job id from the session.
            assert card.count() == 1, f"no placeholder of job {job} in the gallery"
            assert card.locator("[data-stage]").inner_text() == "queued"
            assert "token=" in card.get_attribute("data-status-url")
        # The first photo's page: the medium placeholder, then (reloaded) the sizes.
        detail = page.context.new_page()
        detail.goto(demo_site.url(rows.nth(0).locator("a.name").get_attribute("href")))
        medium = detail.locator(f"figure.detail img[data-async-image-job='{jobs[0]}']")
        assert PLACEHOLDER in medium.get_attribute("src")
        assert detail.locator("#zip-form").count() == 0  # no zip before the image is saved

    # The worker resumes: both rows reach "done" and show their thumbnails.
    page.wait_for_function(
        "document.querySelectorAll('#uploads .upload-row[data-state=done]').length === 2"
    )
    for n in range(2):
        row = rows.nth(n)
        assert row.locator("progress").evaluate("p => p.value") == 100
        assert row.locator(".stages li.passed").count() == 5
        assert row.locator(".message").inner_text().startswith("Saved: ")
        img = row.locator("img.thumb")
        img.evaluate("i => i.decode()")  # loaded and decodable
        assert "/media/" in img.get_attribute("src")
        assert img.evaluate("i => [i.naturalWidth, i.naturalHeight]") == [240, 240]
        assert "async-image-pending" not in (img.get_attribute("class") or "")
    screenshot(page, "demo-upload-done")

    # The gallery tab swapped its placeholders too, without a reload.
    for job in jobs:
        img = gallery.locator(f"img[data-async-image-job='{job}']")
        gallery.wait_for_function(
            "img => img.src.includes('/media/') && img.complete && img.naturalWidth > 0",
            arg=img.element_handle(),
        )
    gallery.wait_for_function(
        "[...document.querySelectorAll('.card [data-stage]')]"
        ".filter(b => b.textContent === 'done').length >= 2"
    )
    screenshot(gallery, "demo-gallery")

    detail.locator("#zip-form").wait_for()  # gallery.js reloaded the page
    assert detail.locator(".sizes li").count() == 3  # original, small, medium
    detail.locator("figure.detail img").evaluate("i => i.decode()")
    screenshot(detail, "demo-detail")

    # The session remembers both jobs, although they were uploaded at once.
    jobs_page = page.context.new_page()
    jobs_page.goto(demo_site.url("/jobs/"))
    for f in files:
        assert jobs_page.locator("table.jobs tr.done", has_text=f["name"]).count() >= 1
    screenshot(jobs_page, "demo-jobs")


def test_upload_not_an_image_shows_the_form_error(demo_site, new_page):
    page = new_page()
    page.goto(demo_site.url("/upload/"))
    page.set_input_files(
        "#id_image",
        files=[{"name": "notes.jpg", "mimeType": "image/jpeg", "buffer": NOT_AN_IMAGE}],
    )
    row = page.locator(ROW)
    row.and_(page.locator("[data-state=failed]")).wait_for()
    assert row.locator(".message").inner_text() == INVALID_IMAGE
    assert "failed" in row.get_attribute("class")
    screenshot(page, "demo-upload-not-an-image")

    # Without JavaScript the form posts and comes back with the error.
    plain = new_page(java_script_enabled=False)
    plain.goto(demo_site.url("/upload/"))
    plain.set_input_files(
        "#id_image",
        files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": NOT_AN_IMAGE}],
    )
    with plain.expect_navigation() as navigation:
        plain.click("button[type=submit]")
    assert navigation.value.status == 400
    assert plain.locator(".errors").inner_text().strip() == INVALID_IMAGE
    screenshot(plain, "demo-upload-not-an-image-nojs")


# ---------------------------------------------------------------------------
# The admin
# ---------------------------------------------------------------------------


def test_admin_upload_shows_placeholder_then_thumbnail(demo_site, new_page):
    page = new_page()
    log_in(page, demo_site, "/admin/gallery/photo/add/")
    title = f"admin upload {uuid.uuid4().hex[:6]}"
    with demo_site.worker_paused():
        page.fill("#id_title", title)
        page.set_input_files(
            "#id_image",
            files=[{"name": "meadow.jpg", "mimeType": "image/jpeg", "buffer": picture(hue=70)}],
        )
        page.click("input[name=_continue]")
        page.locator(".messagelist .success").wait_for()
        change_url = page.url
        assert re.search(r"/admin/gallery/photo/\d+/change/$", change_url), change_url
        status = page.locator(".field-async_image_status .readonly")
        assert status.inner_text().strip() == "image: pending"

        page.goto(demo_site.url("/admin/gallery/photo/"))
        row = page.locator("#result_list tbody tr", has_text=title)
        assert PLACEHOLDER in row.locator("img").get_attribute("src")
        screenshot(page, "admin-placeholder")

    def thumbnail_shown() -> bool:
        page.goto(change_url)
        img = page.locator(".field-async_image_status img")
        return img.count() == 1 and "/media/" in (img.get_attribute("src") or "")

    wait_until(thumbnail_shown, 15, "no thumbnail in the change form", demo_site.worker_log)
    # status.js may have swapped the thumbnail into a page rendered while the job ran,
    # whose state text is the server's from then: render the page again to read it.
    page.goto(change_url)
    status = page.locator(".field-async_image_status .readonly").inner_text()
    assert status.startswith("image: done"), status
    page.locator(".field-async_image_status img").evaluate("i => i.decode()")
    screenshot(page, "admin-thumbnail")

    page.goto(demo_site.url("/admin/gallery/photo/"))
    row = page.locator("#result_list tbody tr", has_text=title)
    assert "/media/" in row.locator("img").get_attribute("src")
