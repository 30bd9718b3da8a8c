"""Packaging for async_image_save. All metadata lives here (no setup.cfg)."""

import re
from pathlib import Path

from setuptools import find_namespace_packages, setup

HERE = Path(__file__).resolve().parent


def read_version() -> str:
    """Read ``__version__`` from the package without importing it."""
    text = (HERE / "async_image_save" / "__init__.py").read_text(encoding="utf-8")
    match = re.search(r'^__version__ = "([^"]+)"', text, re.MULTILINE)
    if not match:
        raise RuntimeError("__version__ not found in async_image_save/__init__.py")
    return match.group(1)


TEST_REQUIRES = [
    "pytest>=8",
    "pytest-django>=4.8",
    "pytest-randomly>=3.15",
    "hypothesis>=6.100",
    "psycopg[binary]>=3.1",
    "redis>=5",
    "moto[server]>=5",
    "boto3>=1.34",
    "build>=1.2",
    "setuptools>=70",
    "wheel>=0.43",
    "twine>=5",
    "ruff>=0.6",
    "sphinx>=7",
    "tox>=4",
    "playwright>=1.40",  # drives Debian's chromium (scripts/test installs it)
    "pyvips>=2.2",
    "pyvips-binary>=8.15",
    "sorl-thumbnail>=12.10",
    "gcp-storage-emulator>=2024.8",
    "django-cleanup>=8",
    "djangorestframework>=3.14",
]

setup(
    name="async_image_save",
    version=read_version(),
    description=(
        "Take Django image uploads off the request path: save and thumbnail them in Celery workers."
    ),
    long_description=(HERE / "README.rst").read_text(encoding="utf-8"),
    long_description_content_type="text/x-rst",
    author="async_image_save developers",
    license="BSD-3-Clause",
    url="https://github.com/async-image-save/async_image_save",
    packages=find_namespace_packages(include=["async_image_save", "async_image_save.*"]),
    include_package_data=True,
    zip_safe=False,
    python_requires=">=3.10",
    install_requires=[
        "Django>=4.2",
        "celery>=5.4",
        "kombu>=5.4",
        "Pillow>=10.1",
        "msgpack>=1.0",
    ],
    extras_require={
        "redis": ["redis>=5"],
        "s3": ["django-storages[s3]>=1.14"],
        "vips": ["pyvips>=2.2"],
        "sorl": ["sorl-thumbnail>=12.10"],
        "drf": ["djangorestframework>=3.14"],
        "postgres": ["psycopg[binary]>=3.1"],
        "test": TEST_REQUIRES + ["django-storages[s3,google,azure]>=1.14"],
    },
    classifiers=[
        "Development Status :: 4 - Beta",
        "Environment :: Web Environment",
        "Framework :: Celery",
        "Framework :: Django",
        "Framework :: Django :: 4.2",
        "Framework :: Django :: 5.2",
        "Framework :: Django :: 6.0",
        "Intended Audience :: Developers",
        "Operating System :: OS Independent",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3 :: Only",
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
        "Topic :: Multimedia :: Graphics",
        "Typing :: Typed",
    ],
)
