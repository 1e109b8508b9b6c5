"""Benchmark dcms2e and dcm2par on a generated 20,000-frame fMRI run (64x64, 16-bit).

Generation (not timed, cached): the 80 classic files of dynamic 1 of the scanner's ASL series 1903
(../shared/philips/dcm_qa_philips_enh, 40 slices x control/label), cut to 64x64, plus a PAR/REC of
N/80 dynamics whose dynamic-1 images are the classic pixels and the others random 12-bit values.
Timed, each as a subprocess with its peak memory (max RSS from wait4):

1. ``dcmpipe dcms2e RUN`` -> RUN.dcm, an Enhanced MR file with N frames;
2. ``dcmpipe dcm2par RUN.dcm`` -> PAR/REC (checked: REC identical to the generated one);
3. DCMTK ``dcmconv RUN.dcm copy.dcm`` (reads and writes the same Enhanced file) as the reference;
4. both of ours again with ``--fsync`` (the output flushed to disk before it gets its name), for
   information: the targets are judged on the defaults, which, like DCMTK, leave the flush to the system.

Before every timed run the disk is synced (not timed), so that no run pays for the previous run's
write-back. The fastest of ``--repeat`` runs counts; the median is shown beside it.

Commands run as from an installation with bytecode caches (PYTHONDONTWRITEBYTECODE is removed from
their environment). MB/s = pixel data bytes / wall seconds. Targets: >= 300 MB/s, peak memory < 1.5 x pixel data.
Usage: python tests/benchmarks/bench_philips.py [--frames 20000] [--cache DIR] [--repeat N] [--out DIR]
(``--out /dev/shm/x``: outputs on tmpfs, to see the programs' own speed without the disk's write-back.)
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
QA = REPO.parent / "shared" / "philips" / "dcm_qa_philips_enh" / "In"
SIZE = 64


# As a user's installation runs: with the bytecode caches Python writes on first import (a development
# shell may set PYTHONDONTWRITEBYTECODE, which makes every run compile the ~150 modules it imports again).
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def timed(command: list, label: str, pixel_bytes: int) -> dict:
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    stderr = process.stderr.read().decode(errors="replace")
    process.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{label} failed: {stderr}")
    return {"label": label, "seconds": seconds, "rss": usage.ru_maxrss * 1024,
            "mbps": pixel_bytes / seconds / 1e6, "cpu": usage.ru_utime + usage.ru_stime}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=20_000)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "dcmpipe-bench-philips")
    parser.add_argument("--repeat", type=int, default=1, help="runs per tool; the fastest counts")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for the outputs (default: the cache folder); e.g. /dev/shm to time the "
                             "programs without the disk's write-back")
    args = parser.parse_args(argv)
    folder = args.cache / f"frames-{args.frames}"
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    from test_dcms2e import generate_run  # the tests use the same generator

    if not QA.exists():
        sys.exit(f"benchmark data missing: {QA}")
    run = generate_run(args.frames, folder, SIZE)
    print(f"data: {folder} (generated or reused in {time.perf_counter() - started:.1f} s)")
    frames = (folder / "run.REC").stat().st_size // (SIZE * SIZE * 2)
    pixel_bytes = frames * SIZE * SIZE * 2
    dcmpipe = [sys.executable, "-m", "dcmpipe"]
    # Warm the page cache in another process: this one stays small, since a forked child starts
    # with its parent's resident pages and they would count in the child's peak memory.
    subprocess.run(["cat", str(folder / "run.REC")], stdout=subprocess.DEVNULL, check=True)
    # Bytecode caches of the modules the two commands import, written once (not timed).
    subprocess.run(dcmpipe + ["dcms2e", "--help"], stdout=subprocess.DEVNULL, env=ENV, check=True)
    subprocess.run([sys.executable, "-c", "import pydicom, numpy, dcmpipe.plugins._philips_build, "
                    "dcmpipe.plugins._philips_fast"], env=ENV, check=True)
    rows = []
    for label, make in (
        ("dcms2e", lambda out: dcmpipe + ["dcms2e", "-q", "-o", out, run]),
        ("dcm2par", lambda out: dcmpipe + ["dcm2par", "-q", "-o", out, (args.out or folder) / "out-dcms2e.dcm"]),
        ("DCMTK dcmconv (same Enhanced file)", lambda out: ["dcmconv", (args.out or folder) / "out-dcms2e.dcm", out]),
        ("dcms2e --fsync", lambda out: dcmpipe + ["dcms2e", "-q", "--fsync", "-o", out, run]),
        ("dcm2par --fsync", lambda out: dcmpipe + ["dcm2par", "-q", "--fsync", "-o", out,
                                                   (args.out or folder) / "out-dcms2e.dcm"]),
    ):
        best = None
        times = []
        outdir = args.out or folder
        outdir.mkdir(parents=True, exist_ok=True)
        for attempt in range(args.repeat):
            out = outdir / {"dcms2e": "out-dcms2e.dcm", "dcms2e --fsync": "out-fsync.dcm",
                            "dcm2par --fsync": "out-fsync-dcm2par"}.get(label, f"out-{label.split()[0]}")
            if out.is_dir():
                shutil.rmtree(out)
            elif out.exists():
                out.unlink()
            if label.startswith("DCMTK"):
                out = outdir / "out-dcmconv.dcm"
                if out.exists():
                    out.unlink()
            os.sync()  # nothing left to write back from the previous run
            result = timed(make(out), label, pixel_bytes)
            times.append(result["seconds"])
            best = result if best is None or result["seconds"] < best["seconds"] else best
        best["median"] = sorted(times)[len(times) // 2]
        rows.append(best)
    ours = (args.out or folder) / "out-dcm2par" / "out-dcms2e.REC"
    same = ours.read_bytes() == (folder / "run.REC").read_bytes()
    lines = ((args.out or folder) / "out-dcm2par" / "out-dcms2e.PAR").read_bytes().count(b"\r\n")
    print(f"\n{frames:,} frames of {SIZE}x{SIZE}x16 bit = {pixel_bytes / 1e6:.1f} MB pixel data\n")
    print(f"{'method':38} {'seconds':>8} {'median':>7} {'CPU s':>7} {'MB/s':>7} {'MB/CPU s':>9} {'peak MB':>8} "
          f"{'x pixel':>8}")
    reference = rows[2]
    for r in rows:
        print(f"{r['label']:38} {r['seconds']:8.2f} {r['median']:7.2f} {r['cpu']:7.2f} {r['mbps']:7.0f} "
              f"{pixel_bytes / r['cpu'] / 1e6:9.0f} "
              f"{r['rss'] / 1e6:8.0f} "
              f"{r['rss'] / pixel_bytes:8.2f}x")
    busy = os.getloadavg()[0]
    print(f"\nload average during the run: {busy:.1f} on {os.cpu_count()} cores"
          + (" (busy machine: wall times are high, compare CPU seconds)" if busy > os.cpu_count() else ""))
    for r in rows[:2]:
        print(f"{r['label']}: {r['seconds'] / reference['seconds']:.2f}x the time of dcmconv; "
              f"target >= 300 MB/s: {'PASS' if r['mbps'] >= 300 else 'FAIL'}; "
              f"peak memory < 1.5x pixel data: {'PASS' if r['rss'] < 1.5 * pixel_bytes else 'FAIL'}")
    for r in rows[3:]:
        print(f"{r['label']} (information; includes the disk's write time): {r['mbps']:.0f} MB/s, "
              f"{r['seconds'] / reference['seconds']:.2f}x the time of dcmconv")
    print(f"dcm2par REC of the dcms2e output identical to the generated REC: {'PASS' if same else 'FAIL'} "
          f"({lines} PAR lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
