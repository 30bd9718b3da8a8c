"""One engine x one source image, in a fresh process; prints one JSON object.

    python benchmarks/thumbs/worker.py ENGINE SOURCE [--runs 5] [--warmup 1]

Started by ``benchmarks/thumbnails.py``, one process per (engine, input), so the
peak RSS is that pair's own and no engine inherits another's caches or heap.
One run = make the three thumbnails (long edge 1600, 800, 200, never upscaled)
of one source: JPEG q85 from JPEG, WebP q85 from WebP, PNG from PNG.

Peak memory: after imports and setup, the worker resets the kernel's peak-RSS
counter (``echo 5 > /proc/self/clear_refs``) and reads ``VmHWM`` from
``/proc/self/status`` after the last run, so the figure is the peak while making
thumbnails (imports included, since they stay resident), not a setup spike.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SIZES = (1600, 800, 200)
QUALITY = 85

ENGINES = {
    "pillow": "plain Pillow (open, load, copy + thumbnail() per size)",
    "sorl": "sorl-thumbnail get_thumbnail (PIL engine)",
    "easy": "easy-thumbnails get_thumbnailer().get_thumbnail",
    "imagekit": "django-imagekit ImageSpec(ResizeToFit).generate",
    "pyvips": "pyvips: Image.thumbnail(file) per size",
    "pyvips-cascade": "pyvips: thumbnail(file, 1600) + thumbnail_image cascade",
    "ours-pillow": "ours, Pillow engine (render_thumbnails)",
    "ours-vips": "ours, pyvips engine (vips.VipsEngine)",
}


def status_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def sniff(data: bytes) -> str:
    if data[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return "?"


def output_facts(data: bytes) -> list:
    """[width, height, bytes, format] of one encoded thumbnail (header read only)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return [im.width, im.height, len(data), sniff(data)]


def source_format(src: Path) -> str:
    from PIL import Image

    with Image.open(src) as im:
        return str(im.format)


def setup_django(apps: list[str], scratch: Path, **extra) -> Path:
    """Minimal settings for one thumbnail app: SQLite in the scratch dir, local media."""
    import django
    from django.conf import settings

    media = scratch / "media"
    (media / "src").mkdir(parents=True)
    settings.configure(
        SECRET_KEY="benchmark",
        USE_TZ=True,
        INSTALLED_APPS=["django.contrib.contenttypes", *apps],
        DATABASES={
            "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(scratch / "db.sqlite3")}
        },
        CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}},
        MEDIA_ROOT=str(media),
        MEDIA_URL="/media/",
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
        **extra,
    )
    django.setup()
    return media


def migrate() -> None:
    from django.core.management import call_command

    call_command("migrate", run_syncdb=True, verbosity=0)


