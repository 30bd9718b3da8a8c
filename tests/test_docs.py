"""The reference docs stay true: every setting and every system check is documented."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from async_image_save import checks
from async_image_save.conf import conf

DOCS = Path(__file__).resolve().parent.parent / "docs"


def setting_names() -> set[str]:
    return {name for name in dir(type(conf)) if name.startswith("ASYNC_IMAGE_SAVE_")}


def test_every_setting_has_a_row_and_an_entry_in_the_settings_page():
    page = (DOCS / "settings.rst").read_text()
    names = setting_names()
    assert len(names) > 20
    missing_entry = {n for n in names if f".. attribute:: {n}\n" not in page}
    missing_row = {n for n in names if f"   * - :attr:`{n}`\n" not in page}
    assert missing_entry == set()
    assert missing_row == set()


def test_every_check_id_is_in_the_checks_page():
    page = (DOCS / "checks.rst").read_text()
    ids = set(re.findall(r"async_image_save\.[EW]\d{3}", inspect.getsource(checks)))
    assert len(ids) > 15
    assert {i for i in ids if f"``{i}``" not in page} == set()
