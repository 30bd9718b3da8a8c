"""The upload payload: an ``UploadedFile`` taken apart into bytes and back.

Frame layout (format version 1)::

    b"AIS" | version (1 byte) | codec (1 byte) | header length (4 bytes, big endian)
          | header (codec-encoded map of metadata) | file bytes

Only the small metadata header goes through the codec; the file bytes are
appended raw. That keeps encoding to one copy of the data and lets decoding
slice the frame without copying. The version byte selects the decoder, so
frames queued before an upgrade still decode after it.

The header's ``sha256`` is None in a frame that ``save_image()`` staged while
it was still hashing the bytes; the worker then checks the bytes against the
job's sha256, which is in the database before the task is sent.
"""

from __future__ import annotations

import hashlib
import io
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack
from django.conf import settings
from django.core.files import File
from django.core.files.uploadedfile import (
    InMemoryUploadedFile,
    TemporaryUploadedFile,
    UploadedFile,
)

from async_image_save.conf import conf
from async_image_save.exceptions import ChecksumMismatch, PayloadDecodeError, UploadTooLarge
from async_image_save.names import sanitize_name
from async_image_save.safe_pickle import loads_plain_data

MAGIC = b"AIS"
FORMAT_VERSION = 1
CODEC_MSGPACK = ord("m")
CODEC_PICKLE = ord("p")
CODEC_IDS = {"msgpack": CODEC_MSGPACK, "pickle": CODEC_PICKLE}
_PREFIX_LEN = len(MAGIC) + 2 + 4
MAX_HEADER_BYTES = 64 * 1024
READ_CHUNK = 1024 * 1024
_HEADER_KEYS = frozenset({"name", "content_type", "charset", "size", "extra", "sha256"})


@dataclass(frozen=True)
class UploadPayload:
    """Everything needed to rebuild an upload in another process."""

    name: str
    content_type: str | None
    charset: str | None
    size: int
    #: None only in a frame staged before its hash was known (see ``saving.py``).
    sha256: str | None
    data: bytes | bytearray | memoryview = field(repr=False)
    content_type_extra: dict[str, Any] | None = None

    @classmethod
    def from_upload(cls, upload: File, *, max_bytes: int | None = None) -> UploadPayload:
        """Read ``upload`` once, in chunks, hashing as it reads.

        Raises :class:`UploadTooLarge` before reading when the declared size is
        over ``max_bytes`` (default ``ASYNC_IMAGE_SAVE_MAX_UPLOAD_BYTES``), and
        while reading if the file turns out larger than it said.
        """
        limit = conf.ASYNC_IMAGE_SAVE_MAX_UPLOAD_BYTES if max_bytes is None else max_bytes
        declared = upload.size
        if declared is not None and declared > limit:
            raise _too_large(upload.name, declared, limit)
        digest_state = hashlib.sha256()
        data = _read_hashed(upload, declared, limit, digest_state)
        return cls(
            name=sanitize_name(upload.name),
            content_type=getattr(upload, "content_type", None),
            charset=getattr(upload, "charset", None),
            size=len(data),
            sha256=digest_state.hexdigest(),
            data=data,
            content_type_extra=getattr(upload, "content_type_extra", None) or None,
        )

    def encode(self, codec: str | None = None) -> bytes:
        """Pack into a version-1 frame with ``codec`` (default: the configured one)."""
        return b"".join(self.encode_parts(codec))

    def encode_parts(
        self, codec: str | None = None
    ) -> tuple[bytes, bytes | bytearray | memoryview]:
        """The frame as (prefix and header, file bytes), so a stager can write it uncopied."""
        codec = codec or conf.ASYNC_IMAGE_SAVE_SERIALIZER
        if codec not in CODEC_IDS:
            raise ValueError(f"Unknown payload codec {codec!r}; use 'msgpack' or 'pickle'.")
        header = _ENCODERS[codec](
            {
                "name": self.name,
                "content_type": self.content_type,
                "charset": self.charset,
                "size": self.size,
                "extra": self.content_type_extra,
                "sha256": self.sha256,
            }
        )
        prefix = MAGIC + bytes((FORMAT_VERSION, CODEC_IDS[codec])) + len(header).to_bytes(4, "big")
        return prefix + header, self.data

    def verify(self, expected_sha256: str | None = None) -> None:
        """Check the bytes against the header's sha256 and ``expected_sha256`` (the job's).

        At least one of the two must be known: a frame without a checksum is
        only accepted with the job's.
        """
        if self.sha256 is None and expected_sha256 is None:
            raise ChecksumMismatch("The payload carries no sha256 and none was expected.")
        actual = hashlib.sha256(self.data).hexdigest()
        for label, wanted in (("payload header", self.sha256), ("job", expected_sha256)):
            if wanted is not None and actual != wanted:
                raise ChecksumMismatch(
                    f"sha256 of the received bytes ({actual[:12]}...) does not match the "
                    f"{label} ({wanted[:12]}...): the payload was altered or truncated in transit."
                )

    def to_upload(self) -> UploadedFile:
        """Rebuild the upload the way Django's upload handlers would.

        At most ``FILE_UPLOAD_MAX_MEMORY_SIZE`` bytes: an ``InMemoryUploadedFile``;
        larger: a ``TemporaryUploadedFile`` whose file is removed when closed.
        """
        if self.size <= settings.FILE_UPLOAD_MAX_MEMORY_SIZE:
            return InMemoryUploadedFile(
                io.BytesIO(self.data),
                None,
                self.name,
                self.content_type,
                self.size,
                self.charset,
                self.content_type_extra,
            )
        upload = TemporaryUploadedFile(
            self.name, self.content_type, self.size, self.charset, self.content_type_extra
        )
        try:
            upload.write(self.data)
            upload.flush()
            upload.seek(0)
        except BaseException:
            upload.close()
            raise
        return upload


