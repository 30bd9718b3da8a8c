"""Unit tests for async_image_save.checks: one test per check id."""

from __future__ import annotations

import pytest
from celery import current_app
from django.core import checks as django_checks

from async_image_save import checks


def ids(messages) -> list[str]:
    return [m.id for m in messages]


def only(messages, check_id: str):
    found = [m for m in messages if m.id == check_id]
    assert len(found) == 1, messages
    return found[0]


def ais_messages(messages):
    return [m for m in messages if (m.id or "").startswith("async_image_save.")]


def test_default_test_settings_have_no_errors_or_warnings():
    messages = ais_messages(django_checks.run_checks())
    assert messages == []


def test_each_check_function_is_clean_with_test_settings():
    for check in (
        checks.check_serializer,
        checks.check_limits,
        checks.check_staging,
        checks.check_celery,
        checks.check_thumbnail_specs,
    ):
        assert check() == [], check.__name__


def test_checks_are_registered():
    registered = django_checks.registry.registry.get_checks()
    for check in (
        checks.check_serializer,
        checks.check_limits,
        checks.check_staging,
        checks.check_celery,
        checks.check_thumbnail_specs,
    ):
        assert check in registered


def test_e001_unknown_serializer(settings):
    settings.ASYNC_IMAGE_SAVE_SERIALIZER = "json"
    message = only(checks.check_serializer(), "async_image_save.E001")
    assert message.level == django_checks.ERROR
    assert "ASYNC_IMAGE_SAVE_SERIALIZER" in message.msg
    assert "'json'" in message.msg
    # also reported by run_checks
    assert "async_image_save.E001" in ids(django_checks.run_checks())


def test_e002_pickle_without_opt_in(settings):
    settings.ASYNC_IMAGE_SAVE_SERIALIZER = "pickle"
    settings.ASYNC_IMAGE_SAVE_ALLOW_PICKLE = False
    messages = checks.check_serializer()
    assert ids(messages) == ["async_image_save.E002"]
    assert "ASYNC_IMAGE_SAVE_SERIALIZER" in messages[0].msg
    assert "ASYNC_IMAGE_SAVE_ALLOW_PICKLE" in messages[0].msg


def test_w001_pickle_allowed(settings):
    settings.ASYNC_IMAGE_SAVE_SERIALIZER = "pickle"
    settings.ASYNC_IMAGE_SAVE_ALLOW_PICKLE = True
    messages = checks.check_serializer()
    assert ids(messages) == ["async_image_save.W001"]
    assert messages[0].level == django_checks.WARNING
    assert "ASYNC_IMAGE_SAVE_ALLOW_PICKLE" in messages[0].msg


@pytest.mark.parametrize("value", [0, -1, "50MB", 1.5, True, None])
def test_e003_max_upload_bytes(settings, value):
    settings.ASYNC_IMAGE_SAVE_MAX_UPLOAD_BYTES = value
    message = only(checks.check_limits(), "async_image_save.E003")
    assert "ASYNC_IMAGE_SAVE_MAX_UPLOAD_BYTES" in message.msg
    assert repr(value) in message.msg


@pytest.mark.parametrize("value", [-1, "16k", 2.0, False])
def test_e004_inline_max_bytes(settings, value):
    settings.ASYNC_IMAGE_SAVE_INLINE_MAX_BYTES = value
    message = only(checks.check_limits(), "async_image_save.E004")
    assert "ASYNC_IMAGE_SAVE_INLINE_MAX_BYTES" in message.msg


@pytest.mark.parametrize("value", [None, 0])
def test_e004_inline_max_bytes_accepts_none_and_zero(settings, value):
    settings.ASYNC_IMAGE_SAVE_INLINE_MAX_BYTES = value
    assert checks.check_limits() == []


@pytest.mark.parametrize("value", [59, 0, "1d", None])
def test_e005_staging_ttl(settings, value):
    settings.ASYNC_IMAGE_SAVE_STAGING_TTL = value
    message = only(checks.check_limits(), "async_image_save.E005")
    assert "ASYNC_IMAGE_SAVE_STAGING_TTL" in message.msg
    assert "60" in message.msg


def test_e005_staging_ttl_minimum_is_accepted(settings):
    settings.ASYNC_IMAGE_SAVE_STAGING_TTL = 60
    assert checks.check_limits() == []


@pytest.mark.parametrize("value", [-1, "5", 2.5])
def test_e006_max_retries(settings, value):
    settings.ASYNC_IMAGE_SAVE_MAX_RETRIES = value
    message = only(checks.check_limits(), "async_image_save.E006")
    assert "ASYNC_IMAGE_SAVE_MAX_RETRIES" in message.msg


@pytest.mark.parametrize("value", [-1, "2", 1.0, None])
def test_e012_publish_max_retries(settings, value):
    settings.ASYNC_IMAGE_SAVE_PUBLISH_MAX_RETRIES = value
    message = only(checks.check_limits(), "async_image_save.E012")
    assert "ASYNC_IMAGE_SAVE_PUBLISH_MAX_RETRIES" in message.msg


