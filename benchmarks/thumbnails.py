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
from runmeta import finish, run_meta  # noqa: E402
from thumbs.inputs import BY_NAME, INPUTS, ensure_inputs  # noqa: E402
from thumbs.worker import ENGINES  # noqa: E402

WORKER = HERE / "thumbs" / "worker.py"
OURS = "ours-pillow"  # the "x ours" column compares every engine with this one
OURS_VIPS = "ours-vips"
BASELINE = "pillow"
CASCADE = "pyvips-cascade"
# The targets, each shown on one row:
# row engine -> (slower engine, faster engine, least ratio of their times, what it means).
JPEG_TARGETS = {
    BASELINE: (BASELINE, OURS, 2.3, "ours >=2.3x faster"),
    "sorl": ("sorl", OURS, 4.5, "ours >=4.5x faster"),
    "easy": ("easy", OURS, 4.5, "ours >=4.5x faster"),
    "imagekit": ("imagekit", OURS, 4.5, "ours >=4.5x faster"),
    CASCADE: (CASCADE, OURS, 1 / 1.2, "ours within 1.2x"),
    OURS_VIPS: (CASCADE, OURS_VIPS, 1 / 1.05, "pyvips cascade / this: within 1.05x"),
}
OTHER_TARGETS = {  # PNG and WebP sources: no engine of ours slower than plain Pillow
    BASELINE: (BASELINE, OURS, 1.0, "ours not slower"),
    OURS_VIPS: (BASELINE, OURS_VIPS, 1.0, "plain Pillow / this: not slower"),
}
# Ours' (Pillow engine) memory for the work / plain Pillow's, JPEG sources: the peak
# RSS above each process's RSS after its imports. The whole-process peak is printed
# too, but the interpreter and Pillow alone are more than half of plain Pillow's
# peak at 0.3 MP, so no Python engine could meet the target on that measure.
MEMORY_TARGET = 0.5
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
    command = [sys.executable, str(WORKER), engine, str(source)]
    command += ["--runs", str(runs), "--warmup", str(warmup)]
    done = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ))
    if done.returncode != 0:
        raise SystemExit(f"{engine} on {source.name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def median(values):
    return statistics.median(values) if values else float("nan")


def summarise(records: list[dict], inputs: list[str], engines: list[str]) -> dict:
    """Per input and engine: pooled medians, ratios taken per round, targets met or not."""
    summary = {}
    for name in inputs:
        mine = [r for r in records if r["source"] == name]
        rounds = sorted({r["round"] for r in mine})
        wall_by_round = {(r["engine"], r["round"]): median(r["wall_ms"]) for r in mine}
        cpu_by_round = {(r["engine"], r["round"]): median(r["cpu_ms"]) for r in mine}

        def ratio(slower, faster, by_round=wall_by_round, rounds=rounds):
            """Median over rounds of (slower's median / faster's median in that round)."""
            pairs = [(by_round.get((slower, k)), by_round.get((faster, k))) for k in rounds]
            return median([a / b for a, b in pairs if a and b])

        rows = {}
        for engine in engines:
            recs = [r for r in mine if r["engine"] == engine]
            wall = [x for r in recs for x in r["wall_ms"]]
            cpu = [x for r in recs for x in r["cpu_ms"]]
            megapixels = BY_NAME[name].megapixels
            rows[engine] = {
                "ms": median(wall),
                "cpu_ms": median(cpu),
                "mp_per_s": megapixels / (median(wall) / 1e3),
                "mp_per_cpu_s": megapixels / (median(cpu) / 1e3),
                "vs_ours": ratio(engine, OURS),
                "vs_ours_cpu": ratio(engine, OURS, cpu_by_round),
                # Memory: the highest peak over this engine's processes.
                "rss_peak_mib": max(r["rss_peak_mib"] for r in recs),
                "rss_setup_mib": median([r["rss_setup_mib"] for r in recs]),
                "rss_work_mib": max(r["rss_peak_mib"] - r["rss_setup_mib"] for r in recs),
                "outputs": recs[-1]["outputs"],
                "n": len(wall),
            }
        targets = JPEG_TARGETS if BY_NAME[name].format == "JPEG" else OTHER_TARGETS
        for engine, (slower, faster, least, text) in targets.items():
            if {engine, slower, faster} <= set(engines):
                value = ratio(slower, faster)
                rows[engine]["target"] = {
                    "ratio": value,
                    "least": least,
                    "met": value >= least,
                    "text": text,
                    "per_round": [
                        wall_by_round[slower, k] / wall_by_round[faster, k] for k in rounds
                    ],
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
        for engine in engines:
            row = rows[engine]
            target = ""
            if "target" in row:
                t = row["target"]
                target = f"{t['ratio']:.3f} >={t['least']:.2f} {mark(t['met'])} ({t['text']})"
            print(
                f"{ENGINES[engine]:58} {row['ms']:7.1f} {row['mp_per_s']:6.1f} "
                f"{row['mp_per_cpu_s']:8.1f} {row['rss_peak_mib']:8.0f} "
                f"{row['rss_work_mib']:6.0f} {row['outputs'][0][2] / 1000:7.0f} "
                f"{row['vs_ours']:6.2f} {row['vs_ours_cpu']:5.2f}  {target}"
            )
        if spec.format == "JPEG":
            ours, base = rows[OURS], rows[BASELINE]
            total = ours["rss_peak_mib"] / base["rss_peak_mib"]
            work = ours["rss_work_mib"] / base["rss_work_mib"]
            print(
                f"memory the thumbnails take (peak RSS above post-import RSS), ours (Pillow "
                f"engine) / plain Pillow, target <={MEMORY_TARGET}: {work:.2f} "
                f"{mark(work <= MEMORY_TARGET)}; whole-process peak RSS {total:.2f} (imports "
                "included; not the target's measure, see docs/benchmarks.rst)"
            )
        sizes = {engine: [tuple(o[:2]) for o in rows[engine]["outputs"]] for engine in engines}
        odd = {e: s for e, s in sizes.items() if s != sizes[BASELINE]}
        if odd:
            print(f"note: output sizes differ from plain Pillow's {sizes[BASELINE]}: {odd}")
    print(
        "\nx ours = engine ms / ours (Pillow engine) ms in the same round, median over rounds "
        "(>1: ours is faster); (cpu): the same with process CPU time, less sensitive to other "
        "load on the machine. target: the ratio named in brackets, its threshold, PASS/MISS."
    )


def print_header(result: dict) -> None:
    env = result["environment"]
    elapsed = result.get("elapsed_s")
    print(
        f"Thumbnails 1600/800/200 px (fit, q85, format kept); {result['rounds']} round(s) x "
        f"{result['runs']} timed run(s) + {result['warmup']} warm-up per process; "
        f"Pillow {env['packages']['Pillow']}, libvips {env['packages']['pyvips-binary']}, "
        f"{env['cpu_count']} CPUs" + (f", {elapsed:.0f} s" if elapsed else "")
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
    parser.add_argument(
        "--no-raw", action="store_true", help="with --json: summary only, no per-run samples"
    )
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
        "--report", type=Path, metavar="JSON", help="only print the tables of a --json file"
    )
    parser.add_argument(
        "--input-dir",
        type=Path,
        help="keep the generated inputs here and reuse them (default: a temp dir)",
    )
    args = parser.parse_args(argv)
    if args.report:
        saved = json.loads(args.report.read_text())
        print_header(saved)
        print_tables(saved["summary"], list(next(iter(saved["summary"].values()))))
        return
    rounds = args.rounds or (1 if args.quick else 3)
    runs = args.runs or (2 if args.quick else 5)
    engines = [e for e in ENGINES if e in args.engines.split(",") or e in (OURS, BASELINE)]
    inputs = [n for n in BY_NAME if n in args.inputs.split(",")]

    meta = run_meta(PACKAGES)
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
            n: {
                "bytes": paths[n].stat().st_size,
                "megapixels": BY_NAME[n].megapixels,
                "label": BY_NAME[n].label,
                "width": BY_NAME[n].width,
                "height": BY_NAME[n].height,
                "format": BY_NAME[n].format,
            }
            for n in inputs
        }
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)

    summary = summarise(records, inputs, engines)
    result = {
        "rounds": rounds,
        "runs": runs,
        "warmup": args.warmup,
        "elapsed_s": time.time() - started,
        "environment": environment(),
        "meta": finish(meta),
        "quick": args.quick,
        "memory_target": MEMORY_TARGET,
        "inputs": input_facts,
        "summary": summary,
    }
    if not args.no_raw:
        result["raw"] = records
    print_header(result)
    print_tables(summary, engines)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
