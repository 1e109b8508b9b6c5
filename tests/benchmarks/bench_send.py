"""Benchmark: ``dcmpipe send`` against DCMTK ``storescu``, both towards DCMTK ``storescp``.

Run on demand (this is not a pytest test)::

    python tests/benchmarks/bench_send.py                       # 2,000 small MR files + 50 x 20 MB
    python tests/benchmarks/bench_send.py --files 500 --large 10 --repeat 3

What it does:

1. Generates (once, cached in ``CACHE``) N small classic MR files (~10 kB, Explicit VR
   Little Endian, from pydicom's ``MR_small.dcm`` by :func:`dcmpipe.demo.generate`) and
   M large MR files of about 20 MB each (one 3238 x 3238 16-bit frame of random pixels).
2. Starts DCMTK ``storescp`` on a free loopback port with ``TCP_NODELAY=1`` (DCMTK leaves
   Nagle's algorithm on otherwise), storing into a scratch folder that is emptied after
   every run.
   A second round does the same towards ``storescp --ignore`` (receives, stores nothing):
   with storing, DCMTK's receiver is the limit of both senders on small files.
3. Times, as subprocesses with their start-up included, on the same files (page cache warmed):
   a. DCMTK ``storescu +sd`` with ``TCP_NODELAY=1``, one association for the folder;
   b. ``dcmpipe send -s 127.0.0.1 -p PORT FOLDER``;
   c. pynetdicom's ``Association.send_c_store(path)`` in a loop (files sent undecoded, TCP_NODELAY
      set, one association): what dcmpipe send would be on pynetdicom.
   After each run the receiver must hold exactly the files sent.
4. Prints files/s, MB/s and the ratio dcmpipe/DCMTK per set, the in-run rate dcmpipe
   reports itself, and PASS/FAIL for the targets: >= 1,000 small files/s sent (towards
   ``storescp --ignore``) and >= 90% of DCMTK's MB/s on the large files (towards the storing one).  The exit code is 0 unless something crashed.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PLAN_VERSION = 1
TARGET_SMALL_RATE = 1000.0
TARGET_LARGE_RATIO = 0.90
LARGE_SIDE = 3238  # 3238 x 3238 x 2 bytes: ~20 MB of pixel data


def dcmtk(name: str) -> str:
    """DCMTK's binary, not pynetdicom's Python app of the same name that comes first on PATH."""
    for folder in [*os.environ.get("PATH", "").split(os.pathsep), "/usr/bin", "/usr/local/bin"]:
        candidate = Path(folder) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            out = subprocess.run([str(candidate), "--version"], capture_output=True, text=True)
            if "dcmtk" in (out.stdout + out.stderr).lower():
                return str(candidate)
    sys.exit(f"DCMTK {name} not found")


def make_small(folder: Path, n: int) -> None:
    from dcmpipe.demo import SeriesPlan, StudyPlan, generate

    series = [SeriesPlan(k + 1, f"series {k + 1}", slices=min(500, n - 500 * k)) for k in range((n + 499) // 500)]
    generate(folder, [StudyPlan("1", "BENCH^SEND", "B1", "Bench", series)])


def make_large(folder: Path, n: int) -> None:
    from pydicom import dcmread
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    folder.mkdir(parents=True)
    ds = dcmread(get_testdata_file("MR_small.dcm"))
    ds.Rows = ds.Columns = LARGE_SIDE
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = os.urandom(LARGE_SIDE * LARGE_SIDE * 2)
    ds.SeriesInstanceUID = generate_uid()
    for k in range(n):
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber = k + 1
        ds.save_as(folder / f"BIG_{k + 1:03d}", enforce_file_format=True)


def dataset(cache: Path, kind: str, n: int) -> Path:
    folder = cache / f"{kind}-{n}-v{PLAN_VERSION}"
    if not folder.is_dir():
        part = folder.with_name(folder.name + ".part")
        shutil.rmtree(part, ignore_errors=True)
        print(f"generating {n} {kind} files in {folder} ...", flush=True)
        (make_small if kind == "small" else make_large)(part, n)
        part.rename(folder)
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Receiver:
    def __init__(self, scratch: Path, ignore: bool):
        self.folder = scratch / ("ignored" if ignore else "received")
        self.folder.mkdir(parents=True)
        self.port = free_port()
        self.ignore = ignore
        self.proc = subprocess.Popen([dcmtk("storescp"), "-od", str(self.folder), "-aet", "STORESCP",
                                      *(["--ignore"] if ignore else []), str(self.port)],
                                     env=dict(os.environ, TCP_NODELAY="1"),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def count_and_clear(self) -> int:
        names = os.listdir(self.folder)
        for name in names:
            os.unlink(self.folder / name)
        return len(names)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def warm(folder: Path) -> int:
    total = 0
    for path in folder.iterdir():
        total += len(path.read_bytes())
    return total


def timed(cmd: list[str], env: dict | None = None) -> tuple[float, str]:
    started = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, **(env or {})))
    seconds = time.perf_counter() - started
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} ... failed ({out.returncode}): {out.stderr[-2000:]}")
    return seconds, out.stderr


def pynetdicom_sender(port: int, folder: Path) -> None:
    """The same job with pynetdicom's Association.send_c_store: files sent from disk undecoded
    (STORE_SEND_CHUNKED_DATASET), TCP_NODELAY set when the connection opens, one association."""
    from pynetdicom import AE, _config, evt

    from dcmpipe.header import read_header

    _config.STORE_SEND_CHUNKED_DATASET = True
    files = sorted(folder.iterdir())
    kinds = {(h.sop_class_uid, h.transfer_syntax) for h in (read_header(f, frozenset()) for f in files)}
    ae = AE(ae_title="PYNETDICOM")
    for sop_class, syntax in kinds:
        ae.add_requested_context(sop_class, [syntax])

    def nodelay(event):
        event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    assoc = ae.associate("127.0.0.1", port, ae_title="STORESCP", evt_handlers=[(evt.EVT_CONN_OPEN, nodelay)])
    failed = []
    for path in files:
        status = assoc.send_c_store(path) if assoc.is_established else None
        if not status or status.Status != 0:  # an empty status: the association broke off
            failed.append(path.name)
    assoc.release()
    if failed:
        sys.exit(f"pynetdicom: {len(failed)} files failed, the first {failed[0]}")


def main() -> None:
    if sys.argv[1:2] == ["--pynetdicom-sender"]:
        return pynetdicom_sender(int(sys.argv[2]), Path(sys.argv[3]))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=2000, help="small files (default 2,000)")
    parser.add_argument("--large", type=int, default=50, help="large files of ~20 MB (default 50)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per method; the fastest counts")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "dcmpipe-bench",
                        help="where the generated sets are kept")
    args = parser.parse_args()

    sets = [("small", dataset(args.cache, "small", args.files))]
    if args.large:
        sets.append(("large", dataset(args.cache, "large", args.large)))
    scratch = Path(tempfile.mkdtemp(prefix="bench-send-"))
    results = {}
    try:
        for ignore in (False, True):
            mode = "--ignore" if ignore else "store"
            receiver = Receiver(scratch, ignore)
            try:
                for kind, folder in sets:
                    run_set(receiver, mode, kind, folder, args.repeat, results)
            finally:
                receiver.stop()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    report(sets, results)


def run_set(receiver: Receiver, mode: str, kind: str, folder: Path, repeat: int, results: dict) -> None:
    n = len(os.listdir(folder))
    size = warm(folder)
    methods = {
        "DCMTK storescu": ([dcmtk("storescu"), "-aet", "STORESCU", "-aec", "STORESCP", "+sd",
                            "127.0.0.1", str(receiver.port), str(folder)], {"TCP_NODELAY": "1"}),
        "dcmpipe send": ([sys.executable, "-m", "dcmpipe", "send", "-r", "STORESCP", "-s", "127.0.0.1",
                          "-p", str(receiver.port), str(folder)], None),
        "pynetdicom": ([sys.executable, __file__, "--pynetdicom-sender", str(receiver.port), str(folder)], None),
    }
    for name, (cmd, env) in methods.items():
        best, inrun = None, None
        for _ in range(repeat):
            receiver.count_and_clear()
            try:
                seconds, err = timed(cmd, env)
            except RuntimeError as exc:
                print(f"{mode} {kind} {name}: {str(exc)[-300:]}", flush=True)
                continue
            got = receiver.count_and_clear()
            if not receiver.ignore and got != n:
                raise RuntimeError(f"{name}: the receiver holds {got} files, {n} were sent")
            if name == "dcmpipe send" and f"send: {n} sent, 0 failed" not in err:
                raise RuntimeError(f"{name}: not everything was sent: {err[-2000:]}")
            if best is None or seconds < best:
                best = seconds
                match = re.search(r"in ([\d.]+) s", err) if name == "dcmpipe send" else None
                inrun = float(match[1]) if match else None
        if best is not None:
            results[(mode, kind, name)] = (n, size, best, inrun)


def report(sets, results: dict) -> None:
    print(f"\n{'storescp':<9} {'set':<6} {'method':<16} {'files':>6} {'MB':>8} {'seconds':>8} {'files/s':>9} "
          f"{'MB/s':>8}  in-run")
    for (mode, kind, name), (n, size, seconds, inrun) in results.items():
        extra = f"{n / inrun:,.0f} files/s" if inrun else ""
        print(f"{mode:<9} {kind:<6} {name:<16} {n:>6} {size / 1e6:>8.1f} {seconds:>8.2f} {n / seconds:>9,.0f} "
              f"{size / 1e6 / seconds:>8.1f}  {extra}")
    verdicts = []
    for mode in ("store", "--ignore"):
        for kind, _ in sets:
            n, size, ours, _ = results[(mode, kind, "dcmpipe send")]
            theirs = results[(mode, kind, "DCMTK storescu")][2]
            ratio = theirs / ours
            pyn = results.get((mode, kind, "pynetdicom"), (0, 0, None))[2]
            versus = f"{pyn / ours:.2f}" if pyn else "(pynetdicom failed)"
            print(f"storescp {mode}, {kind}: dcmpipe send / DCMTK storescu = {ratio:.2f}, "
                  f"dcmpipe send / pynetdicom = {versus} (files/s and MB/s alike)")
            if kind == "small" and mode == "--ignore":
                # the sender's own speed: a storing storescp is the limit of both senders
                verdicts.append((f"small files, storescp --ignore: {n / ours:,.0f} files/s >= "
                                 f"{TARGET_SMALL_RATE:,.0f}", n / ours >= TARGET_SMALL_RATE))
            if kind == "large" and mode == "store":
                verdicts.append((f"large files: {ratio:.0%} of DCMTK's MB/s >= {TARGET_LARGE_RATIO:.0%}",
                                 ratio >= TARGET_LARGE_RATIO))
    for text, ok in verdicts:
        print(f"{'PASS' if ok else 'FAIL'}: {text}")
    print(f"load average: {os.getloadavg()[0]:.1f} (other processes slow both senders alike)")


if __name__ == "__main__":
    main()
