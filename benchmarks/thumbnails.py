"""Thumbnail engines side by side on the same inputs (a benchmark, not a test).

    .venv/bin/python benchmarks/thumbnails.py [--quick] [--json PATH]

Each (engine, input) runs in a fresh process (``benchmarks/thumbs/worker.py``):
warm-up, then timed runs. Rounds repeat every pair with the engine order
rotated; ratios are taken within a round, then the median over rounds is shown.
Targets are printed as PASS/MISS, never asserted. See benchmarks/README.rst.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from thumbs.inputs import BY_NAME, INPUTS, ensure_inputs  # noqa: E402
from thumbs.worker import ENGINES  # noqa: E402

WORKER = HERE / "thumbs" / "worker.py"
OURS = "ours-pillow"
BASELINE = "pillow"
JPEG_TARGETS = {  # engine -> least (engine ms / ours ms) that meets the target
    "pillow": (2.3, "ours >=2.3x faster"),
    "sorl": (4.5, "ours >=4.5x faster"),
    "easy": (4.5, "ours >=4.5x faster"),
    "imagekit": (4.5, "ours >=4.5x faster"),
    "pyvips-cascade": (1 / 1.2, "ours within 1.2x"),
}
OTHER_TARGETS = {"pillow": (1.0, "ours not slower")}  # PNG and WebP sources
MEMORY_TARGET = 0.5  # ours' peak RSS / plain Pillow's, JPEG sources
PACKAGES = (
    "Pillow",
    "pyvips",
    "pyvips-binary",
    "sorl-thumbnail",
    "easy-thumbnails",
    "django-imagekit",
    "pilkit",
    "Django",
    "celery",
)


def run_worker(engine: str, source: Path, runs: int, warmup: int) -> dict:
    command = [
        sys.executable,
        str(WORKER),
        engine,
        str(source),
        "--runs",
        str(runs),
        "--warmup",
        str(warmup),
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ))
    if done.returncode != 0:
        raise SystemExit(f"{engine} on {source.name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def median(values):
    return statistics.median(values) if values else float("nan")


def summarise(records: list[dict], inputs: list[str], engines: list[str]) -> dict:
    """Per input and engine: pooled medians, and per-round ratios to ours and to plain Pillow."""
    summary = {}
    for name in inputs:
        mine = [r for r in records if r["source"] == name]
        round_ms = {(r["engine"], r["round"]): median(r["wall_ms"]) for r in mine}
        round_cpu = {(r["engine"], r["round"]): median(r["cpu_ms"]) for r in mine}
        rounds = sorted({r["round"] for r in mine})
        rows = {}
        for engine in engines:
            recs = [r for r in mine if r["engine"] == engine]
            wall = [x for r in recs for x in r["wall_ms"]]
            cpu = [x for r in recs for x in r["cpu_ms"]]
            per_round = [
                round_ms[engine, k] / round_ms[OURS, k] for k in rounds if (OURS, k) in round_ms
            ]
            per_round_cpu = [
                round_cpu[engine, k] / round_cpu[OURS, k] for k in rounds if (OURS, k) in round_cpu
            ]
            rows[engine] = {
                "ms": median(wall),
                "cpu_ms": median(cpu),
                "mp_per_s": BY_NAME[name].megapixels / (median(wall) / 1e3),
                "mp_per_cpu_s": BY_NAME[name].megapixels / (median(cpu) / 1e3),
                "vs_ours_per_round": per_round,
                "vs_ours": median(per_round),
                "vs_ours_cpu": median(per_round_cpu),
                # Memory: the highest peak over this engine's processes.
                "rss_peak_mib": max(r["rss_peak_mib"] for r in recs),
                "rss_setup_mib": median([r["rss_setup_mib"] for r in recs]),
                "rss_work_mib": max(r["rss_peak_mib"] - r["rss_setup_mib"] for r in recs),
                "outputs": recs[-1]["outputs"],
                "n": len(wall),
            }
        summary[name] = rows
    return summary


def mark(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def print_tables(summary: dict, engines: list[str]) -> None:
    head = (
        f"{'engine':58} {'ms/src':>7} {'MP/s':>6} {'MP/cpu-s':>8} {'peak MiB':>8} "
        f"{'(work)':>6} {'1600 KB':>7} {'x ours':>6} {'(cpu)':>5}  target"
    )
    for name, rows in summary.items():
        spec = BY_NAME[name]
        print(
            f"\n{spec.label}: {name} {spec.width}x{spec.height}, {spec.megapixels:.2f} MP "
            f"({rows[engines[0]]['n']} samples per engine)"
        )
        print(head)
        print("-" * len(head))
        targets = JPEG_TARGETS if spec.format == "JPEG" else OTHER_TARGETS
        for engine in engines:
            row = rows[engine]
            target = ""
            if engine in targets and OURS in rows:
                least, text = targets[engine]
                target = f">={least:.2f} {mark(row['vs_ours'] >= least)} ({text})"
            first = row["outputs"][0]
            print(
                f"{ENGINES[engine]:58} {row['ms']:7.1f} {row['mp_per_s']:6.1f} "
                f"{row['mp_per_cpu_s']:8.1f} {row['rss_peak_mib']:8.0f} "
                f"{row['rss_work_mib']:6.0f} {first[2] / 1000:7.0f} {row['vs_ours']:6.2f} "
                f"{row['vs_ours_cpu']:5.2f}  "
                f"{target}"
            )
        if spec.format == "JPEG" and OURS in rows and BASELINE in rows:
            ours, base = rows[OURS], rows[BASELINE]
            total = ours["rss_peak_mib"] / base["rss_peak_mib"]
            work = ours["rss_work_mib"] / base["rss_work_mib"]
            print(
                f"memory, ours / plain Pillow (target <={MEMORY_TARGET}): peak RSS {total:.2f} "
                f"{mark(total <= MEMORY_TARGET)}; above post-import RSS {work:.2f} "
                f"{mark(work <= MEMORY_TARGET)}"
            )
        sizes = {engine: [tuple(o[:2]) for o in rows[engine]["outputs"]] for engine in engines}
        odd = {e: s for e, s in sizes.items() if s != sizes[engines[0]]}
        if odd:
            print(f"note: output sizes differ from {engines[0]} {sizes[engines[0]]}: {odd}")
    print(
        "\nx ours = engine ms / ours ms, per round, median over rounds (>1: ours is faster); "
        "(cpu): the same with process CPU time, less sensitive to other load on the machine."
    )


def environment() -> dict:
    def pkg(name):
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    from PIL import features

    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "kernel": platform.release(),
        "packages": {name: pkg(name) for name in PACKAGES},
        "libjpeg_turbo": features.version("libjpeg_turbo"),
        "libwebp": features.version("webp"),
        "zlib": features.version("zlib"),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="1 round of 2 timed runs (default: 3 rounds of 5)"
    )
    parser.add_argument("--json", type=Path, help="also write summary and raw samples here")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--runs", type=int, help="timed runs per process")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per process")
    parser.add_argument(
        "--engines",
        default=",".join(ENGINES),
        help=f"comma-separated subset of {','.join(ENGINES)}",
    )
    parser.add_argument(
        "--inputs",
        default=",".join(s.name for s in INPUTS),
        help="comma-separated subset of the input names",
    )
    parser.add_argument(
        "--input-dir",
        type=Path,
        help="keep the generated inputs here and reuse them (default: a temp dir)",
    )
    args = parser.parse_args(argv)
    rounds = args.rounds or (1 if args.quick else 3)
    runs = args.runs or (2 if args.quick else 5)
    engines = [e for e in ENGINES if e in args.engines.split(",") or e in (OURS, BASELINE)]
    inputs = [n for n in BY_NAME if n in args.inputs.split(",")]

    scratch = None
    if args.input_dir is None:
        scratch = Path(tempfile.mkdtemp(prefix="ais-thumbs-inputs-"))
    started = time.time()
    try:
        print(f"generating inputs in {args.input_dir or scratch} ...", file=sys.stderr)
        paths = ensure_inputs(args.input_dir or scratch, inputs)
        records = []
        for k in range(rounds):
            order = engines[k % len(engines) :] + engines[: k % len(engines)]
            for name in inputs:
                for engine in order:
                    record = run_worker(engine, paths[name], runs, args.warmup)
                    record["round"] = k
                    records.append(record)
                    print(
                        f"round {k} {name:17} {engine:15} {median(record['wall_ms']):8.1f} ms"
                        f"  peak {record['rss_peak_mib']:4.0f} MiB",
                        file=sys.stderr,
                    )
        input_facts = {
            n: {"bytes": paths[n].stat().st_size, "megapixels": BY_NAME[n].megapixels}
            for n in inputs
        }
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)

    summary = summarise(records, inputs, engines)
    env = environment()
    print(
        f"Thumbnails 1600/800/200 px (fit, q85, format kept); {rounds} round(s) x {runs} timed "
        f"run(s) + {args.warmup} warm-up per process; Pillow {env['packages']['Pillow']}, "
        f"libvips {env['packages']['pyvips-binary']}, {env['cpu_count']} CPUs, "
        f"{time.time() - started:.0f} s"
    )
    print_tables(summary, engines)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "rounds": rounds,
                    "runs": runs,
                    "warmup": args.warmup,
                    "environment": env,
                    "inputs": input_facts,
                    "summary": summary,
                    "raw": records,
                },
                indent=1,
            )
        )
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