def make_runner(engine: str, src: Path, scratch: Path):
    """Return ``(prepare(i) -> ctx, run(ctx) -> list of thumbnails as bytes or stored Paths)``.

    ``prepare`` is not timed (the Django packages get a fresh copy of the source
    under a new name each run, so no cache of theirs can answer).
    """
    fmt = source_format(src)  # JPEG, PNG or WEBP: the output format too
    pil_options = {"quality": QUALITY} if fmt in ("JPEG", "WEBP") else {}

    def same(i):
        return i

    if engine == "pillow":
        from PIL import Image

        def run(_):
            out = []
            with Image.open(src) as im:
                im.load()
                for size in SIZES:
                    thumb = im.copy()
                    thumb.thumbnail((size, size))
                    buf = io.BytesIO()
                    thumb.save(buf, fmt, **pil_options)
                    out.append(buf.getvalue())
            return out

        return same, run

    if engine.startswith("pyvips"):
        import pyvips

        pyvips.cache_set_max(0)  # no operation cache: every run recomputes
        # PNG with filter=all, like Pillow/zlib, so the output sizes are comparable.
        suffix = {"JPEG": f".jpg[Q={QUALITY}]", "WEBP": f".webp[Q={QUALITY}]"}.get(
            fmt, ".png[filter=all]"
        )
        cascade = engine == "pyvips-cascade"

        def run(_):
            out, current = [], None
            for size in SIZES:
                if not cascade:
                    current = pyvips.Image.thumbnail(str(src), size, height=size, size="down")
                elif current is None:  # decode once (shrink-on-load), keep it in memory
                    current = pyvips.Image.thumbnail(str(src), size, height=size, size="down")
                    current = current.copy_memory()
                else:  # each smaller size from the previous one
                    current = current.thumbnail_image(size, height=size, size="down")
                    current = current.copy_memory()
                out.append(current.write_to_buffer(suffix))
            return out

        return same, run

    if engine in ("sorl", "easy"):
        if engine == "sorl":
            media = setup_django(
                ["sorl.thumbnail"],
                scratch,
                THUMBNAIL_KVSTORE="sorl.thumbnail.kvstores.cached_db_kvstore.KVStore",
                THUMBNAIL_ENGINE="sorl.thumbnail.engines.pil_engine.Engine",
                THUMBNAIL_QUALITY=QUALITY,
                THUMBNAIL_UPSCALE=False,
                THUMBNAIL_PRESERVE_FORMAT=True,
            )
        else:
            media = setup_django(
                ["easy_thumbnails"],
                scratch,
                THUMBNAIL_PRESERVE_EXTENSIONS=True,
                THUMBNAIL_QUALITY=QUALITY,
            )
        migrate()

        def prepare(i):
            name = f"src/{i}_{src.name}"
            shutil.copyfile(src, media / name)
            return name

        if engine == "sorl":
            from sorl.thumbnail import get_thumbnail

            def make(name):
                return [get_thumbnail(name, f"{s}x{s}", quality=QUALITY).name for s in SIZES]
        else:
            from easy_thumbnails.files import get_thumbnailer

            def make(name):
                thumbnailer = get_thumbnailer(name)
                options = [{"size": (s, s), "quality": QUALITY} for s in SIZES]
                return [thumbnailer.get_thumbnail(o).name for o in options]

        def run(name):
            return [media / thumb for thumb in make(name)]  # stored by the package itself

        return prepare, run

    if engine == "imagekit":
        setup_django(["imagekit"], scratch)
        from imagekit import ImageSpec
        from pilkit.processors import ResizeToFit

        specs = [
            type(
                f"Thumb{size}",
                (ImageSpec,),
                {
                    "processors": [ResizeToFit(size, size, upscale=False)],
                    "format": fmt,
                    "options": pil_options,
                },
            )
            for size in SIZES
        ]

        def run(_):
            out = []
            for spec in specs:
                with open(src, "rb") as fh:
                    out.append(spec(source=fh).generate().read())
            return out

        return same, run

    if engine in ("ours-pillow", "ours-vips"):
        setup_django(["async_image_save"], scratch)
        from async_image_save.specs import ThumbnailSpec

        if engine == "ours-pillow":
            from async_image_save.imaging import render_thumbnails as render
        else:
            import pyvips

            from async_image_save.vips import VipsEngine

            pyvips.cache_set_max(0)  # as for the pyvips baselines
            render = VipsEngine().render
        specs = [
            ThumbnailSpec(f"s{size}", size, size, fit="fit", format=None, quality=QUALITY)
            for size in SIZES
        ]

        def run(_):
            with open(src, "rb") as fp:
                return [item.data for item in render(fp, specs)]

        return same, run

    raise SystemExit(f"unknown engine {engine!r}; known: {', '.join(ENGINES)}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("engine", choices=ENGINES)
    parser.add_argument("source", type=Path)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))  # async_image_save from this checkout
    scratch = Path(tempfile.mkdtemp(prefix=f"ais-thumbs-{args.engine}-"))
    try:
        prepare, run = make_runner(args.engine, args.source, scratch)
        rss_setup_kib = status_kib("VmRSS")
        peak_reset = reset_peak_rss()
        wall, cpu, outputs = [], [], []
        for i in range(args.warmup + args.runs):
            ctx = prepare(i)
            c0, t0 = time.process_time(), time.perf_counter()
            result = run(ctx)
            t1, c1 = time.perf_counter(), time.process_time()
            if i >= args.warmup:
                wall.append((t1 - t0) * 1e3)
                cpu.append((c1 - c0) * 1e3)
            if i == 0:
                outputs = [
                    output_facts(r if isinstance(r, bytes) else r.read_bytes()) for r in result
                ]
        record = {
            "engine": args.engine,
            "source": args.source.name,
            "wall_ms": wall,
            "cpu_ms": cpu,
            "rss_setup_mib": rss_setup_kib / 1024,
            "rss_peak_mib": status_kib("VmHWM") / 1024,
            "peak_reset": peak_reset,
            "outputs": outputs,
            "pid": os.getpid(),
        }
        print(json.dumps(record))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
