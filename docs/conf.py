"""Sphinx configuration for the async_image_save documentation."""

import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Read the version without importing the package: autodoc imports it only
# after Django is set up below.
_init = (ROOT / "async_image_save" / "__init__.py").read_text(encoding="utf-8")
_match = re.search(r'^__version__ = "([^"]+)"', _init, re.MULTILINE)
if _match is None:
    raise RuntimeError("__version__ not found in async_image_save/__init__.py")
release = _match.group(1)
version = ".".join(release.split(".")[:2])

# autodoc imports models, so the app registry must be ready. The test settings
# name PostgreSQL, but nothing here opens a database connection.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
import django  # noqa: E402

django.setup()

project = "async_image_save"
author = "async_image_save developers"
copyright = "async_image_save developers"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.intersphinx",
]

# No inventories are fetched: the build must work without network access.
intersphinx_mapping: dict[str, tuple[str, str | None]] = {}

autodoc_member_order = "bysource"
autodoc_typehints = "signature"

primary_domain = "py"
default_role = "literal"
exclude_patterns = ["_build"]
templates_path: list[str] = []

html_theme = "alabaster"
html_static_path: list[str] = []
html_title = f"async_image_save {release}"
