"""QueuedStorage with Google Cloud Storage and Azure Blob Storage, against local emulators.

django-storages' GoogleCloudStorage against ``gcp-storage-emulator`` and its
AzureStorage against Azurite, both on loopback. The client libraries and
emulators come with the ``test`` extra and ``scripts/test`` (which installs
Azurite from npm and sets ``AIS_AZURITE_BIN``); run by hand without them,
each half skips, and under ``CI=true`` it fails instead. The transfer runs in
this process: it is the same code the worker runs, which test_s3.py drives
through a real worker.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage

from async_image_save.models import QueuedFile
from tests.conftest import SERVICES_REQUIRED, jpeg_bytes, port_open

pytestmark = [pytest.mark.services, pytest.mark.django_db]

# Azurite's well-known development account (public, documented by Microsoft).
AZURE_ACCOUNT = "devstoreaccount1"
AZURE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


def require_module(name: str) -> None:
    """Import ``name``; skip when missing locally, fail in CI."""
    try:
        __import__(name)
    except ImportError as exc:
        message = f"{name} is not installed ({exc}); pip install -e '.[test]'"
        if SERVICES_REQUIRED:
            pytest.fail(message)
        pytest.skip(message)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(command: list[str], port: int, log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while not port_open("127.0.0.1", port, timeout=0.2):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            message = f"{command[0]} did not start:\n{log.read_text(errors='replace')[-2000:]}"
            if SERVICES_REQUIRED:
                pytest.fail(message)
            pytest.skip(message)
        time.sleep(0.1)
    return proc


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def gcs_remote(tmp_path_factory):
    require_module("storages.backends.gcloud")
    require_module("gcp_storage_emulator")
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage as gcs
    from storages.backends.gcloud import GoogleCloudStorage

    port = free_port()
    command = [sys.executable, "-m", "gcp_storage_emulator", "start", "--host=127.0.0.1"]
    proc = start_server(
        [*command, f"--port={port}", "--in-memory"], port, tmp_path_factory.mktemp("gcs") / "log"
    )
    # The google client reads the emulator's address from the environment.
    previous = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = f"http://127.0.0.1:{port}"
    try:
        credentials = AnonymousCredentials()
        gcs.Client(project="test", credentials=credentials).create_bucket("ais-photos")
        yield GoogleCloudStorage(
            bucket_name="ais-photos",
            project_id="test",
            credentials=credentials,
            file_overwrite=True,
            querystring_auth=False,  # signing needs a service account key
        )
    finally:
        if previous is None:
            os.environ.pop("STORAGE_EMULATOR_HOST", None)
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = previous
        stop_server(proc)


@pytest.fixture(scope="module")
def azure_remote(tmp_path_factory):
    require_module("storages.backends.azure_storage")
    binary = os.environ.get("AIS_AZURITE_BIN") or shutil.which("azurite-blob")
    if not binary:
        message = "Azurite not found: npm install azurite, then AIS_AZURITE_BIN=.../azurite-blob"
        if SERVICES_REQUIRED:
            pytest.fail(message)
        pytest.skip(message)
    from azure.storage.blob import BlobServiceClient
    from storages.backends.azure_storage import AzureStorage

    port = free_port()
    command = [binary, "--blobHost", "127.0.0.1", "--blobPort", str(port)]
    # --disableTelemetry: Azurite would otherwise try to reach Microsoft's servers.
    command += ["--inMemoryPersistence", "--disableTelemetry", "--skipApiVersionCheck"]
    proc = start_server(command, port, tmp_path_factory.mktemp("azurite") / "log")
    connection_string = (
        f"DefaultEndpointsProtocol=http;AccountName={AZURE_ACCOUNT};AccountKey={AZURE_KEY};"
        f"BlobEndpoint=http://127.0.0.1:{port}/{AZURE_ACCOUNT};"
    )
    try:
        BlobServiceClient.from_connection_string(connection_string).create_container("photos")
        yield AzureStorage(
            connection_string=connection_string,
            account_name=AZURE_ACCOUNT,
            account_key=AZURE_KEY,
            azure_container="photos",
            overwrite_files=True,
        )
    finally:
        stop_server(proc)


@pytest.fixture(params=["gcs", "azure"])
def queued(request, settings, tmp_path, monkeypatch):
    from async_image_save import transfer

    remote = request.getfixturevalue(f"{request.param}_remote")
    monkeypatch.setattr(transfer, "enqueue", lambda *args, **kwargs: None)  # run in-process
    settings.STORAGES = {
        **settings.STORAGES,
        "queued": {
            "BACKEND": "async_image_save.storage.QueuedStorage",
            "OPTIONS": {
                "local": FileSystemStorage(location=str(tmp_path), base_url="/local/"),
                "remote": remote,
            },
        },
    }
    from django.core.files.storage import storages

    return storages["queued"]


def test_queued_storage_transfers_verifies_serves_and_deletes(queued):
    data = jpeg_bytes(120, 90)
    name = queued.save("photos/cloud.jpg", ContentFile(data))
    assert queued.url(name) == f"/local/{name}"
    assert queued.transfer(name) == "remote"
    row = QueuedFile.objects.get(name=name)
    assert (row.state, row.size) == ("remote", len(data))
    assert queued.remote.size(name) == len(data)
    assert queued.url(name).startswith("http://127.0.0.1:")
    with queued.open(name, "rb") as fh:
        assert fh.read() == data
    assert queued.transfer(name) == "remote"  # redelivered: nothing to do
    queued.delete(name)
    assert not queued.remote.exists(name)
    assert not queued.local.exists(name)
