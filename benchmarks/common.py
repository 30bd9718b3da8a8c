"""What the request-side benchmarks share: the throwaway PostgreSQL database and test JPEGs.

The ``AIS_PG_*`` variables name the server, with the same defaults as ``scripts/test``.
"""

from __future__ import annotations

import io
import os


def pg_params() -> dict[str, str]:
    """Django's DATABASES entry keys (HOST, PORT, USER, PASSWORD) for the benchmark server."""
    return {
        "HOST": os.environ.get("AIS_PG_HOST", "127.0.0.1"),
        "PORT": os.environ.get("AIS_PG_PORT", "5432"),
        "USER": os.environ.get("AIS_PG_USER", os.environ.get("USER", "postgres")),
        "PASSWORD": os.environ.get("AIS_PG_PASSWORD", ""),
    }


def pg_admin(sql: str) -> None:
    """Run one statement on the server's ``postgres`` database, outside a transaction."""
    import psycopg

    params = {key.lower(): value for key, value in pg_params().items()}
    with psycopg.connect(dbname="postgres", autocommit=True, **params) as conn:
        conn.execute(sql)


def jpeg_of_size(target: int) -> bytes:
    """A real JPEG of roughly ``target`` bytes: random noise, calibrated by one re-encode."""
    from PIL import Image

    def encode(pixels: int) -> bytes:
        width = max(16, int((pixels * 4 / 3) ** 0.5))
        height = max(16, pixels // width)
        image = Image.frombytes("RGB", (width, height), os.urandom(width * height * 3))
        out = io.BytesIO()
        image.save(out, "JPEG", quality=85)
        return out.getvalue()

    guess = encode(int(target / 0.76))
    return encode(int(target / 0.76 * target / len(guess)))
