"""Benchmark: sorting through the movegui page against ``dcmpipe move`` (and DCMTK's dcmdump loop).

Run on demand (this is not a pytest test)::

    python tests/benchmarks/bench_movegui.py                 # 10,000 files
    python tests/benchmarks/bench_movegui.py --files 2000 --repeat 1

What it does, on the cached generated set of ``bench_move.py`` (same files, same checks):

1. Starts ``dcmpipe movegui --no-browser --port 0`` once (start-up not timed: a user starts it once).
2. Per repeat, in alternating order, on a fresh folder of hard links each time:
   a. ``dcmpipe move -a --wait 0 -s SRC DEST`` as a subprocess, timed as a whole;
   b. the page's requests: POST /api/preview (the dry run, timed on its own), then POST /api/run
      and the server-sent events until ``done``: timed from the Run request to the summary,
      with every progress event's arrival time.
3. Checks both destinations (N files plus one info file per series, source empty) and the targets:
   GUI run >= 90% of the ``dcmpipe move`` rate (best runs), and progress events never more than
   1 s apart.  dcmdump once per file (the original dcm_move's design) is timed on a sample as the
   DCMTK reference.  PASS/FAIL is printed; the exit code is 0 unless something crashed.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_move as bm  # noqa: E402  the data set, the fresh copies and the checks

TARGET_SHARE = 0.90
MAX_GAP = 1.0


class Gui:
    def __init__(self, cwd: Path):
        self.proc = subprocess.Popen([*bm.dcmpipe_command(), "movegui", "--no-browser", "--port", "0"], cwd=cwd,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        match = re.match(r"dcmpipe movegui: (http://127\.0\.0\.1:\d+)/\?token=(\S+)", line)
        if not match:
            raise RuntimeError(f"movegui did not start: {line!r} {self.proc.stderr.read()}")
        self.base, self.token = match.groups()

    def post(self, path: str, body: dict) -> dict:
        req = urllib.request.Request(self.base + path, data=json.dumps(body).encode(), headers={
            "X-Dcmpipe-Token": self.token, "Origin": self.base, "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=600) as answer:
            return json.loads(answer.read())

    def events(self, job: str):
        """(arrival time, kind, data) of every server-sent event of the job, until done."""
        req = urllib.request.Request(f"{self.base}/api/events?job={job}&token={self.token}")
        kind = None
        with urllib.request.urlopen(req, timeout=600) as stream:
            for raw in stream:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    yield time.perf_counter(), kind, json.loads(line[6:])

    def stop(self) -> str:
        self.proc.terminate()
        out, err = self.proc.communicate(timeout=60)
        return out + err


def time_gui(gui: Gui, files, work: Path, n_series: int, label: str) -> dict:
    src, dest = work / f"{label}-src", work / f"{label}-dest"
    how = bm.fresh_copy(files, src)
    values = {"source": str(src), "destdir": str(dest), "wait": "0"}
    started = time.perf_counter()
    preview = gui.post("/api/preview", {"values": values})
    preview_seconds = time.perf_counter() - started
    studies = [s["uid"] for s in preview["studies"]]
    cpu, started = bm.cpu_now(), time.perf_counter()
    job = gui.post("/api/run", {"values": values, "keep": studies, "all": True, "total": preview["total"]})["job"]
    stamps, result, fractions = [started], None, []
    for when, kind, data in gui.events(job):
        stamps.append(when)
        if kind == "done":
            result = data
        else:
            fractions.append(data["fraction"])
    seconds = time.perf_counter() - started
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    problems = bm.check_move(files, src, dest, n_series, 0 if result and not result["failed"] else 1,
                             how == "hard links")
    if result is None or result["error"]:
        problems.append(f"run error: {result and result['error']}")
    return {"label": label, "files": len(files), "seconds": seconds, "cpu": bm.cpu_now() - cpu,
            "preview_seconds": preview_seconds, "preview_studies": len(studies), "events": len(stamps) - 1,
            "max_gap": max(gaps) if gaps else float("inf"), "in_run_seconds": result["seconds"] if result else None,
            "monotonic": all(b >= a for a, b in zip(fractions, fractions[1:])), "problems": problems}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "dcmpipe-bench")
    parser.add_argument("--dcmdump-sample", type=int, default=300)
    args = parser.parse_args(argv)

    source, n_series = bm.cached_set(args.files, args.cache)
    files = bm.dicom_files(source)
    bm.warm(files)
    work = Path(tempfile.mkdtemp(prefix="bench-movegui-", dir=args.cache))
    busy_start = bm.cpu_busy()
    gui = Gui(work)
    moves, guis = [], []
    try:
        for k in range(args.repeat):
            order = ("move", "gui") if k % 2 == 0 else ("gui", "move")
            for which in order:
                if which == "move":
                    moves.append(bm.time_move(files, work, n_series, None, f"move-{k}"))
                else:
                    guis.append(time_gui(gui, files, work, n_series, f"gui-{k}"))
                shutil.rmtree(work / f"{which}-{k}-src", ignore_errors=True)
                shutil.rmtree(work / f"{which}-{k}-dest", ignore_errors=True)
        output = gui.stop()
    finally:
        if gui.proc.poll() is None:
            gui.proc.kill()
    busy_end = bm.cpu_busy()
    dcmdump = bm.time_dcmdump(files, args.dcmdump_sample)
    shutil.rmtree(work, ignore_errors=True)

    print(f"\n{args.files:,} files, {n_series} series; best of {args.repeat} runs each, alternating order\n")
    head = f"{'method':<34} {'seconds':>8} {'files/s':>9} {'x dcmdump':>10}  runs (s)"
    print(head)
    print("-" * len(head))
    ref = bm.rate(dcmdump) if dcmdump else None
    best_move = min((r for r in moves if not r["problems"]), key=lambda r: r["seconds"], default=None)
    best_gui = min((r for r in guis if not r["problems"]), key=lambda r: r["seconds"], default=None)
    for name, runs, best in (("dcmpipe move (subprocess)", moves, best_move),
                             ("movegui: Run -> summary", guis, best_gui)):
        if best is None:
            print(f"{name:<34} every run had problems: {runs[0]['problems']}")
            continue
        ratio = f"{bm.rate(best) / ref:9.1f}x" if ref else f"{'-':>10}"
        times = ", ".join(f"{r['seconds']:.2f}" for r in runs)
        print(f"{name:<34} {best['seconds']:8.2f} {bm.rate(best):9,.0f} {ratio}  {times}")
    if dcmdump:
        print(f"{'dcmdump per file (DCMTK)':<34} {dcmdump['seconds'] * len(files) / dcmdump['files']:8.1f}"
              f" {bm.rate(dcmdump):9,.0f} {1.0:9.1f}x  (sample of {dcmdump['files']}, extrapolated)")
    ok = best_move is not None and best_gui is not None
    if ok:
        share = bm.rate(best_gui) / bm.rate(best_move)
        gaps = max(r["max_gap"] for r in guis)
        print(f"\npreview (dry run) of the page: {min(r['preview_seconds'] for r in guis):.2f} s;"
              f" progress events per run: {', '.join(str(r['events']) for r in guis)};"
              f" longest gap between events: {gaps:.2f} s; bar only moves forward: {all(r['monotonic'] for r in guis)}")
        print(f"GUI rate / dcmpipe move rate: {share:.1%} (target >= {TARGET_SHARE:.0%});"
              f" longest progress gap {gaps:.2f} s (target < {MAX_GAP:.0f} s)")
        # the same comparison without dcmpipe move's start-up: each run's own first-read-to-last-move time
        move_in = max(r.get("in_run_rate", 0.0) for r in moves if not r["problems"])
        gui_in = max(r["files"] / r["in_run_seconds"] for r in guis if not r["problems"] and r["in_run_seconds"])
        print(f"in-run rates (start-up excluded): dcmpipe move {move_in:,.0f} files/s, movegui {gui_in:,.0f}"
              f" files/s: {gui_in / move_in:.1%} (target >= {TARGET_SHARE:.0%})")
        ok = share >= TARGET_SHARE and gui_in / move_in >= TARGET_SHARE and gaps < MAX_GAP
    for r in moves + guis:
        for p in r["problems"]:
            print(f"problem in {r['label']}: {p}")
    if busy_start and busy_end:
        wall = busy_end[0] - busy_start[0]
        others = (busy_end[1] - busy_start[1]) - (busy_end[2] - busy_start[2])
        print(f"other processes used {others / wall:.0%} of one core on average during the runs")
    if "DEMO" in output or "BENCH^" in output:
        print("problem: patient data in the server's output")
        ok = False
    print("PASS" if ok else "FAIL")
    return 0


if __name__ == "__main__":
    sys.exit(main())
