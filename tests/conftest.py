"""Shared fixtures: real DICOM exports, a CLI runner, and a clean plugin environment."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# The suite ignores whatever third-party or lab-local plugins happen to be installed.
os.environ["DCMPIPE_DISABLE_PLUGINS"] = "1"
os.environ.pop("DCMPIPE_PLUGINS_DIR", None)

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
SHARED = REPO.parent / "shared"


def run_cli(*args, cwd=None, input=None, env=None, timeout=120) -> subprocess.CompletedProcess:
    """Run ``python -m dcmpipe ARGS`` as a user would, capturing output."""
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "dcmpipe", *map(str, args)],
        cwd=cwd, input=input, capture_output=True, text=True, env=full_env, timeout=timeout,
    )


@pytest.fixture(scope="session")
def export_template(tmp_path_factory) -> Path:
    """The demo scanner export (two patients, 5 series, a text file, a truncated file), made once."""
    from dcmpipe.demo import make_export

    folder = tmp_path_factory.mktemp("export-template") / "incoming"
    make_export(folder)
    old = 1_000_000_000  # files are "old": not still arriving
    for path in folder.rglob("*"):
        os.utime(path, (old, old))
    return folder


@pytest.fixture
def export(export_template, tmp_path) -> Path:
    """A fresh copy of the demo export for one test."""
    target = tmp_path / "incoming"
    shutil.copytree(export_template, target)
    return target


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).rglob("*") if p.is_file())


def sop_uids(folder: Path) -> list[str]:
    """SOP Instance UIDs of every DICOM file below ``folder`` (with repetitions)."""
    import pydicom

    out = []
    for path in files_under(folder):
        try:
            out.append(str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID))
        except Exception:
            continue
    return sorted(out)


@pytest.fixture
def cli():
    return run_cli


def have(tool: str) -> bool:
    return shutil.which(tool) is not None
