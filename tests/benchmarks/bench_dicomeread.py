"""How fast dcmpipe.dicomeread reads Enhanced MR files, beside DCMTK and dcm2niix reading the same files.

    python tests/benchmarks/bench_dicomeread.py                 # scanner files + a 3,000-frame BOLD
    python tests/benchmarks/bench_dicomeread.py --dynamics 1000 # a 10,000-frame BOLD
    python tests/benchmarks/bench_dicomeread.py --repeat 5
    python tests/benchmarks/bench_dicomeread.py --cache /tmp/bench   # keep the synthetic file there

Every tool reads the whole file, pixel data included:
  dicomeread  dcmpipe.dicomeread(path): parse, place frames, scale per frame (in this process)
  dcmdump     DCMTK `dcmdump -q +L FILE > /dev/null` (parses every element, prints the dump)
  dcmconv     DCMTK `dcmconv FILE OUT` (parse and write back: a DCMTK read of all data)
  dcm2niix    `dcm2niix -s y -z n FILE` (a full conversion to NIfTI)
The synthetic BOLD repeats the 20 frames of tests/data/enhanced/T2_.dcm (10 slices) as N dynamics.
"""

from __future__ import annotations

import argparse
import copy
import gzip
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SHARED = REPO.parent / "shared"
T2STAR = REPO / "tests" / "data" / "enhanced" / "T2_.dcm"


def synthetic_bold(dst: Path, dynamics: int) -> Path:
    import pydicom

    ds = pydicom.dcmread(T2STAR)
    items = list(ds.PerFrameFunctionalGroupsSequence)
    first = [i for i in items if i.FrameContentSequence[0].DimensionIndexValues[2] == 1]
    size = ds.Rows * ds.Columns * 2
    raw = bytes(ds.PixelData)
    frames, pixels = [], []
    for d in range(1, dynamics + 1):
        for k, item in enumerate(first):
            new = copy.deepcopy(item)
            div = list(new.FrameContentSequence[0].DimensionIndexValues)
            new.FrameContentSequence[0].DimensionIndexValues = [div[0], div[1], d]
            new.FrameContentSequence[0].TemporalPositionIndex = d
            frames.append(new)
            src = items.index(item)
            pixels.append(raw[src * size:(src + 1) * size])
    ds.PerFrameFunctionalGroupsSequence = pydicom.Sequence(frames)
    ds.PixelData = b"".join(pixels)
    ds.NumberOfFrames = len(frames)
    ds.save_as(dst, enforce_file_format=False)
    return dst


def best(fn, repeat: int) -> tuple[float, list]:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times), times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dynamics", type=int, default=300, help="dynamics of the synthetic BOLD (10 frames each)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per tool and file; the fastest counts")
    ap.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "dcmpipe-bench"),
                    help="where the synthetic BOLD is kept between runs")
    args = ap.parse_args()

    import dcmpipe

    work = Path(tempfile.mkdtemp(prefix="dcmpipe-bench-eread-"))
    files = []
    for name in ("DTI.dcm", "T2_.dcm"):
        p = SHARED / "philips" / "nitest-balls1" / "DICOM" / name
        if p.is_file():
            files.append(p)
    asl = SHARED / "philips" / "dcm_qa_philips_enh" / "In" / "enh" / "1903_WIP_SOURCE_-_3DpCASL.dcm.gz"
    if asl.is_file():
        out = work / "asl.dcm"
        with gzip.open(asl) as fin, open(out, "wb") as fout:
            shutil.copyfileobj(fin, fout)
        files.append(out)
    mprage = SHARED / "corpus" / "nibabel" / "philips_mprage.dcm"
    if mprage.is_file():
        files.append(mprage)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    bold = cache / f"bold_{args.dynamics}dyn.dcm"
    if not bold.is_file():
        t = time.perf_counter()
        synthetic_bold(bold, args.dynamics)
        print(f"synthetic BOLD written in {time.perf_counter() - t:.1f} s ({bold})", file=sys.stderr)
    files.append(bold)

    tools = {"dcmdump": shutil.which("dcmdump"), "dcmconv": shutil.which("dcmconv"), "dcm2niix": shutil.which("dcm2niix")}
    print(f"{'file':28} {'frames':>6} {'MB':>6} {'dicomeread':>11} {'dcmdump':>9} {'dcmconv':>9} {'dcm2niix':>9}  ratio vs dcmdump / dcmconv")
    for path in files:
        import pydicom

        nframes = int(pydicom.dcmread(path, stop_before_pixels=True).NumberOfFrames)
        ours, _ = best(lambda: dcmpipe.dicomeread(path), args.repeat)
        row = {}
        if tools["dcmdump"]:
            row["dcmdump"], _ = best(lambda: subprocess.run([tools["dcmdump"], "-q", "+L", path], stdout=subprocess.DEVNULL,
                                                            stderr=subprocess.DEVNULL, check=False), args.repeat)
        if tools["dcmconv"]:
            target = work / "conv.dcm"

            def conv():
                if target.exists():
                    target.unlink()
                subprocess.run([tools["dcmconv"], path, target], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

            row["dcmconv"], _ = best(conv, args.repeat)
        if tools["dcm2niix"]:
            nii = work / "nii"
            nii.mkdir(exist_ok=True)

            def niix():
                for old in nii.iterdir():
                    old.unlink()
                subprocess.run([tools["dcm2niix"], "-s", "y", "-z", "n", "-o", nii, "-f", "x", path],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

            row["dcm2niix"], _ = best(niix, args.repeat)
        cells = [f"{row[k]:8.3f}s" if k in row else f"{'-':>9}" for k in ("dcmdump", "dcmconv", "dcm2niix")]
        ratios = " / ".join(f"{ours / row[k]:.2f}x" for k in ("dcmdump", "dcmconv") if k in row)
        print(f"{path.name[:28]:28} {nframes:6d} {os.path.getsize(path) / 1e6:6.1f} {ours:10.3f}s {' '.join(cells)}  {ratios}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
