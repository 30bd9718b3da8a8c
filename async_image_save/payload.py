"""The upload payload: an ``UploadedFile`` taken apart into bytes and back.

Frame layout (format version 2)::

    b"AIS" | version (1 byte) | codec (1 byte) | header length (4 bytes, big endian)
          | header (codec-encoded map of metadata) | file bytes

Only the small metadata header goes through the codec; the file bytes are
appended raw. That keeps encoding to one copy of the data and lets decoding
slice the frame without copying. The version byte selects the decoder, so
frames queued before an upgrade still decode after it.

Version 2 adds ``signature`` to the header: the sha256 signed to the job
(``signatures.py``), for a job whose row does not hold the sha256 because
``save_image()`` left the hashing to the thread that sends the task. Version 1
frames (no signature; ``sha256`` None in a frame staged before its hash was
known) are checked against the job's sha256, as before.
"""

from __future__ import annotations

import hashlib
import io
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import msgpack
from django.conf import settings
from django.core.files import File
from django.core.files.uploadedfile import (
    InMemoryUploadedFile,
    TemporaryUploadedFile,
    UploadedFile,
)

from async_image_save import signatures
from async_image_save.conf import conf
from async_image_save.exceptions import ChecksumMismatch, PayloadDecodeError
from async_image_save.names import sanitize_name
from async_image_save.reading import read_once, too_large
from async_image_save.safe_pickle import loads_plain_data

MAGIC = b"AIS"
FORMAT_VERSION = 2
CODEC_MSGPACK = ord("m")
CODEC_PICKLE = ord("p")
CODEC_IDS = {"msgpack": CODEC_MSGPACK, "pickle": CODEC_PICKLE}
_PREFIX_LEN = len(MAGIC) + 2 + 4
MAX_HEADER_BYTES = 64 * 1024
_HEADER_KEYS_V1 = frozenset({"name", "content_type", "charset", "size", "extra", "sha256"})
_HEADER_KEYS = _HEADER_KEYS_V1 | {"signature"}


