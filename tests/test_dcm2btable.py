"""dcm2btable: b-value tables, checked against what nibabel derives from the scanner's paired DTI.PAR."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest

HERE = Path(__file__).resolve().parent
T2STAR = HERE / "data" / "enhanced" / "T2_.dcm"
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
BALLS = SHARED / "philips" / "nitest-balls1"
DTI = BALLS / "DICOM" / "DTI.dcm"

pytestmark = pytest.mark.skipif(not DTI.is_file(), reason="../shared/philips/nitest-balls1 (DTI.dcm, DTI.PAR) absent")


def run(*args):
    return subprocess.run([sys.executable, "-m", "dcmpipe", "dcm2btable", *map(str, args)], capture_output=True,
                          text=True)


def rows(text: str) -> list:
    return [[float(x) for x in line.split()] for line in text.splitlines() if line and not line.startswith("#")]


def par_table():
    """(b, ap, fh, rl) per volume of DTI.PAR as nibabel reads it, with the b-value/gradient numbers."""
    nibabel = pytest.importorskip("nibabel")
    hdr = nibabel.load(BALLS / "PARREC" / "DTI.PAR").header
    bvals, _ = hdr.get_bvals_bvecs()
    defs = hdr.image_defs
    order = hdr.get_sorted_slice_indices()
    n_slices = hdr.get_data_shape()[2]
    table = []
    for v, b in enumerate(bvals):
        row = defs[order[v * n_slices]]
        key = (int(row["diffusion b value number"]), int(row["gradient orientation number"]))
        table.append((key, float(b), tuple(float(x) for x in row["diffusion"])))
    return table


def test_table_equals_the_par_volumes_in_dimension_index_order():
    par = sorted(par_table())  # by (b-value number, gradient number): the DICOM's index order
    r = run("--isotropic", DTI)
    assert r.returncode == 0, r.stderr
    ours = rows(r.stdout)
    assert len(ours) == len(par) == 8
    for (key, b, (ap, fh, rl)), (ob, x, y, z) in zip(par, ours):
        assert ob == b
        # the PAR has 3 decimals: (ap, fh, rl); ours is (x=RL, y=AP, z=FH)
        np.testing.assert_allclose([x, y, z], [rl, ap, fh], atol=6e-4)
    r = run("--isotropic", "--par-order", DTI)
    for (key, b, vec), (ob, *ours_vec) in zip(par, rows(r.stdout)):
        np.testing.assert_allclose(ours_vec, vec, atol=6e-4)


def test_isotropic_left_out_by_default_and_b0_first_for_philips_input():
    full = rows(run("--isotropic", DTI).stdout)
    default = rows(run(DTI).stdout)
    assert len(default) == 7
    isotropic = [r for r in full if r[0] > 0 and r[1:] == [0, 0, 0]]
    assert len(isotropic) == 1 and isotropic[0] not in default
    assert default[0] == [0, 0, 0, 0]
    assert all(abs(np.linalg.norm(r[1:]) - 1) < 1e-5 for r in default[1:])
    philips = rows(run("--philips-input", DTI).stdout)
    assert philips[0] == [0, 0, 0, 0]
    assert [r[3] for r in philips] == [r[0] for r in default]
    assert [r[:3] for r in philips] == [r[1:] for r in default]
    # b as an integer, vectors with 6 decimals
    assert run(DTI).stdout.splitlines()[1].split()[0] == "1000"
    assert len(run(DTI).stdout.splitlines()[1].split()[1].split(".")[1]) == 6


def test_private_fallback_and_warning_when_they_disagree(tmp_path):
    ds = pydicom.dcmread(DTI)
    for item in ds.PerFrameFunctionalGroupsSequence:
        del item.MRDiffusionSequence
    ds.save_as(tmp_path / "private.dcm", enforce_file_format=False)
    r = run("--isotropic", tmp_path / "private.dcm")
    assert r.returncode == 0, r.stderr
    assert rows(r.stdout) == rows(run("--isotropic", DTI).stdout)

    ds = pydicom.dcmread(DTI)
    for item in ds.PerFrameFunctionalGroupsSequence:  # private vectors in another frame (planning angles)
        private = item[0x2005, 0x140F][0]
        private[0x2005, 0x10B0].value, private[0x2005, 0x10B1].value = private[0x2005, 0x10B1].value, private[0x2005, 0x10B0].value
    ds.save_as(tmp_path / "disagree.dcm", enforce_file_format=False)
    r = run(tmp_path / "disagree.dcm")
    assert r.returncode == 0
    assert "disagree" in r.stderr and "disagree.dcm" in r.stderr
    assert rows(r.stdout) == rows(run(DTI).stdout)  # the standard values win


def test_output_file_and_folder_never_overwritten(tmp_path):
    out = tmp_path / "dti.txt"
    assert run(DTI, "-o", out).returncode == 0
    assert rows(out.read_text()) == rows(run(DTI).stdout)
    r = run("--isotropic", DTI, "-o", out)
    assert r.returncode != 0 and "already exists" in r.stderr
    folder = tmp_path / "tables"
    assert run(DTI, "-o", folder).returncode == 0
    assert (folder / "DTI.txt").read_text() == out.read_text()


def test_not_diffusion_and_not_enhanced_are_one_line_errors(tmp_path):
    r = run(T2STAR)
    assert r.returncode == 1 and "T2_.dcm" in r.stderr and "not a diffusion series" in r.stderr
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"DICM" * 10)
    r = run(junk)
    assert r.returncode != 0 and "junk.dcm" in r.stderr and "Traceback" not in r.stderr
    assert r.stdout == ""
