"""Fault injection for the fault and staging-matrix suites (tests/test_faults.py,
tests/test_staging_matrix.py) and the load benchmark.

* :class:`RedisServer` and :class:`RabbitNode`: our *own* servers on free loopback
  ports (never the shared ones on 6379/5672), so a test can stop, restart or lose
  them. Each stops exactly the processes it started, by PID.
* :class:`TcpProxy`: a loopback TCP proxy (e.g. worker -> PostgreSQL) that a test
  can cut and restore without touching the server behind it.
* :class:`FaultStorage`: a real FileSystemStorage whose saves fail, fill the disk,
  block on a gate or SIGKILL the worker process, armed through files in the
  shared test temp dir so that the pytest process arms and a worker obeys.
* With ``AIS_SIGNAL_LOG`` set, the process appends one JSON line per
  ``image_saved``/``thumbnails_ready``/``image_failed`` signal it sends.
* ``python -m tests.faults '<json>'``: the "web side" driver: runs upload, duplicate
  publish and recover operations in a process whose broker is the test's own.

Nothing here imports pytest: the worker subprocesses import this module (through
the storage of ``tests.models.FaultPhoto``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from django.core.files.storage import FileSystemStorage

ROOT = Path(__file__).resolve().parent.parent

# --- control files (shared by the pytest process and the workers) --------------------------


def faults_dir() -> str:
    from django.conf import settings

    path = os.path.join(settings.BASE_TMP, "faults")
    os.makedirs(path, exist_ok=True)
    return path


def _control(label: str, what: str) -> str:
    return os.path.join(faults_dir(), f"{label}.{what}")


@contextlib.contextmanager
def _locked(label: str):
    with open(_control(label, "lock"), "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def arm(label: str, mode: str, count: int = 1, match: str = "", gate: str = "gate") -> None:
    """Make the next ``count`` saves whose name contains ``match`` do ``mode``.

    Modes: ``fail`` (partial file, then OSError), ``enospc`` (partial file, then
    ENOSPC), ``kill-before`` (SIGKILL before writing), ``kill-mid`` (SIGKILL after
    writing half the file at its final name), ``gate`` (wait until
    :func:`open_gate` opens ``gate``, then save). Rules add up; the first that
    matches a name (and still has a count) applies.
    """
    with _locked(label):
        path = Path(_control(label, "fault"))
        rules = json.loads(path.read_text()) if path.exists() else []
        rules.append({"mode": mode, "count": count, "match": match, "gate": gate})
        path.write_text(json.dumps(rules))


def disarm(label: str) -> None:
    """Remove every rule, open every gate (a waiting save proceeds) and forget the logs."""
    with _locked(label):
        for path in Path(faults_dir()).glob(f"{label}.*"):
            if not path.name.endswith(".lock"):
                path.unlink(missing_ok=True)


def _take(label: str, name: str) -> dict | None:
    """The rule to apply to saving ``name`` (consuming one count), or None."""
    with _locked(label):
        path = Path(_control(label, "fault"))
        try:
            rules = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            return None
        for rule in rules:
            if rule["count"] > 0 and rule["match"] in name:
                rule["count"] -= 1
                path.write_text(json.dumps(rules))
                return rule
        return None


def open_gate(label: str, gate: str = "gate") -> None:
    Path(_control(label, f"open-{gate}")).write_text("1")


def gate_entered(label: str, gate: str = "gate") -> int:
    """How many saves have reached ``gate`` so far."""
    try:
        return len(Path(_control(label, f"entered-{gate}")).read_text().splitlines())
    except FileNotFoundError:
        return 0


class ScenarioError(RuntimeError):
    """The scenario could not be set up (not a finding about the code under test)."""


def wait_gate(label: str, count: int = 1, gate: str = "gate", timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while gate_entered(label, gate) < count:
        if time.monotonic() > deadline:
            raise ScenarioError(f"{count} save(s) never reached gate {gate!r}")
        time.sleep(0.02)


def saves(label: str) -> list[str]:
    """Every name a FaultStorage with ``label`` was asked to write (attempts included)."""
    try:
        return Path(_control(label, "saves")).read_text().splitlines()
    except FileNotFoundError:
        return []


def _append(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


class FaultStorage(FileSystemStorage):
    """A FileSystemStorage that misbehaves as :func:`arm` says, then works normally."""

    def __init__(self, label: str = "fault", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.label = label

    def _partial(self, name: str, content: Any) -> None:
        """Write the first half of ``content`` at the final path, as a dying write would."""
        path = self.path(name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        content.seek(0)
        data = content.read()
        with open(path, "wb") as fh:
            fh.write(data[: max(1, len(data) // 2)])
            fh.flush()
            os.fsync(fh.fileno())

    def _save(self, name: str, content: Any) -> str:
        _append(_control(self.label, "saves"), name)
        rule = _take(self.label, name)
        mode = rule["mode"] if rule else None
        if mode == "gate":
            _append(_control(self.label, f"entered-{rule['gate']}"), f"{os.getpid()} {name}")
            opened = _control(self.label, f"open-{rule['gate']}")
            armed = _control(self.label, "fault")
            deadline = time.monotonic() + 60
            # Open, or disarmed by the test's teardown: go on.
            while not os.path.exists(opened) and os.path.exists(armed):
                if time.monotonic() > deadline:
                    raise OSError("gate never opened")
                time.sleep(0.02)
        elif mode == "fail":
            self._partial(name, content)
            raise OSError("injected storage failure")
        elif mode == "enospc":
            self._partial(name, content)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self.path(name))
        elif mode == "kill-before":
            os.kill(os.getpid(), signal.SIGKILL)
        elif mode == "kill-mid":
            self._partial(name, content)
            os.kill(os.getpid(), signal.SIGKILL)
        return super()._save(name, content)


def fault_storage() -> FaultStorage:
    """The storage of ``tests.models.FaultPhoto`` (label ``fault``)."""
    from django.conf import settings

    return FaultStorage(label="fault", location=os.path.join(settings.MEDIA_ROOT, "fault"))


# --- signals, recorded per process (AIS_SIGNAL_LOG) -----------------------------------------


def _connect_signal_log(path: str) -> None:
    from async_image_save.signals import image_failed, image_saved, thumbnails_ready

    def receiver_for(name: str):
        def receiver(sender: Any, job: Any, **kwargs: Any) -> None:
            entry = {"signal": name, "job": job.pk.hex, "pid": os.getpid()}
            if name == "image_saved":
                entry["name"] = kwargs["name"]
            if name == "image_failed":
                entry["code"] = kwargs["code"]
            _append(path, json.dumps(entry))

        return receiver

    for name, sig in (
        ("image_saved", image_saved),
        ("thumbnails_ready", thumbnails_ready),
        ("image_failed", image_failed),
    ):
        sig.connect(receiver_for(name), weak=False, dispatch_uid=f"tests.faults.{name}")


def read_signals(path: str | Path) -> list[dict]:
    try:
        return [json.loads(line) for line in Path(path).read_text().splitlines() if line]
    except FileNotFoundError:
        return []


if os.environ.get("AIS_SIGNAL_LOG"):
    _connect_signal_log(os.environ["AIS_SIGNAL_LOG"])


# --- ports and processes --------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_port(port: int, timeout: float, *, open_: bool = True) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(port) == open_:
            return True
        time.sleep(0.05)
    return False


def _stop_pid(pid: int | None, timeout: float = 15.0, sig: int = signal.SIGTERM) -> None:
    """Signal one process we started and wait for it to go (SIGKILL after ``timeout``)."""
    if not pid:
        return
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def listener_pid(port: int) -> int | None:
    """PID of the process listening on 127.0.0.1:``port`` (via ``ss``)."""
    out = subprocess.run(
        ["ss", "-Hltnp", f"sport = :{port}"], capture_output=True, text=True
    ).stdout
    marker = "pid="
    if marker in out:
        return int(out.split(marker, 1)[1].split(",", 1)[0])
    return None


class RedisServer:
    """A redis-server of our own: no persistence, so a restart loses every key."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir, self.port = Path(workdir), port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        exe = shutil.which("redis-server")
        if not exe:
            raise RuntimeError("redis-server is not installed")
        if port_open(self.port):
            raise RuntimeError(f"port {self.port} is taken")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                exe,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
                "--logfile",
                str(self.workdir / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        if not wait_port(self.port, 20):
            self.stop()
            raise RuntimeError("our redis-server did not start")

    def stop(self) -> None:
        """Kill it (SIGKILL: nothing is saved, as after a crash or an OOM kill)."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(10)
            self.proc = None
            wait_port(self.port, 10, open_=False)

    def restart(self) -> None:
        self.stop()
        self.start()


class RabbitNode:
    """A RabbitMQ node of our own (own ports, epmd, mnesia and log dirs).

    ``stop_app``/``start_app`` take the broker down and up again in a second or two,
    keeping durable queues and persistent messages, as a broker restart does.
    """

    BIN = Path("/usr/lib/rabbitmq/bin")

    def __init__(self, workdir: Path) -> None:
        self.workdir = Path(workdir)
        self.port, self.dist_port, self.epmd_port = free_port(), free_port(), free_port()
        self.node = f"aistest{os.getpid()}{self.port}@localhost"
        self.proc: subprocess.Popen | None = None
        self.beam_pid: int | None = None
        self.epmd_pid: int | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            HOME=str(self.workdir / "home"),
            RABBITMQ_NODENAME=self.node,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            ERL_EPMD_ADDRESS="127.0.0.1",
            ERL_EPMD_PORT=str(self.epmd_port),
            RABBITMQ_MNESIA_BASE=str(self.workdir / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.workdir / "log"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.workdir / "enabled_plugins"),
            RABBITMQ_CONFIG_FILE=str(self.workdir / "rabbitmq"),
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
        )
        return env

    def ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(self.BIN / "rabbitmqctl"), "-n", self.node, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def start(self, timeout: float = 90) -> None:
        (self.workdir / "home").mkdir(parents=True, exist_ok=True)
        (self.workdir / "enabled_plugins").write_text("[].\n")
        (self.workdir / "rabbitmq.conf").write_text("")
        log = open(self.workdir / "stdout.log", "ab")  # noqa: SIM115 - owned by the node
        self.proc = subprocess.Popen(
            [str(self.BIN / "rabbitmq-server")],
            env=self.env,
            cwd=self.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        if not wait_port(self.port, timeout):
            self.stop()
            raise RuntimeError(f"our RabbitMQ node did not open {self.port} in {timeout}s")
        self.beam_pid = listener_pid(self.port)
        self.epmd_pid = listener_pid(self.epmd_port)

    def stop_app(self) -> None:
        result = self.ctl("stop_app")
        assert result.returncode == 0, result.stderr
        wait_port(self.port, 20, open_=False)

    def start_app(self) -> None:
        result = self.ctl("start_app")
        assert result.returncode == 0, result.stderr
        if not wait_port(self.port, 30):
            raise RuntimeError("RabbitMQ did not come back")

    def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(Exception):
            self.ctl("stop", timeout=60)
        for pid in (self.beam_pid, self.proc.pid):
            _stop_pid(pid)
        with contextlib.suppress(Exception):
            self.proc.wait(10)
        _stop_pid(self.epmd_pid)  # our own epmd (own port): nobody else uses it
        self.proc = None


class TcpProxy:
    """Forwards 127.0.0.1:``port`` to ``upstream``; :meth:`cut` drops every connection
    and refuses new ones until :meth:`restore`, as if the server were gone."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = free_port()
        self._cut = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", self.port))
        self._listener.listen(64)
        self._listener.settimeout(0.2)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self._cut.is_set():
                client.close()  # the "server" is unreachable
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                self._conns.update((client, server))
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            self._close(src)
            self._close(dst)

    def _close(self, sock: socket.socket) -> None:
        with self._lock:
            self._conns.discard(sock)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            sock.close()

    def cut(self) -> None:
        self._cut.set()
        with self._lock:
            conns = list(self._conns)
        for sock in conns:
            self._close(sock)

    def restore(self) -> None:
        self._cut.clear()

    def close(self) -> None:
        self._stop.set()
        self.cut()
        with contextlib.suppress(OSError):
            self._listener.close()
        self._thread.join(5)


# --- images ---------------------------------------------------------------------------------


def sized_jpeg(target: int, seed: int = 1) -> bytes:
    """A noise JPEG (quality 100: ~2 bytes per pixel) of about ``target`` bytes (+-15 %)."""
    import random

    from PIL import Image

    pixels = max(64 * 64, int(target / 1.98))
    width = int(pixels**0.5)
    height = max(64, pixels // width)
    rnd = random.Random(seed)
    image = Image.frombytes("RGB", (width, height), rnd.randbytes(width * height * 3))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=100)
    data = out.getvalue()
    assert 0.85 * target < len(data) < 1.15 * target, (target, len(data))
    return data


def files_under(path: str | Path) -> list[str]:
    found = []
    for base, _dirs, names in os.walk(path):
        found += [os.path.relpath(os.path.join(base, n), path) for n in names]
    return sorted(found)


# --- the "web side" driver ------------------------------------------------------------------


def drive(env: dict[str, str], ops: list[dict], timeout: float = 120) -> list[dict]:
    """Run ``ops`` in a driver subprocess with ``env`` (its broker, settings); return results."""
    result = subprocess.run(
        [sys.executable, "-m", "tests.faults", json.dumps(ops)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise ScenarioError(f"driver failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _op_upload(op: dict) -> dict:
    from django.apps import apps
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.db import transaction

    from async_image_save import save_image, wait_for_publishes

    model = apps.get_model(op.get("model", "tests.FaultPhoto"))
    data = Path(op["file"]).read_bytes()
    started = time.monotonic()
    with transaction.atomic():  # as a view with ATOMIC_REQUESTS
        instance = model.objects.get(pk=op["pk"]) if op.get("pk") else model.objects.create()
        upload = SimpleUploadedFile(op.get("name", Path(op["file"]).name), data, "image/jpeg")
        job = save_image(upload, instance, queue=op.get("queue"))
    elapsed = time.monotonic() - started  # the request's cost; the send is in the background
    if not wait_for_publishes(timeout=120):
        raise RuntimeError(f"job {job.pk.hex} was still being sent after 120 s")
    job.refresh_from_db()
    return {
        "job": job.pk.hex,
        "pk": instance.pk,
        "state": job.state,
        "error_code": job.error_code,
        "staged_ref": job.staged_ref,
        "published": job.published_at is not None,
        "elapsed": elapsed,
    }


def _op_republish(op: dict) -> dict:
    """Publish a job's message again ``times`` times (same task id, as a redelivery)."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    from async_image_save.models import ImageJob
    from async_image_save.payload import UploadPayload
    from async_image_save.saving import job_message
    from async_image_save.tasks import publish

    job = ImageJob.objects.select_related("content_type").get(pk=op["job"])
    if job.staged_ref:
        body: bytes | str = job.staged_ref
    else:
        data = Path(op["file"]).read_bytes()
        body = UploadPayload.from_upload(
            SimpleUploadedFile(job.source_name, data, "image/jpeg")
        ).encode(job.codec, signed_for=job.pk.hex)
    for _ in range(op.get("times", 1)):
        publish(job_message(job), body)
    return {"job": job.pk.hex}


def _op_recover(op: dict) -> dict:
    from datetime import timedelta

    from django.core.management import call_command

    from async_image_save import recovery

    recovery.UNPUBLISHED_GRACE = timedelta(seconds=op.get("grace", 30))
    out = io.StringIO()
    call_command("async_image_save_recover", *op.get("args", ["--older-than", "1m"]), stdout=out)
    return {"output": out.getvalue()}


def _op_wait_gate(op: dict) -> dict:
    wait_gate(op.get("label", "fault"), op.get("count", 1), op.get("gate", "gate"))
    return {}


def main(ops: list[dict]) -> None:
    import django

    django.setup()
    handlers = {
        "upload": _op_upload,
        "republish": _op_republish,
        "recover": _op_recover,
        "wait_gate": _op_wait_gate,
    }
    results = []
    for op in ops:
        if op.get("sleep"):
            time.sleep(op["sleep"])
        if "same_as" in op:  # the same object as an earlier upload of this run
            op["pk"] = results[op["same_as"]]["pk"]
        if "of" in op:  # the job of an earlier upload of this run
            op["job"] = results[op["of"]]["job"]
        results.append(handlers[op["op"]](op))
    print(json.dumps(results))


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