@dataclass(frozen=True)
class UploadPayload:
    """Everything needed to rebuild an upload in another process."""

    name: str
    content_type: str | None
    charset: str | None
    size: int
    #: None until hashed (``from_upload(hashed=False)``, or a version-1 frame staged unhashed).
    sha256: str | None
    data: bytes | bytearray | memoryview = field(repr=False)
    content_type_extra: dict[str, Any] | None = None
    #: The sha256 signed to its job (:mod:`~async_image_save.signatures`), in a received frame.
    signature: str | None = None

    @classmethod
    def from_upload(
        cls, upload: File, *, max_bytes: int | None = None, hashed: bool = True
    ) -> UploadPayload:
        """Read ``upload`` once, in chunks, hashing as it reads (unless ``hashed=False``).

        Raises :class:`UploadTooLarge` before reading when the declared size is
        over ``max_bytes`` (default ``ASYNC_IMAGE_SAVE_MAX_UPLOAD_BYTES``), and
        while reading if the file turns out larger than it said. With
        ``hashed=False`` the sha256 is left for :meth:`with_sha256` to compute
        later, on another thread (``save_image()`` leaves it to the sending thread).
        """
        limit = conf.ASYNC_IMAGE_SAVE_MAX_UPLOAD_BYTES if max_bytes is None else max_bytes
        declared = upload.size
        if declared is not None and declared > limit:
            raise too_large(upload.name, declared, limit)
        digest_state = hashlib.sha256() if hashed else None
        data = read_once(upload, declared, limit, digest_state)
        return cls(
            name=sanitize_name(upload.name),
            content_type=getattr(upload, "content_type", None),
            charset=getattr(upload, "charset", None),
            size=len(data),
            sha256=digest_state.hexdigest() if digest_state is not None else None,
            data=data,
            content_type_extra=getattr(upload, "content_type_extra", None) or None,
        )

    def with_sha256(self) -> UploadPayload:
        """This payload with its sha256 computed (itself if it is known already)."""
        if self.sha256 is not None:
            return self
        return replace(self, sha256=hashlib.sha256(self.data).hexdigest())

    def encode(self, codec: str | None = None, *, signed_for: str | None = None) -> bytes:
        """Pack into a frame with ``codec`` (default: the configured one).

        ``signed_for``: the hex id of the job, to sign the sha256 to it (see
        :meth:`encode_parts`).
        """
        return b"".join(self.encode_parts(codec, signed_for=signed_for))

    def encode_parts(
        self, codec: str | None = None, *, signed_for: str | None = None
    ) -> tuple[bytes, bytes | bytearray | memoryview]:
        """The frame as (prefix and header, file bytes), so a stager can write it uncopied.

        With ``signed_for`` (a job's hex id) the header carries the sha256
        signed to that job, which a worker needs when the job's row has no
        sha256; the payload must be hashed (:meth:`with_sha256`).
        """
        codec = codec or conf.ASYNC_IMAGE_SAVE_SERIALIZER
        signature = None
        if signed_for is not None:
            if self.sha256 is None:
                raise ValueError("Hash the payload (with_sha256()) before signing it to a job.")
            signature = signatures.sign(signed_for, self.sha256)
        return self._prefix_and_header(codec, self.sha256, signature), self.data

    def frame_size(self, codec: str | None = None) -> int:
        """The length of the signed frame :meth:`encode_parts` will make, known before hashing."""
        codec = codec or conf.ASYNC_IMAGE_SAVE_SERIALIZER
        # A sha256 and a signature always take 64 hex characters each.
        return len(self._prefix_and_header(codec, "0" * 64, "1" * 64)) + self.size

    def _prefix_and_header(self, codec: str, sha256: str | None, signature: str | None) -> bytes:
        if codec not in CODEC_IDS:
            raise ValueError(f"Unknown payload codec {codec!r}; use 'msgpack' or 'pickle'.")
        header = _ENCODERS[codec](
            {
                "name": self.name,
                "content_type": self.content_type,
                "charset": self.charset,
                "size": self.size,
                "extra": self.content_type_extra,
                "sha256": sha256,
                "signature": signature,
            }
        )
        return (
            MAGIC
            + bytes((FORMAT_VERSION, CODEC_IDS[codec]))
            + len(header).to_bytes(4, "big")
            + header
        )

    def verify(self, expected_sha256: str | None = None, *, job_id: str | None = None) -> None:
        """Check the bytes against the header's sha256 and ``expected_sha256`` (the job's).

        Without ``expected_sha256`` (a job whose row has no sha256 yet), the
        header's sha256 must carry a valid signature for ``job_id``, the job's
        hex id: the checksum then comes from this project, not from whoever
        could write to the broker.
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
        if expected_sha256 is None and not (
            self.signature is not None
            and job_id is not None
            and signatures.is_valid(job_id, actual, self.signature)
        ):
            raise ChecksumMismatch(
                "The payload's sha256 is not signed for this job by this project's SECRET_KEY: "
                "it was forged, or the workers' SECRET_KEY differs from the web servers' "
                "(give them the same key; list a rotated one in SECRET_KEY_FALLBACKS).",
                code="bad_signature",
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
    return _decode_frame(view, limit, _HEADER_KEYS_V1)


def _decode_v2(view: memoryview, limit: int) -> UploadPayload:
    return _decode_frame(view, limit, _HEADER_KEYS)


def _decode_frame(view: memoryview, limit: int, keys: frozenset[str]) -> UploadPayload:
    """Versions 1 and 2 differ only in their header's keys."""
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
    return UploadPayload(data=data, **_validate_header(header, keys, len(data), limit))


def _validate_header(
    header: Any, keys: frozenset[str], data_len: int, limit: int
) -> dict[str, Any]:
    if not isinstance(header, dict) or set(header) != keys:
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
    signature = header.get("signature")
    if signature is not None and (not isinstance(signature, str) or len(signature) != 64):
        raise PayloadDecodeError("Payload signature is not a 64-character hex string or None.")
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
        "signature": signature,
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
_DECODERS: dict[int, Callable[[memoryview, int], UploadPayload]] = {1: _decode_v1, 2: _decode_v2}