def decode(frame: bytes | bytearray | memoryview, *, max_bytes: int | None = None) -> UploadPayload:
    """Parse a frame made by :meth:`UploadPayload.encode`, trusting nothing in it.

    Pickle frames are refused unless ``ASYNC_IMAGE_SAVE_ALLOW_PICKLE`` is on.
    Raises :class:`PayloadDecodeError` with a machine-readable ``code``.
    """
    limit = conf.ASYNC_IMAGE_SAVE_MAX_UPLOAD_BYTES if max_bytes is None else max_bytes
    view = memoryview(frame)
    if len(view) < _PREFIX_LEN or bytes(view[:3]) != MAGIC:
        raise PayloadDecodeError("Not an async_image_save payload (bad magic bytes).")
    version = view[3]
    decoder = _DECODERS.get(version)
    if decoder is None:
        raise PayloadDecodeError(
            f"Payload format version {version} is unknown to this worker (it knows "
            f"{sorted(_DECODERS)}); upgrade async_image_save on the workers.",
            code="payload_version",
        )
    return decoder(view, limit)


def _decode_v1(view: memoryview, limit: int) -> UploadPayload:
    codec_id = view[4]
    header_len = int.from_bytes(view[5:9], "big")
    if header_len > MAX_HEADER_BYTES or _PREFIX_LEN + header_len > len(view):
        raise PayloadDecodeError(f"Payload header length {header_len} is out of range.")
    header_bytes = bytes(view[_PREFIX_LEN : _PREFIX_LEN + header_len])
    if codec_id == CODEC_MSGPACK:
        header = _unpack_msgpack(header_bytes)
    elif codec_id == CODEC_PICKLE:
        if not conf.ASYNC_IMAGE_SAVE_ALLOW_PICKLE:
            raise PayloadDecodeError(
                "Refusing a pickle payload: set ASYNC_IMAGE_SAVE_ALLOW_PICKLE = True on the "
                "workers to accept pickle (unsafe if anyone else can write to the broker).",
                code="pickle_refused",
            )
        header = loads_plain_data(header_bytes)
    else:
        raise PayloadDecodeError(f"Unknown payload codec id {codec_id}.")
    data = view[_PREFIX_LEN + header_len :]
    return UploadPayload(data=data, **_validate_header(header, len(data), limit))


