"""How fast dcmexamcard and dcmcleanup are, beside DCMTK's dcmdump on the same files.

    python tests/benchmarks/bench_examcard.py              # the shared Philips R5.7 data
    python tests/benchmarks/bench_examcard.py --repeat 5

DCMTK has no tool that decodes Philips blobs; the nearest work is dumping the
same objects with their long values printed (``dcmdump +L``: every blob as
hex), one process per file as the lab's scripts did, and in one process.
For cleanup the peer is the header read a shell script would do per file
(``dcmdump -q +P SeriesDescription +P SeriesNumber``) to pick new names.
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "philips" / "dcm_qa_philips_enh" / "In"


def timed(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def run(*args, check=True):
    subprocess.run(args, check=check, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3, help="runs per method; the fastest is reported")
    args = parser.parse_args()
    if not SHARED.is_dir() or shutil.which("dcmdump") is None:
        sys.exit(f"needs {SHARED} and DCMTK's dcmdump")
    work = Path(tempfile.mkdtemp(prefix="dcmpipe-bench-examcard-"))
    try:
        raws = []
        for src in sorted((SHARED / "enh").glob("*_Raw.dcm.gz")):
            dst = work / "raw" / src.name[:-3]
            dst.parent.mkdir(exist_ok=True)
            dst.write_bytes(gzip.decompress(src.read_bytes()))
            raws.append(dst)
        mb = sum(p.stat().st_size for p in raws) / 1e6
        out = work / "out"

        def ours():
            shutil.rmtree(out, ignore_errors=True)
            run(sys.executable, "-m", "dcmpipe", "dcmexamcard", "--blobs", "text", "-o", str(out), *map(str, raws))

        def dcmdump_each():
            for p in raws:
                run("dcmdump", "+L", str(p))

        def dcmdump_once():
            run("dcmdump", "+L", *map(str, raws))

        print(f"dcmexamcard: {len(raws)} Raw Data Storage objects, {mb:.1f} MB")
        t_ours, t_each, t_once = timed(ours, args.repeat), timed(dcmdump_each, args.repeat), timed(dcmdump_once,
                                                                                                    args.repeat)
        print(f"  dcmpipe dcmexamcard --blobs text   {t_ours:6.2f} s")
        print(f"  dcmdump +L, one process per file   {t_each:6.2f} s   (dcmpipe/DCMTK = {t_ours / t_each:.2f})")
        print(f"  dcmdump +L, one process            {t_once:6.2f} s   (dcmpipe/DCMTK = {t_ours / t_once:.2f})")

        # cleanup: the classic files of two series, the Raw objects, a duplicate, debris.
        template = work / "folder"
        template.mkdir()
        for n, src in enumerate(sorted((SHARED / "cl").glob("*.dcm.gz")), start=1):
            (template / f"IM_{n:04d}").write_bytes(gzip.decompress(src.read_bytes()))
        for n, p in enumerate(raws, start=1):
            shutil.copy(p, template / f"XX_{n:04d}")
        shutil.copy(template / "IM_0001", template / "IM_0001 (1)")
        (template / "empty").write_bytes(b"")
        for p in template.iterdir():
            os.utime(p, (1e9, 1e9))
        files = sorted(template.iterdir())
        folder = work / "clean"

        def cleanup():
            shutil.rmtree(folder, ignore_errors=True)
            shutil.copytree(template, folder, copy_function=os.link)
            run(sys.executable, "-m", "dcmpipe", "cleanup", "-y", str(folder))

        def copy_only():
            shutil.rmtree(folder, ignore_errors=True)
            shutil.copytree(template, folder, copy_function=os.link)

        def dcmdump_names():
            for p in files:
                run("dcmdump", "-q", "+P", "SeriesDescription", "+P", "SeriesNumber", str(p), check=False)

        t_copy = timed(copy_only, args.repeat)
        t_clean = timed(cleanup, args.repeat) - t_copy
        t_names = timed(dcmdump_names, args.repeat)
        print(f"dcmcleanup: {len(files)} files")
        print(f"  dcmpipe cleanup -y                 {t_clean:6.2f} s")
        print(f"  dcmdump +P per file (names only)   {t_names:6.2f} s   (dcmpipe/DCMTK = {t_clean / t_names:.2f})")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