@pytest.mark.parametrize(
    "name", ["ASYNC_IMAGE_SAVE_RETRY_BACKOFF", "ASYNC_IMAGE_SAVE_RETRY_BACKOFF_MAX"]
)
@pytest.mark.parametrize("value", [-0.5, "2s", None, True])
def test_e013_retry_backoff(settings, name, value):
    setattr(settings, name, value)
    message = only(checks.check_limits(), "async_image_save.E013")
    assert name in message.msg
    assert repr(value) in message.msg


@pytest.mark.parametrize("value", [0, 0.5, 10])
def test_e013_retry_backoff_accepts_numbers(settings, value):
    settings.ASYNC_IMAGE_SAVE_RETRY_BACKOFF = value
    settings.ASYNC_IMAGE_SAVE_RETRY_BACKOFF_MAX = value
    assert checks.check_limits() == []


def test_e003_to_e006_reported_together(settings):
    settings.ASYNC_IMAGE_SAVE_MAX_UPLOAD_BYTES = 0
    settings.ASYNC_IMAGE_SAVE_INLINE_MAX_BYTES = -5
    settings.ASYNC_IMAGE_SAVE_STAGING_TTL = 1
    settings.ASYNC_IMAGE_SAVE_MAX_RETRIES = -1
    assert ids(checks.check_limits()) == [
        "async_image_save.E003",
        "async_image_save.E004",
        "async_image_save.E005",
        "async_image_save.E006",
    ]


@pytest.mark.parametrize(
    ("name", "value", "check_id"),
    [
        ("ASYNC_IMAGE_SAVE_MAX_ATTEMPTS", 0, "async_image_save.E015"),
        ("ASYNC_IMAGE_SAVE_MAX_ATTEMPTS", "3", "async_image_save.E015"),
        ("ASYNC_IMAGE_SAVE_LEASE_SECONDS", 5, "async_image_save.E016"),
        ("ASYNC_IMAGE_SAVE_LEASE_SECONDS", None, "async_image_save.E016"),
    ],
)
def test_e015_e016_attempts_and_lease(settings, name, value, check_id):
    setattr(settings, name, value)
    message = only(checks.check_limits(), check_id)
    assert name in message.msg


def test_e017_cache_alias_must_exist(settings):
    settings.ASYNC_IMAGE_SAVE_CACHE = "nope"
    message = only(checks.check_cache(), "async_image_save.E017")
    assert "'nope'" in message.msg
    settings.ASYNC_IMAGE_SAVE_CACHE = "default"
    assert checks.check_cache() == []


