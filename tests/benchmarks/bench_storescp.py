"""Benchmark: DCMTK storescu sending to DCMTK storescp and to ``dcmpipe storescp``, side by side.

Run on demand (this is not a pytest test)::

    python tests/benchmarks/bench_storescp.py                   # 2,000 small MR files, 50 x 20 MB
    python tests/benchmarks/bench_storescp.py --small 500 --large 10 --repeat 3

What it does:

1. Generates (once, cached in ``$TMPDIR/dcmpipe-bench``) N small classic MR files
   (about 10 KB, Explicit VR Little Endian, from pydicom's ``MR_small.dcm``) and
   M files of 20 MB (the same header with 20 MB of pixel data).
2. For each set and each receiver: starts the receiver on a free port (DCMTK
   ``storescp -od DIR PORT`` with ``TCP_NODELAY=1`` in its environment, as DCMTK
   needs it; ``dcmpipe storescp -q --store DIR PORT`` with a long end-of-study
   timeout, so only receiving is timed), runs DCMTK ``storescu +sd`` (with
   ``TCP_NODELAY=1``) on the folder, times it, checks that every file arrived,
   and stops the receiver.  The receivers alternate; the best of ``--repeat``
   runs of each is reported.
3. Prints files/s and MB/s for both, the ratio ours/DCMTK, and the targets:
   >= 1,000 small files/s received, >= 90 % of DCMTK's MB/s on the large files.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from _storescp_helpers import dcmtk  # noqa: E402

SMALL_TARGET = 1000.0
LARGE_RATIO_TARGET = 0.90
ENV = {**os.environ, "TCP_NODELAY": "1"}


def small_set(n: int, cache: Path) -> Path:
    from dcmpipe.demo import SeriesPlan, StudyPlan, generate

    folder = cache / f"storescp-small-{n}"
    marker = cache / f"storescp-small-{n}.complete"  # not inside: storescu +sd would send it
    if marker.is_file() and folder.is_dir():
        return folder
    tmp = Path(tempfile.mkdtemp(prefix=".small-", dir=cache))
    print(f"generating {n} small MR files (once) ...", flush=True)
    generate(tmp, [StudyPlan("1", "BENCH^SMALL", "B1", "Bench", [SeriesPlan(1, "fMRI", slices=25, dynamics=-(-n // 25))])],
             names="IM_{n:06d}")
    files = sorted(tmp.iterdir())
    for extra in files[n:]:
        extra.unlink()
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    marker.write_text(f"{n}\n")
    return folder


def large_set(m: int, mb: int, cache: Path) -> Path:
    from pydicom import dcmread
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    folder = cache / f"storescp-large-{m}x{mb}"
    marker = cache / f"storescp-large-{m}x{mb}.complete"
    if marker.is_file() and folder.is_dir():
        return folder
    tmp = Path(tempfile.mkdtemp(prefix=".large-", dir=cache))
    print(f"generating {m} files of {mb} MB (once) ...", flush=True)
    ds = dcmread(get_testdata_file("MR_small.dcm"))
    rows = 2048
    cols = mb * 1024 * 1024 // (rows * 2)
    ds.Rows, ds.Columns = rows, cols
    ds.PixelData = os.urandom(rows * cols * 2)
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    for k in range(m):
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber = k + 1
        ds.save_as(tmp / f"IM_{k:04d}", enforce_file_format=True)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    marker.write_text(f"{m}\n")
    return folder


def start_dcmtk(store: Path):
    from _storescp_helpers import free_port

    port = free_port()
    proc = subprocess.Popen([dcmtk("storescp"), "-od", str(store), str(port)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    return proc, port


def start_ours(store: Path):
    proc = subprocess.Popen([sys.executable, "-m", "dcmpipe", "storescp", "-q", "--store", str(store),
                             "--eostudy-timeout", "3600", "0"], stderr=subprocess.PIPE, text=True)
    while True:
        line = proc.stderr.readline()
        if not line:
            raise RuntimeError("dcmpipe storescp did not start")
        found = re.search(r"listening on port (\d+)", line)
        if found:
            return proc, int(found.group(1))


def stop(proc) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def received(store: Path) -> int:
    return sum(1 for p in store.rglob("*") if p.is_file() and not p.name.startswith("."))


def one_run(kind: str, src: Path, n: int, work: Path) -> float:
    store = work / f"{kind}-{time.monotonic_ns()}"
    store.mkdir()
    proc, port = (start_dcmtk if kind == "dcmtk" else start_ours)(store)
    try:
        started = time.perf_counter()
        result = subprocess.run([dcmtk("storescu"), "+sd", "-aec", "STORESCP", "127.0.0.1", str(port), str(src)],
                                env=ENV, capture_output=True, text=True)
        seconds = time.perf_counter() - started
    finally:
        stop(proc)
    got = received(store)
    shutil.rmtree(store, ignore_errors=True)
    if result.returncode != 0 or got != n:
        raise RuntimeError(f"{kind}: storescu exit {result.returncode}, {got} of {n} files received\n{result.stderr}")
    return seconds


def measure(label: str, src: Path, n: int, size: int, work: Path, repeat: int) -> dict:
    times = {"dcmtk": [], "ours": []}
    for _ in range(repeat):
        for kind in ("dcmtk", "ours"):
            times[kind].append(one_run(kind, src, n, work))
    out = {}
    print(f"\n{label}: {n} files, {size / 1e6:,.1f} MB, storescu -> receiver (best of {repeat})")
    for kind, name in (("dcmtk", "DCMTK storescp"), ("ours", "dcmpipe storescp")):
        best = min(times[kind])
        out[kind] = best
        print(f"  {name:17s} {best:7.2f} s  {n / best:8,.0f} files/s  {size / 1e6 / best:8,.1f} MB/s"
              f"   (runs: {', '.join(f'{t:.2f}' for t in times[kind])})")
    print(f"  ratio ours/DCMTK  {out['dcmtk'] / out['ours']:.2f}x")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", type=int, default=2000, help="small MR files (default 2000)")
    parser.add_argument("--large", type=int, default=50, help="large files (default 50)")
    parser.add_argument("--mb", type=int, default=20, help="size of a large file in MB (default 20)")
    parser.add_argument("--repeat", type=int, default=2, help="runs per receiver; the best is reported")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "dcmpipe-bench")
    args = parser.parse_args()
    if not (dcmtk("storescu") and dcmtk("storescp")):
        print("DCMTK storescu and storescp are needed")
        return 2
    args.cache.mkdir(parents=True, exist_ok=True)
    small, large = small_set(args.small, args.cache), large_set(args.large, args.mb, args.cache)
    work = Path(tempfile.mkdtemp(prefix="bench-storescp-", dir=args.cache))
    size = lambda folder: sum(p.stat().st_size for p in folder.iterdir() if not p.name.startswith("."))  # noqa: E731
    try:
        s = measure("small MR files", small, args.small, size(small), work, args.repeat)
        big = measure(f"{args.mb} MB files", large, args.large, size(large), work, args.repeat)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    small_rate = args.small / s["ours"]
    ratio = big["dcmtk"] / big["ours"]
    print(f"\ntarget: >= {SMALL_TARGET:,.0f} small files/s received: {small_rate:,.0f} files/s "
          f"{'PASS' if small_rate >= SMALL_TARGET else 'FAIL'}")
    print(f"target: >= {LARGE_RATIO_TARGET:.0%} of DCMTK's MB/s on large files: {ratio:.0%} "
          f"{'PASS' if ratio >= LARGE_RATIO_TARGET else 'FAIL'}")
    print(f"(machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
