"""A run killed mid-way (SIGKILL), then run again, loses and duplicates nothing.

The re-run must also name every file exactly as an uninterrupted run does,
even for series that were half moved when the process died.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import files_under

N_SERIES = 12


@pytest.fixture(scope="session")
def big_export(tmp_path_factory) -> Path:
    from dcmpipe.demo import SeriesPlan, StudyPlan, generate

    folder = tmp_path_factory.mktemp("big") / "in"
    series = [SeriesPlan(100 + n, f"s{n}", slices=20, dynamics=5) for n in range(N_SERIES)]
    generate(folder, [StudyPlan("77", "CRASH^TEST", "C1", "crash", series)])
    for path in folder.iterdir():
        os.utime(path, (1_000_000_000, 1_000_000_000))
    return folder


def _move(src: Path, dest: Path, *extra) -> list[str]:
    return [sys.executable, "-m", "dcmpipe", "move", "-a", "-q", "--wait", "0", *extra, "-s", str(src), str(dest)]


def _count(folder: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(folder)) if folder.exists() else 0


def _kill_mid_way(cmd: list[str], dest: Path, at_least: int, total: int) -> int:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 60
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if _count(dest) >= at_least:
                break
            time.sleep(0.002)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return _count(dest)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in files_under(folder)}


@pytest.mark.parametrize("mode", ["copy", "move"])
def test_killed_run_then_rerun_equals_an_uninterrupted_run(big_export, tmp_path, mode):
    total = len(list(big_export.iterdir()))
    extra = ("-c",) if mode == "copy" else ()
    reference = tmp_path / "reference"
    shutil.copytree(big_export, tmp_path / "ref-in")
    assert subprocess.run(_move(tmp_path / "ref-in", reference, *extra, "-j", "1")).returncode == 0
    expected = _snapshot(reference)
    assert len([k for k in expected if not k.endswith("info")]) == total

    src, dest = tmp_path / "in", tmp_path / "out"
    mid_way = False
    for attempt in range(5):  # the kill must land while files are being written
        shutil.rmtree(src, ignore_errors=True)
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(big_export, src)
        done = _kill_mid_way(_move(src, dest, *extra), dest, at_least=total // 5 + attempt * 50, total=total)
        if 0 < done < total:
            mid_way = True
            break
    assert mid_way, "could not kill the run while it was writing"
    if mode == "move":  # every file is at its source, at its destination, or (linked) at both
        assert _count(src) + _count(dest) >= total

    result = subprocess.run(_move(src, dest, *extra), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert _snapshot(dest) == expected
    assert not [p for p in files_under(tmp_path) if p.name.endswith(".dcmpipe-part")]
    if mode == "move":
        assert _count(src) == 0
    else:
        assert _snapshot(src) == _snapshot(big_export)


def test_ctrl_c_stops_cleanly_and_a_rerun_finishes(big_export, tmp_path):
    total = len(list(big_export.iterdir()))
    src, dest = tmp_path / "in", tmp_path / "out"
    shutil.copytree(big_export, src)
    cmd = [a for a in _move(src, dest, "-c") if a != "-q"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while proc.poll() is None and _count(dest) < total // 5 and time.monotonic() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    done = _count(dest)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert 0 < done < total
    assert not [p for p in files_under(dest) if p.name.endswith(".dcmpipe-part")]
    result = subprocess.run(_move(src, dest, "-c"), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert len([p for p in files_under(dest) if p.name != "info"]) == total
