"""Benchmark: ``dcmpipe dcm2json`` and the dcm2json recipe against DCMTK's dcm2json.

Run on demand (this is not a pytest test)::

    python tests/benchmarks/bench_dcm2json.py                  # 2,000 files
    python tests/benchmarks/bench_dcm2json.py --files 10000 --jobs 2 --repeat 3

What it does:

1. Takes N classic MR files (Explicit VR Little Endian, ~10 KB each, made by
   ``dcmpipe.demo.generate`` exactly as ``bench_move.py`` makes them, and
   cached in the same place).
2. Times, on the same files (page cache warm):
   a. DCMTK ``dcm2json FILE OUT.json``, one process per file, as scripts run
      it (timed on a sample, extrapolated);
   b. ``dcmpipe run RECIPE -j JOBS`` (files -> fixed route -> export dcm2json)
      as a subprocess, start-up included: the whole tree to a JSON tree;
   c. the converter alone in this process (parse + JSON text), one core;
   d. one file: ``dcmpipe dcm2json FILE OUT`` against ``dcm2json FILE OUT``
      (median wall time of several runs).
3. Checks: the recipe wrote N JSON files and no temporary file; a sample of
   them parses to the same JSON as DCMTK's; and the targets: the recipe at
   >= 2,000 files/s and >= 15x the DCMTK loop; one file under 200 ms.
   PASS/FAIL is printed; the exit code is 0 unless something crashed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_move import _SUMMARY, cached_set, cpu_busy, dcmpipe_command, dicom_files, warm  # noqa: E402

TARGET_RATE = 2000.0
TARGET_RATIO = 15.0
TARGET_SINGLE = 0.200


def time_dcmtk(files: list[Path], out: Path, sample: int) -> tuple[float, int]:
    """Seconds for one dcm2json per file over a sample, extrapolated to all files."""
    chosen = files if sample <= 0 or sample >= len(files) else files[:: max(1, len(files) // sample)][:sample]
    out.mkdir(parents=True)
    started = time.perf_counter()
    for n, path in enumerate(chosen):
        subprocess.run(["dcm2json", str(path), str(out / f"{n}.json")], check=True)
    seconds = time.perf_counter() - started
    return seconds * len(files) / len(chosen), len(chosen)


def time_recipe(src: Path, dest: Path, jobs: int) -> dict:
    recipe = dest.parent / f"{dest.name}.toml"
    recipe.write_text(
        "[recipe]\nname = \"bench dcm2json\"\n\n"
        f"[[step]]\nread = \"files\"\npath = \"{src}\"\nrecursive = true\nsettle = 0\n\n"
        f"[[step]]\nroute = \"fixed\"\ndest = \"{dest}\"\n\n"
        "[[step]]\nexport = \"dcm2json\"\n")
    before = cpu_busy()
    started = time.perf_counter()
    result = subprocess.run([*dcmpipe_command(), "run", str(recipe), "-j", str(jobs)], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    after = cpu_busy()
    match = _SUMMARY.search(result.stderr)
    return {"seconds": seconds, "code": result.returncode, "stderr": result.stderr,
            "in_run": float(match.group(2).replace(",", "")) if match else None,
            "cpu": (after[2] - before[2]) if before and after else None,
            "others": ((after[1] - before[1]) - (after[2] - before[2])) / max(after[0] - before[0], 1e-9)
            if before and after else None}


def time_in_process(files: list[Path]) -> tuple[float, float]:
    from dcmpipe.plugins._dcm2json_parse import parse
    from dcmpipe.plugins._dcm2json_write import JsonOptions, to_json

    options = JsonOptions()
    started, cpu = time.perf_counter(), time.process_time()
    for path in files:
        to_json(parse(path.read_bytes()), options)
    return time.perf_counter() - started, time.process_time() - cpu


def time_single(path: Path, work: Path, runs: int) -> tuple[float, float]:
    ours, theirs = [], []
    for n in range(runs):
        for command, times in (([*dcmpipe_command(), "dcm2json"], ours), (["dcm2json"], theirs)):
            out = work / f"single-{len(times)}-{command[-1].replace('/', '_')}.json"
            started = time.perf_counter()
            subprocess.run([*command, str(path), str(out)], check=True)
            times.append(time.perf_counter() - started)
    return statistics.median(ours), statistics.median(theirs)


def check(files: list[Path], dest: Path, work: Path) -> list[str]:
    problems = []
    written = sorted(p for p in dest.rglob("*") if p.is_file())
    if len(written) != len(files) or any(p.name.startswith(".") for p in written):
        problems.append(f"{len(written)} files written for {len(files)} inputs (or temporary files left)")
    for path in files[:: max(1, len(files) // 20)]:
        ours = dest / (path.name + ".json")
        theirs = subprocess.run(["dcm2json", str(path)], capture_output=True).stdout
        if not ours.is_file() or json.loads(ours.read_bytes()) != json.loads(theirs):
            problems.append(f"{path.name}: JSON differs from DCMTK's")
    return problems


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1, help="recipe runs; the fastest correct one is reported")
    ap.add_argument("--dcmtk-sample", type=int, default=300, help="files for the DCMTK loop (0: all)")
    ap.add_argument("--single-runs", type=int, default=15)
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "dcmpipe-bench")
    ap.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: a temporary one)")
    args = ap.parse_args()
    if shutil.which("dcm2json") is None:
        sys.exit("DCMTK's dcm2json is not installed (apt install dcmtk)")

    folder, _ = cached_set(args.files, args.cache)
    files = dicom_files(folder)
    work = Path(tempfile.mkdtemp(prefix="bench-dcm2json-", dir=args.keep)) if args.keep else \
        Path(tempfile.mkdtemp(prefix="bench-dcm2json-"))
    warm(files)
    n = len(files)
    print(f"{n:,} classic MR files from {folder}; work folder {work}", flush=True)

    runs, problems = [], []
    for r in range(args.repeat):
        dest = work / f"json-{r}"
        run = time_recipe(folder, dest, args.jobs)
        if run["code"] != 0:
            problems.append(f"recipe run {r} exit {run['code']}: {run['stderr'][-300:]}")
        runs.append(run)
        if r == 0:
            problems += check(files, dest, work)
        if r < args.repeat - 1:
            shutil.rmtree(dest)
    best = min(runs, key=lambda x: x["seconds"])
    dcmtk_seconds, sampled = time_dcmtk(files, work / "dcmtk", args.dcmtk_sample)
    wall, cpu = time_in_process(files)
    single_ours, single_dcmtk = time_single(files[0], work, args.single_runs)

    rate = n / best["seconds"]
    dcmtk_rate = n / dcmtk_seconds
    print()
    print(f"{'method':<44}{'files':>7}{'seconds':>9}{'CPU s':>8}{'files/s':>9}{'x DCMTK':>9}")
    print("-" * 86)
    extra = f"  (in-run {best['in_run']:,.0f}/s)" if best["in_run"] else ""
    cpu_text = f"{best['cpu']:8.2f}" if best["cpu"] is not None else f"{'':8}"
    print(f"{f'dcmpipe run recipe (jobs {args.jobs})':<44}{n:>7,}{best['seconds']:9.2f}{cpu_text}{rate:9,.0f}"
          f"{rate / dcmtk_rate:8.1f}x{extra}")
    print(f"{f'DCMTK dcm2json per file (sample of {sampled})':<44}{sampled:>7,}{dcmtk_seconds * sampled / n:9.2f}"
          f"{'':8}{dcmtk_rate:9,.0f}{1.0:8.1f}x")
    print(f"{'converter in this process (one core)':<44}{n:>7,}{wall:9.2f}{cpu:8.2f}{n / wall:9,.0f}"
          f"{n / wall / dcmtk_rate:8.1f}x  ({n / cpu:,.0f} per CPU second)")
    print()
    print(f"one file: dcmpipe dcm2json {single_ours * 1000:.0f} ms, DCMTK dcm2json {single_dcmtk * 1000:.0f} ms "
          f"(median of {args.single_runs})")
    if best["others"] is not None:
        print(f"other processes used {best['others']:.2f} cores on average during the recipe run "
              f"(above 0.2 the numbers are low: re-run on an idle machine)")
    print("all recipe runs (s): " + ", ".join(f"{x['seconds']:.2f}" for x in runs))
    print()
    verdict = lambda ok: "PASS" if ok else "FAIL"  # noqa: E731
    print(f"target: recipe >= {TARGET_RATE:,.0f} files/s: {rate:,.0f} -> {verdict(rate >= TARGET_RATE)}")
    print(f"target: >= {TARGET_RATIO:.0f}x the DCMTK loop: {rate / dcmtk_rate:.1f}x -> "
          f"{verdict(rate / dcmtk_rate >= TARGET_RATIO)}")
    print(f"target: one file < {TARGET_SINGLE * 1000:.0f} ms: {single_ours * 1000:.0f} ms -> "
          f"{verdict(single_ours < TARGET_SINGLE)}")
    print(f"correctness (N JSON files, sample equal to DCMTK's): {verdict(not problems)}")
    for problem in problems:
        print("  " + problem)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