def test_e014_engine_without_its_package(settings, monkeypatch):
    import builtins

    from async_image_save.engines import _load

    real_import = builtins.__import__

    def no_pyvips(name, *args, **kwargs):
        if name == "pyvips":
            raise ImportError("No module named 'pyvips'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pyvips)
    settings.ASYNC_IMAGE_SAVE_ENGINE = "vips"
    _load.cache_clear()
    try:
        message = only(checks.check_engine(), "async_image_save.E014")
    finally:
        _load.cache_clear()
    assert "vips" in message.msg


def test_e007_unknown_staging_backend(settings):
    settings.ASYNC_IMAGE_SAVE_STAGING = "s3"
    message = only(checks.check_staging(), "async_image_save.E007")
    assert "ASYNC_IMAGE_SAVE_STAGING" in message.msg
    assert "'s3'" in message.msg


def test_e007_redis_staging_without_redis_url(settings, monkeypatch):
    settings.ASYNC_IMAGE_SAVE_STAGING = "redis"
    settings.ASYNC_IMAGE_SAVE_STAGING_URL = None
    monkeypatch.setitem(current_app.conf, "broker_url", "amqp://guest@localhost//")
    message = only(checks.check_staging(), "async_image_save.E007")
    assert "ASYNC_IMAGE_SAVE_STAGING_URL" in message.msg


def test_e008_celery_refuses_msgpack(monkeypatch):
    monkeypatch.setitem(current_app.conf, "accept_content", ["json"])
    message = only(checks.check_celery(), "async_image_save.E008")
    assert "msgpack" in message.msg
    assert "['json']" in message.msg
    assert "CELERY_ACCEPT_CONTENT" in message.hint


def test_e008_accepts_msgpack_mime_type(monkeypatch):
    monkeypatch.setitem(current_app.conf, "accept_content", ["application/x-msgpack"])
    assert checks.check_celery() == []


@pytest.mark.parametrize(
    "options",
    [
        {"size": (0, 10)},
        {"size": (10,)},
        {"size": (10, 10), "fit": "stretch"},
        {"size": (10, 10), "bogus": 1},
        {"size": (10, 10), "quality": 0},
        {"size": (10, 10), "format": "tiff"},
        {"size": (10, 10), "background": "nope"},
        "not a dict",
    ],
)
def test_e009_malformed_default_spec(settings, options):
    settings.ASYNC_IMAGE_SAVE_DEFAULT_THUMBNAILS = {"bad": options}
    message = only(checks.check_thumbnail_specs(), "async_image_save.E009")
    assert "ASYNC_IMAGE_SAVE_DEFAULT_THUMBNAILS" in message.msg
    assert "'bad'" in message.msg


def test_e009_malformed_per_field_spec(settings):
    settings.ASYNC_IMAGE_SAVE_THUMBNAILS = {"tests.Photo.image": {"small": {"size": "big"}}}
    message = only(checks.check_thumbnail_specs(), "async_image_save.E009")
    assert "ASYNC_IMAGE_SAVE_THUMBNAILS['tests.Photo.image']" in message.msg
    assert "'small'" in message.msg


def test_e009_per_field_group_not_a_dict(settings):
    settings.ASYNC_IMAGE_SAVE_THUMBNAILS = {"tests.Photo.image": ["small"]}
    message = only(checks.check_thumbnail_specs(), "async_image_save.E009")
    assert "ASYNC_IMAGE_SAVE_THUMBNAILS['tests.Photo.image']" in message.msg


def test_e009_thumbnails_setting_not_a_dict(settings):
    settings.ASYNC_IMAGE_SAVE_THUMBNAILS = ["small"]
    message = only(checks.check_thumbnail_specs(), "async_image_save.E009")
    assert "ASYNC_IMAGE_SAVE_THUMBNAILS" in message.msg


def test_e009_empty_per_field_group_is_valid(settings):
    settings.ASYNC_IMAGE_SAVE_THUMBNAILS = {"tests.Photo.image": {}}
    assert checks.check_thumbnail_specs() == []


@pytest.mark.parametrize("fmt", ["webp", "avif"])
def test_e010_format_not_supported_by_pillow(settings, monkeypatch, fmt):
    from PIL import features

    real_check = features.check
    monkeypatch.setattr(features, "check", lambda name: False if name == fmt else real_check(name))
    settings.ASYNC_IMAGE_SAVE_DEFAULT_THUMBNAILS = {"modern": {"size": (10, 10), "format": fmt}}
    message = only(checks.check_thumbnail_specs(), "async_image_save.E010")
    assert "ASYNC_IMAGE_SAVE_DEFAULT_THUMBNAILS" in message.msg
    assert fmt.upper() in message.msg
    assert "'modern'" in message.msg


def test_e010_not_reported_when_pillow_supports_format(settings, monkeypatch):
    from PIL import features

    monkeypatch.setattr(features, "check", lambda name: True)
    settings.ASYNC_IMAGE_SAVE_DEFAULT_THUMBNAILS = {"modern": {"size": (10, 10), "format": "webp"}}
    assert checks.check_thumbnail_specs() == []


@pytest.mark.parametrize("name", checks.FLAG_SETTINGS)
@pytest.mark.parametrize("value", ["False", "0", 1, "yes"])
def test_e019_a_switch_must_be_true_or_false(settings, name, value):
    setattr(settings, name, value)
    message = only(checks.check_flags(), "async_image_save.E019")
    assert name in message.msg and repr(value) in message.msg
    assert "counts as true" in message.hint


@pytest.mark.parametrize("value", [True, False])
def test_e019_accepts_true_and_false(settings, value):
    for name in checks.FLAG_SETTINGS:
        setattr(settings, name, value)
    assert checks.check_flags() == []


def test_allow_pickle_is_on_only_when_it_is_true(settings):
    from async_image_save.conf import conf

    for value in ("True", "False", 1, "yes"):
        settings.ASYNC_IMAGE_SAVE_ALLOW_PICKLE = value
        assert conf.ASYNC_IMAGE_SAVE_ALLOW_PICKLE is False, value
    settings.ASYNC_IMAGE_SAVE_ALLOW_PICKLE = True
    assert conf.ASYNC_IMAGE_SAVE_ALLOW_PICKLE is True


def test_a_worker_start_logs_errors_and_warnings(settings, caplog):
    settings.ASYNC_IMAGE_SAVE_DURABLE = "False"  # E019
    settings.ASYNC_IMAGE_SAVE_ALLOW_PICKLE = True  # W001
    with caplog.at_level("WARNING", logger="async_image_save"):
        checks.report_at_worker_start(sender=None)
    logged = {
        (r.levelname, check_id)
        for r in caplog.records
        for check_id in ("E019", "W001")
        if f"async_image_save.{check_id}" in r.getMessage()
    }
    assert logged == {("ERROR", "E019"), ("WARNING", "W001")}, caplog.text


def test_the_checks_run_under_their_tag(settings):
    settings.ASYNC_IMAGE_SAVE_SYNC_THUMBNAILS = "yes"
    ids = {m.id for m in django_checks.run_checks(tags=[checks.TAG])}
    assert "async_image_save.E019" in ids


def test_e019_covers_every_switch_setting():
    assert checks.FLAG_SETTINGS == (
        "ASYNC_IMAGE_SAVE_ALLOW_PICKLE",
        "ASYNC_IMAGE_SAVE_PUBLISH_IN_BACKGROUND",
        "ASYNC_IMAGE_SAVE_DURABLE",
        "ASYNC_IMAGE_SAVE_GENERATE_MISSING",
        "ASYNC_IMAGE_SAVE_SYNC_THUMBNAILS",
    )
