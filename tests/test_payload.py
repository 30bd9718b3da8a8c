"""Unit tests for async_image_save.payload: reading uploads, the frame, rebuilding uploads."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import pickle
import uuid
from pathlib import Path

import msgpack
import pytest
from django.core.files.base import ContentFile, File
from django.core.files.uploadedfile import (
    InMemoryUploadedFile,
    SimpleUploadedFile,
    TemporaryUploadedFile,
)
from django.test import override_settings
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from async_image_save.exceptions import ChecksumMismatch, PayloadDecodeError, UploadTooLarge
from async_image_save.names import MAX_NAME_LENGTH, sanitize_name
from async_image_save.payload import (
    CODEC_MSGPACK,
    CODEC_PICKLE,
    MAGIC,
    MAX_HEADER_BYTES,
    UploadPayload,
    decode,
)
from tests.conftest import jpeg_bytes

FILES = Path(__file__).resolve().parent / "files"
CODECS = ("msgpack", "pickle")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def header_for(data: bytes, **changes) -> dict:
    header = {
        "name": "photo.jpg",
        "content_type": "image/jpeg",
        "charset": None,
        "size": len(data),
        "extra": None,
        "sha256": sha(data),
    }
    header.update(changes)
    return header


def frame(
    header_bytes: bytes,
    data: bytes = b"",
    *,
    codec: int = CODEC_MSGPACK,
    version: int = 1,
    header_len: int | None = None,
) -> bytes:
    length = len(header_bytes) if header_len is None else header_len
    return MAGIC + bytes((version, codec)) + length.to_bytes(4, "big") + header_bytes + data


def msgpack_frame(data: bytes, header: dict | None = None) -> bytes:
    header = header_for(data) if header is None else header
    return frame(msgpack.packb(header, use_bin_type=True), data)


def decode_error(frame_bytes: bytes, **kwargs) -> PayloadDecodeError:
    with pytest.raises(PayloadDecodeError) as info:
        decode(frame_bytes, **kwargs)
    return info.value


# ---------------------------------------------------------------------------
# from_upload
# ---------------------------------------------------------------------------


def test_from_simple_uploaded_file():
    data = jpeg_bytes(64, 48)
    payload = UploadPayload.from_upload(SimpleUploadedFile("cat.jpg", data, "image/jpeg"))
    assert payload.name == "cat.jpg"
    assert payload.content_type == "image/jpeg"
    assert payload.charset is None
    assert payload.content_type_extra is None
    assert payload.size == len(data)
    assert bytes(payload.data) == data
    assert payload.sha256 == sha(data)


def test_from_in_memory_uploaded_file_keeps_charset_and_extra():
    data = b"some bytes" * 100
    upload = InMemoryUploadedFile(
        io.BytesIO(data),
        "image",
        "notes.txt",
        "text/plain",
        len(data),
        "utf-8",
        {"boundary": "xyz"},
    )
    payload = UploadPayload.from_upload(upload)
    assert (payload.name, payload.content_type, payload.charset) == (
        "notes.txt",
        "text/plain",
        "utf-8",
    )
    assert payload.content_type_extra == {"boundary": "xyz"}
    assert bytes(payload.data) == data
    assert payload.sha256 == sha(data)
    assert payload.size == len(data)


def test_from_temporary_uploaded_file(tmp_path):
    data = os.urandom(3 * 1024 * 1024 + 17)  # several read chunks
    with override_settings(FILE_UPLOAD_TEMP_DIR=str(tmp_path)):
        upload = TemporaryUploadedFile("big.jpg", "image/jpeg", len(data), None)
    try:
        upload.write(data)
        upload.flush()
        payload = UploadPayload.from_upload(upload)
    finally:
        upload.close()
    assert payload.name == "big.jpg"
    assert payload.size == len(data)
    assert bytes(payload.data) == data
    assert payload.sha256 == sha(data)


def test_from_plain_file_over_open_file_uses_base_name():
    path = FILES / "photo.jpg"
    with open(path, "rb") as fh:
        fh.read(100)  # position must not matter
        payload = UploadPayload.from_upload(File(fh))
    data = path.read_bytes()
    assert payload.name == "photo.jpg"
    assert payload.content_type is None
    assert bytes(payload.data) == data
    assert payload.sha256 == sha(data)


def test_from_closed_file_reopens_it():
    path = FILES / "tiny.png"
    django_file = File(open(path, "rb"))  # noqa: SIM115
    django_file.close()
    try:
        payload = UploadPayload.from_upload(django_file)
    finally:
        django_file.close()
    assert bytes(payload.data) == path.read_bytes()


def test_from_text_mode_file_encodes_chunks(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("héllo\n" * 10, encoding="utf-8")
    with open(path, encoding="utf-8") as fh:
        payload = UploadPayload.from_upload(File(fh, name="notes.txt"))
    assert bytes(payload.data) == path.read_bytes()
    assert payload.sha256 == sha(path.read_bytes())


# ---------------------------------------------------------------------------
# Names (sanitize_name itself: tests/test_names.py)
# ---------------------------------------------------------------------------


def test_from_upload_sanitizes_name_of_plain_file():
    payload = UploadPayload.from_upload(File(io.BytesIO(b"x"), name="../../etc/pass\x00wd"))
    assert payload.name == "passwd"
    payload = UploadPayload.from_upload(File(io.BytesIO(b"x"), name=None))
    assert payload.name == "upload"


@pytest.mark.parametrize("name", ["a" * 199 + " " + "b" * 100, "e\u200b\u0301.jpg"])
def test_decoded_name_equals_sanitized_upload_name(name):
    payload = UploadPayload.from_upload(File(io.BytesIO(b"data"), name=name))
    decoded = decode(payload.encode("msgpack"))
    assert payload.name == sanitize_name(name)
    assert decoded.name == payload.name


# ---------------------------------------------------------------------------
# Size limits
# ---------------------------------------------------------------------------


class _ExplodingReader(io.RawIOBase):
    """A stream that fails the test if anything reads it."""

    def readable(self):
        return True

    def readinto(self, buffer):
        raise AssertionError("the upload was read although its declared size is over the limit")


def test_too_large_by_declared_size_raises_before_reading():
    upload = File(_ExplodingReader(), name="huge.jpg")
    upload.size = 10_000
    with pytest.raises(UploadTooLarge) as info:
        UploadPayload.from_upload(upload, max_bytes=100)
    assert (info.value.size, info.value.limit) == (10_000, 100)
    assert "ASYNC_IMAGE_SAVE_MAX_UPLOAD_BYTES" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_too_large_uses_setting_by_default(settings):
    settings.ASYNC_IMAGE_SAVE_MAX_UPLOAD_BYTES = 10
    with pytest.raises(UploadTooLarge) as info:
        UploadPayload.from_upload(SimpleUploadedFile("a.jpg", b"x" * 11))
    assert info.value.limit == 10
    # exactly at the limit is fine
    assert UploadPayload.from_upload(SimpleUploadedFile("a.jpg", b"x" * 10)).size == 10


def test_too_large_while_reading_file_that_understates_its_size(tmp_path):
    path = tmp_path / "liar.bin"
    path.write_bytes(b"z" * 1000)
    with open(path, "rb") as fh:
        upload = File(fh, name="liar.bin")
        upload.size = 10  # declares less than it holds
        with pytest.raises(UploadTooLarge) as info:
            UploadPayload.from_upload(upload, max_bytes=100)
    assert info.value.size > 100
    assert info.value.limit == 100


def test_too_large_while_reading_in_memory_upload_that_understates_its_size():
    upload = InMemoryUploadedFile(io.BytesIO(b"z" * 1000), None, "liar.jpg", "image/jpeg", 10, None)
    with pytest.raises(UploadTooLarge) as info:
        UploadPayload.from_upload(upload, max_bytes=100)
    assert (info.value.size, info.value.limit) == (1000, 100)


# ---------------------------------------------------------------------------
# encode / decode
# ---------------------------------------------------------------------------


def make_payload(data: bytes | None = None, **kwargs) -> UploadPayload:
    data = jpeg_bytes(40, 30) if data is None else data
    upload = InMemoryUploadedFile(
        io.BytesIO(data),
        None,
        kwargs.get("name", "photo.jpg"),
        kwargs.get("content_type", "image/jpeg"),
        len(data),
        kwargs.get("charset"),
        kwargs.get("extra", {"a": "b"}),
    )
    return UploadPayload.from_upload(upload)


def assert_same_payload(decoded: UploadPayload, payload: UploadPayload) -> None:
    assert bytes(decoded.data) == bytes(payload.data)
    for field in ("name", "content_type", "charset", "size", "sha256", "content_type_extra"):
        assert getattr(decoded, field) == getattr(payload, field), field


def test_round_trip_msgpack():
    payload = make_payload(charset="utf-8")
    encoded = payload.encode("msgpack")
    assert encoded[:5] == MAGIC + bytes((2, CODEC_MSGPACK))
    decoded = decode(encoded)
    assert_same_payload(decoded, payload)
    decoded.verify(payload.sha256)


def test_round_trip_pickle_when_allowed(settings):
    settings.ASYNC_IMAGE_SAVE_ALLOW_PICKLE = True
    payload = make_payload()
    encoded = payload.encode("pickle")
    assert encoded[:5] == MAGIC + bytes((2, CODEC_PICKLE))
    assert_same_payload(decode(encoded), payload)


def test_encode_uses_configured_serializer(settings):
    settings.ASYNC_IMAGE_SAVE_SERIALIZER = "pickle"
    assert make_payload().encode()[4] == CODEC_PICKLE
    settings.ASYNC_IMAGE_SAVE_SERIALIZER = "msgpack"
    assert make_payload().encode()[4] == CODEC_MSGPACK


def test_encode_unknown_codec():
    with pytest.raises(ValueError, match="json"):
        make_payload().encode("json")


def test_decode_accepts_bytearray_and_memoryview():
    payload = make_payload()
    encoded = payload.encode("msgpack")
    assert bytes(decode(bytearray(encoded)).data) == bytes(payload.data)
    assert bytes(decode(memoryview(encoded)).data) == bytes(payload.data)


def test_pickle_refused_by_default():
    encoded = make_payload().encode("pickle")
    error = decode_error(encoded)
    assert error.code == "pickle_refused"
    assert "ASYNC_IMAGE_SAVE_ALLOW_PICKLE" in str(error)


_calls: list[tuple] = []


def _record_call(*args):
    _calls.append(args)
    return "called"


class _CallsOsSystem:
    def __reduce__(self):
        return (os.system, ("true",))


class _CallsRecorder:
    def __reduce__(self):
        return (_record_call, ("pwned",))


class _PlainObject:
    pass


@pytest.mark.parametrize("evil", [_CallsOsSystem(), _CallsRecorder(), _PlainObject()])
def test_pickle_with_global_refused_even_when_allowed(settings, evil):
    settings.ASYNC_IMAGE_SAVE_ALLOW_PICKLE = True
    _calls.clear()
    data = b"abc"
    header = pickle.dumps(header_for(data, name=evil), protocol=pickle.HIGHEST_PROTOCOL)
    error = decode_error(frame(header, data, codec=CODEC_PICKLE))
    assert error.code == "pickle_refused"
    assert "only plain data" in str(error)
    assert _calls == []


def test_garbage_pickle_header_is_a_decode_error(settings):
    settings.ASYNC_IMAGE_SAVE_ALLOW_PICKLE = True
    error = decode_error(frame(b"\x80\x05not a pickle", b"abc", codec=CODEC_PICKLE))
    assert error.code == "payload_invalid"
    assert "not valid pickle" in str(error)


@pytest.mark.parametrize("bad", [b"", b"AI", b"XYZ" + bytes(20), b"ais" + bytes(20)])
def test_bad_magic(bad):
    error = decode_error(bad)
    assert error.code == "payload_invalid"
    assert "magic" in str(error)


def test_bad_magic_on_real_frame():
    encoded = bytearray(make_payload().encode("msgpack"))
    encoded[0:3] = b"JPG"
    assert "magic" in str(decode_error(bytes(encoded)))


@pytest.mark.parametrize("version", [0, 3, 255])
def test_unknown_version(version):
    encoded = bytearray(make_payload().encode("msgpack"))
    encoded[3] = version
    error = decode_error(bytes(encoded))
    assert error.code == "payload_version"
    assert str(version) in str(error)


def test_unknown_codec_id():
    encoded = bytearray(make_payload().encode("msgpack"))
    encoded[4] = ord("j")
    error = decode_error(bytes(encoded))
    assert "codec" in str(error)


def test_truncated_inside_header():
    encoded = make_payload().encode("msgpack")
    error = decode_error(encoded[:15])
    assert error.code == "payload_invalid"
    assert "out of range" in str(error)


def test_truncated_inside_data_is_a_size_mismatch():
    encoded = make_payload().encode("msgpack")
    error = decode_error(encoded[:-10])
    assert error.code == "size_mismatch"


def test_header_length_over_maximum():
    data = b"x" * 10
    header = msgpack.packb(header_for(data))
    error = decode_error(frame(header, data, header_len=MAX_HEADER_BYTES + 1))
    assert "out of range" in str(error)


def test_header_length_longer_than_frame():
    data = b"x" * 10
    header = msgpack.packb(header_for(data))
    error = decode_error(frame(header, data, header_len=len(header) + len(data) + 1))
    assert "out of range" in str(error)


def test_header_not_msgpack():
    error = decode_error(frame(b"\xc1\xc1\xc1", b""))
    assert error.code == "payload_invalid"
    assert "msgpack" in str(error)


def test_header_not_a_map():
    error = decode_error(frame(msgpack.packb([1, 2, 3]), b""))
    assert "keys" in str(error)


def test_header_with_extra_key():
    data = b"x"
    error = decode_error(msgpack_frame(data, header_for(data, evil="yes")))
    assert "keys" in str(error)


def test_header_with_missing_key():
    data = b"x"
    header = header_for(data)
    del header["sha256"]
    error = decode_error(msgpack_frame(data, header))
    assert "keys" in str(error)


@pytest.mark.parametrize("size", [3, 5, "4", None, True, 4.0])
def test_size_mismatch(size):
    data = b"four"
    error = decode_error(msgpack_frame(data, header_for(data, size=size)))
    assert error.code == "size_mismatch"


def test_size_over_limit(settings):
    data = b"x" * 100
    encoded = msgpack_frame(data)
    error = decode_error(encoded, max_bytes=99)
    assert error.code == "too_large"
    settings.ASYNC_IMAGE_SAVE_MAX_UPLOAD_BYTES = 50
    error = decode_error(encoded)
    assert error.code == "too_large"
    assert "ASYNC_IMAGE_SAVE_MAX_UPLOAD_BYTES" in str(error)
    assert decode(encoded, max_bytes=100).size == 100


@pytest.mark.parametrize("name", [b"photo.jpg", 123, None, ["a"]])
def test_non_str_name(name):
    data = b"x"
    error = decode_error(msgpack_frame(data, header_for(data, name=name)))
    assert "name" in str(error)


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("sha256", "abc", "sha256"),
        ("sha256", 12, "sha256"),
        ("content_type", 5, "content_type"),
        ("charset", b"utf-8", "charset"),
        ("extra", [1], "content_type_extra"),
        ("extra", {1: "a"}, "content_type_extra"),
    ],
)
def test_other_bad_header_values(key, value, fragment):
    data = b"x"
    header = header_for(data, **{key: value})
    packed = msgpack.packb(header, use_bin_type=True, strict_types=False)
    if key == "extra" and isinstance(value, dict):
        # strict_map_key refuses int keys in msgpack; check the pickle path too.
        with override_settings(ASYNC_IMAGE_SAVE_ALLOW_PICKLE=True):
            error = decode_error(frame(pickle.dumps(header), data, codec=CODEC_PICKLE))
    else:
        error = decode_error(frame(packed, data))
    assert fragment in str(error)


def test_decoded_name_is_sanitized_again():
    data = b"x"
    decoded = decode(msgpack_frame(data, header_for(data, name="../../etc/passwd")))
    assert decoded.name == "passwd"


# ---------------------------------------------------------------------------
# verify
# ---------------------------------------------------------------------------


def test_verify_accepts_intact_payload():
    payload = make_payload()
    assert payload.verify(sha(bytes(payload.data))) is None


def test_signed_frame_verifies_without_the_jobs_sha256():
    job_id = uuid.uuid4().hex
    decoded = decode(make_payload().encode("msgpack", signed_for=job_id))
    assert decoded.signature is not None
    assert decoded.verify(None, job_id=job_id) is None


@pytest.mark.parametrize("case", ["unsigned", "other-job", "no-job-id"], ids=str)
def test_verify_without_the_jobs_sha256_needs_a_signature_for_this_job(case):
    job_id = uuid.uuid4().hex
    signed_for = None if case == "unsigned" else job_id
    decoded = decode(make_payload().encode("msgpack", signed_for=signed_for))
    checked_id = {"other-job": uuid.uuid4().hex, "no-job-id": None}.get(case, job_id)
    with pytest.raises(ChecksumMismatch, match="SECRET_KEY") as info:
        decoded.verify(None, job_id=checked_id)
    assert info.value.code == "bad_signature"


def test_signature_made_with_a_fallback_key_is_accepted(settings):
    job_id = uuid.uuid4().hex
    settings.SECRET_KEY = "the-key-before-rotation"
    decoded = decode(make_payload().encode("msgpack", signed_for=job_id))
    settings.SECRET_KEY = "the-key-after-rotation"
    with pytest.raises(ChecksumMismatch, match="SECRET_KEY_FALLBACKS"):
        decoded.verify(None, job_id=job_id)
    settings.SECRET_KEY_FALLBACKS = ["the-key-before-rotation"]
    assert decoded.verify(None, job_id=job_id) is None


def test_the_jobs_sha256_is_enough_without_a_signature():
    payload = make_payload()
    decode(payload.encode("msgpack")).verify(payload.sha256, job_id=uuid.uuid4().hex)


def test_signing_needs_the_hash():
    payload = UploadPayload.from_upload(SimpleUploadedFile("a.jpg", b"abc"), hashed=False)
    with pytest.raises(ValueError, match="with_sha256"):
        payload.encode("msgpack", signed_for=uuid.uuid4().hex)


def test_from_upload_unhashed_then_hashed_later():
    upload = SimpleUploadedFile("a.jpg", b"bytes hashed later", "image/jpeg")
    payload = UploadPayload.from_upload(upload, hashed=False)
    assert payload.sha256 is None
    assert bytes(payload.data) == b"bytes hashed later"
    hashed = payload.with_sha256()
    assert hashed.sha256 == sha(b"bytes hashed later")
    assert hashed.with_sha256() is hashed


@pytest.mark.parametrize("codec", ["msgpack", "pickle"])
@pytest.mark.parametrize("name", ["a.jpg", "é" * 200 + ".jpg"])
def test_frame_size_is_the_signed_frames_length_before_hashing(codec, name):
    upload = SimpleUploadedFile(name, b"x" * 1000, "image/jpeg")
    upload.content_type_extra = {"boundary": "abc"}
    payload = UploadPayload.from_upload(upload, hashed=False)
    frame = payload.with_sha256().encode(codec, signed_for=uuid.uuid4().hex)
    assert payload.frame_size(codec) == len(frame)


def test_version_1_frame_still_decodes():
    """Frames queued before the signature (format version 2) was added."""
    data = b"queued before the upgrade"
    header = {"name": "a.jpg", "content_type": "image/jpeg", "charset": None,
              "size": len(data), "extra": None, "sha256": sha(data)}  # fmt: skip
    packed = msgpack.packb(header, use_bin_type=True)
    frame = MAGIC + bytes((1, CODEC_MSGPACK)) + len(packed).to_bytes(4, "big") + packed + data
    decoded = decode(frame)
    assert (bytes(decoded.data), decoded.signature) == (data, None)
    decoded.verify(sha(data), job_id=uuid.uuid4().hex)


def test_verify_flipped_byte():
    payload = make_payload()
    data = bytearray(payload.data)
    data[len(data) // 2] ^= 0x01
    damaged = dataclasses.replace(payload, data=bytes(data))
    with pytest.raises(ChecksumMismatch, match="payload header"):
        damaged.verify()


def test_verify_flipped_byte_in_frame():
    encoded = bytearray(make_payload().encode("msgpack"))
    encoded[-1] ^= 0xFF
    decoded = decode(bytes(encoded))
    with pytest.raises(ChecksumMismatch):
        decoded.verify()


def test_verify_wrong_expected_sha():
    payload = make_payload()
    with pytest.raises(ChecksumMismatch, match="job"):
        payload.verify("0" * 64)


def test_unhashed_payload_round_trips_with_no_sha256():
    """Frames staged before hashing (by earlier development snapshots) still decode."""
    upload = SimpleUploadedFile("a.jpg", b"bytes staged before hashing", "image/jpeg")
    payload = dataclasses.replace(UploadPayload.from_upload(upload), sha256=None)
    decoded = decode(payload.encode("msgpack"))
    assert decoded.sha256 is None
    assert bytes(decoded.data) == b"bytes staged before hashing"
    decoded.verify(sha(b"bytes staged before hashing"))  # checked against the job's
    with pytest.raises(ChecksumMismatch, match="job"):
        decoded.verify(sha(b"something else"))


def test_verify_refuses_a_payload_with_nothing_to_check_against():
    payload = dataclasses.replace(make_payload(), sha256=None)
    with pytest.raises(ChecksumMismatch, match="no sha256"):
        payload.verify()


# ---------------------------------------------------------------------------
# to_upload
# ---------------------------------------------------------------------------


def assert_upload_matches(upload, payload: UploadPayload) -> None:
    assert upload.read() == bytes(payload.data)
    assert upload.name == payload.name
    assert upload.size == payload.size
    assert upload.content_type == payload.content_type
    assert upload.charset == payload.charset
    assert upload.content_type_extra == payload.content_type_extra


@override_settings(FILE_UPLOAD_MAX_MEMORY_SIZE=100)
def test_to_upload_in_memory_at_limit():
    payload = make_payload(b"m" * 100, charset="utf-8", extra={"x": "y"})
    upload = payload.to_upload()
    assert isinstance(upload, InMemoryUploadedFile)
    assert_upload_matches(upload, payload)


def test_to_upload_temporary_above_limit(tmp_path):
    with override_settings(FILE_UPLOAD_MAX_MEMORY_SIZE=100, FILE_UPLOAD_TEMP_DIR=str(tmp_path)):
        payload = make_payload(b"t" * 101, charset="latin-1", extra={"x": "y"})
        upload = payload.to_upload()
    assert isinstance(upload, TemporaryUploadedFile)
    path = upload.temporary_file_path()
    assert os.path.exists(path)
    assert_upload_matches(upload, payload)
    upload.close()
    assert not os.path.exists(path)


def test_to_upload_from_decoded_frame(tmp_path):
    with override_settings(FILE_UPLOAD_MAX_MEMORY_SIZE=10, FILE_UPLOAD_TEMP_DIR=str(tmp_path)):
        payload = make_payload()
        upload = decode(payload.encode("msgpack")).to_upload()
    try:
        assert isinstance(upload, TemporaryUploadedFile)
        assert_upload_matches(upload, payload)
    finally:
        upload.close()


@pytest.mark.parametrize(
    "name", ["a." + "\u6f22" * 150, "\u6f22" * 300 + ".jpg", "\U0001f600" * 100 + ".png"]
)
def test_to_upload_long_multibyte_name(tmp_path, name):
    """Names are capped in UTF-8 bytes, so the temporary file name stays under NAME_MAX."""
    with override_settings(FILE_UPLOAD_MAX_MEMORY_SIZE=10, FILE_UPLOAD_TEMP_DIR=str(tmp_path)):
        payload = make_payload(b"x" * 100, name=name)
        upload = payload.to_upload()
    try:
        assert isinstance(upload, TemporaryUploadedFile)
        assert upload.read() == b"x" * 100
        assert len(payload.name.encode("utf-8")) <= MAX_NAME_LENGTH
    finally:
        upload.close()


# ---------------------------------------------------------------------------
# Properties and fixture files
# ---------------------------------------------------------------------------

optional_text = st.none() | st.text(max_size=60)


@hsettings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)
@given(
    data=st.binary(max_size=200_000),
    name=st.text(max_size=250),
    content_type=optional_text,
    charset=optional_text,
    extra=st.none() | st.dictionaries(st.text(max_size=20), st.text(max_size=20), max_size=4),
    codec=st.sampled_from(CODECS),
)
def test_round_trip_property(data, name, content_type, charset, extra, codec):
    upload = File(io.BytesIO(data), name=name)
    upload.content_type = content_type
    upload.charset = charset
    upload.content_type_extra = extra
    with override_settings(ASYNC_IMAGE_SAVE_ALLOW_PICKLE=True):
        payload = UploadPayload.from_upload(upload)
        job_id = uuid.uuid4().hex
        decoded = decode(payload.encode(codec, signed_for=job_id))
    assert payload.name == sanitize_name(name)
    assert decoded.name == payload.name  # decode() re-sanitizes: must be a no-op
    assert bytes(decoded.data) == data
    assert decoded.size == len(data)
    assert decoded.sha256 == sha(data)
    assert decoded.content_type == content_type
    assert decoded.charset == charset
    assert decoded.content_type_extra == (extra or None)
    decoded.verify(sha(data))
    decoded.verify(None, job_id=job_id)


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("path", sorted(FILES.iterdir()), ids=lambda p: p.name)
def test_fixture_files_round_trip(settings, path, codec):
    settings.ASYNC_IMAGE_SAVE_ALLOW_PICKLE = True
    data = path.read_bytes()
    with open(path, "rb") as fh:
        payload = UploadPayload.from_upload(File(fh))
    decoded = decode(payload.encode(codec))
    assert decoded.name == path.name
    assert bytes(decoded.data) == data
    assert decoded.sha256 == sha(data)
    decoded.verify(sha(data))


def test_content_file_round_trip():
    payload = UploadPayload.from_upload(ContentFile(b"hello", name="dir/hello.txt"))
    assert payload.name == "hello.txt"
    assert bytes(decode(payload.encode("msgpack")).data) == b"hello"