def _validate_header(header: Any, data_len: int, limit: int) -> dict[str, Any]:
    if not isinstance(header, dict) or set(header) != _HEADER_KEYS:
        raise PayloadDecodeError("Payload header has missing or unexpected keys.")
    size, digest = header["size"], header["sha256"]
    if not isinstance(size, int) or isinstance(size, bool) or size != data_len:
        raise PayloadDecodeError(
            f"Payload says {size!r} bytes but carries {data_len}.", code="size_mismatch"
        )
    if size > limit:
        raise PayloadDecodeError(
            f"Payload of {size} bytes exceeds ASYNC_IMAGE_SAVE_MAX_UPLOAD_BYTES ({limit}).",
            code="too_large",
        )
    if digest is not None and (not isinstance(digest, str) or len(digest) != 64):
        raise PayloadDecodeError("Payload sha256 is not a 64-character hex string or None.")
    if not isinstance(header["name"], str):
        raise PayloadDecodeError("Payload name is not a string.")
    for key in ("content_type", "charset"):
        if header[key] is not None and not isinstance(header[key], str):
            raise PayloadDecodeError(f"Payload {key} is not a string.")
    extra = header["extra"]
    if extra is not None and not (
        isinstance(extra, dict) and all(isinstance(k, str) for k in extra)
    ):
        raise PayloadDecodeError("Payload content_type_extra is not a mapping of strings.")
    return {
        "name": sanitize_name(header["name"]),
        "content_type": header["content_type"],
        "charset": header["charset"],
        "size": size,
        "sha256": digest,
        "content_type_extra": extra,
    }


def _unpack_msgpack(data: bytes) -> Any:
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            max_str_len=MAX_HEADER_BYTES,
            max_bin_len=MAX_HEADER_BYTES,
            max_array_len=64,
            max_map_len=64,
            max_ext_len=0,
        )
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise PayloadDecodeError(f"Payload header is not valid msgpack: {exc}") from exc


_ENCODERS: dict[str, Callable[[dict[str, Any]], bytes]] = {
    "msgpack": lambda header: msgpack.packb(header, use_bin_type=True),
    "pickle": lambda header: pickle.dumps(header, protocol=pickle.HIGHEST_PROTOCOL),
}
_DECODERS: dict[int, Callable[[memoryview, int], UploadPayload]] = {1: _decode_v1}


def _too_large(name: str | None, size: int, limit: int) -> UploadTooLarge:
    return UploadTooLarge(
        f"Upload {name!r} is {size} bytes, over ASYNC_IMAGE_SAVE_MAX_UPLOAD_BYTES ({limit}). "
        "Reject it in the form (a validator on the field) or raise the setting.",
        size=size,
        limit=limit,
    )


def _read_hashed(upload: File, declared: int | None, limit: int, digest: Any) -> bytes | bytearray:
    """Read the whole file once; hash each chunk into ``digest`` as it arrives."""
    if upload.closed:
        upload.open("rb")
    if upload.seekable() if hasattr(upload, "seekable") else True:
        upload.seek(0)
    raw = getattr(upload, "file", upload)
    # A BytesIO already holds the bytes: hash its buffer instead of copying chunks.
    if isinstance(raw, io.BytesIO):
        data = raw.getvalue()
        if len(data) > limit:
            raise _too_large(upload.name, len(data), limit)
        view = memoryview(data)
        for start in range(0, len(data), READ_CHUNK):
            digest.update(view[start : start + READ_CHUNK])
        return data
    readinto = getattr(raw, "readinto", None)
    if declared is not None and readinto is not None:
        return _readinto_hashed(upload.name, raw, declared, limit, digest)
    parts: list[bytes] = []
    total = 0
    for chunk in upload.chunks(READ_CHUNK):
        if isinstance(chunk, str):
            chunk = chunk.encode(getattr(upload, "charset", None) or "utf-8")
        total += len(chunk)
        if total > limit:
            raise _too_large(upload.name, total, limit)
        digest.update(chunk)
        parts.append(chunk)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _readinto_hashed(
    name: str | None, raw: Any, declared: int, limit: int, digest: Any
) -> bytearray:
    """Read straight into one buffer of the declared size: one copy, whatever the file size."""
    buf = bytearray(declared)
    view = memoryview(buf)
    filled = 0
    while filled < declared:
        n = raw.readinto(view[filled : filled + READ_CHUNK])
        if not n:
            break
        digest.update(view[filled : filled + n])
        filled += n
    view.release()
    del buf[filled:]
    while True:  # the file may be longer than it said
        chunk = raw.read(READ_CHUNK)
        if not chunk:
            break
        if len(buf) + len(chunk) > limit:
            raise _too_large(name, len(buf) + len(chunk), limit)
        digest.update(chunk)
        buf += chunk
    return buf
