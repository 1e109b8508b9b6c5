"""dcmshortacq: the partial last dynamic of an Enhanced MR fMRI file is dropped, a backup kept."""

from __future__ import annotations

import copy
import gzip
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest

import dcmpipe

HERE = Path(__file__).resolve().parent
T2STAR = HERE / "data" / "enhanced" / "T2_.dcm"
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
ASL = SHARED / "philips" / "dcm_qa_philips_enh" / "In" / "enh" / "1903_WIP_SOURCE_-_3DpCASL.dcm.gz"
CLASSIC = SHARED / "corpus" / "pydicom" / "MR_small.dcm"


def run(*args):
    return subprocess.run([sys.executable, "-m", "dcmpipe", "dcmshortacq", *map(str, args)], capture_output=True,
                          text=True)


def div(item) -> list:
    return list(item.FrameContentSequence[0].DimensionIndexValues)


def cut_last_dynamic(src: pydicom.Dataset, dst: Path, keep_in_last: int, dynamic_axis: int) -> tuple[list, list]:
    """Write ``src`` with only ``keep_in_last`` frames of its last dynamic (as a scanner stopped early would)."""
    ds = copy.deepcopy(src)
    items = list(ds.PerFrameFunctionalGroupsSequence)
    last = max(div(i)[dynamic_axis] for i in items)
    in_last = [k for k, i in enumerate(items) if div(i)[dynamic_axis] == last]
    keep = [k for k in range(len(items)) if k not in in_last[keep_in_last:]]
    size = ds.Rows * ds.Columns * 2
    raw = bytes(ds.PixelData)
    ds.PerFrameFunctionalGroupsSequence = pydicom.Sequence([items[k] for k in keep])
    ds.PixelData = b"".join(raw[k * size:(k + 1) * size] for k in keep)
    ds.NumberOfFrames = len(keep)
    ds.save_as(dst, enforce_file_format=False)
    complete = [k for k in keep if div(items[k])[dynamic_axis] != last]
    return keep, complete


@pytest.fixture
def short(tmp_path):
    path = tmp_path / "bold.dcm"
    keep, complete = cut_last_dynamic(pydicom.dcmread(T2STAR), path, 4, dynamic_axis=2)
    return path, keep, complete


def test_partial_last_dynamic_dropped_backup_kept(short):
    path, keep, complete = short
    before = path.read_bytes()
    r = run(path)
    assert r.returncode == 0, r.stderr
    assert "bold.dcm" in r.stdout and "4 of 10 frames: dropped" in r.stdout
    backup = path.with_name("bold.dcm.orig")
    assert backup.read_bytes() == before
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temporary file left

    ds = pydicom.dcmread(path)
    orig = pydicom.dcmread(backup)
    assert ds.NumberOfFrames == 10 and len(ds.PerFrameFunctionalGroupsSequence) == 10
    assert ds.SOPInstanceUID == orig.SOPInstanceUID
    assert ds[0x2001, 0x1081].value == 1  # Philips: Number of Dynamic Scans
    private = [i[0x2005, 0x140F][0] for i in ds.PerFrameFunctionalGroupsSequence]
    assert {int(p.NumberOfTemporalPositions) for p in private} == {1}
    assert {div(i)[2] for i in ds.PerFrameFunctionalGroupsSequence} == {1}
    frames = np.frombuffer(ds.PixelData, "<u2").reshape(10, 80, 80)
    original = np.frombuffer(orig.PixelData, "<u2").reshape(-1, 80, 80)
    positions = [keep.index(k) for k in complete]
    np.testing.assert_array_equal(frames, original[positions])

    array, info = dcmpipe.dicomeread(path)
    full, _ = dcmpipe.dicomeread(T2STAR)
    assert array.shape == (10, 80, 80)
    np.testing.assert_array_equal(array, full[:, 0])


@pytest.mark.skipif(shutil.which("dcm2niix") is None, reason="dcm2niix not installed")
def test_dcm2niix_reads_the_result_and_not_the_partial_file(short, tmp_path):
    path, _, _ = short
    out = tmp_path / "nii"
    out.mkdir()
    before = subprocess.run(["dcm2niix", "-s", "y", "-o", out, "-f", "partial", path], capture_output=True, text=True)
    assert run(path).returncode == 0
    r = subprocess.run(["dcm2niix", "-s", "y", "-o", out, "-f", "fixed", path], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    nibabel = pytest.importorskip("nibabel")
    img = nibabel.load(out / "fixed.nii")
    assert img.shape == (80, 80, 10)
    ours, _ = dcmpipe.dicomeread(path, noscale=True)
    # dcm2niix stores the volume as (column, row, slice), rows flipped, slices in position order
    theirs = np.asanyarray(img.dataobj).astype(np.float32)
    assert sorted(np.round(theirs.ravel())) == sorted(np.round(ours.astype(np.float32).ravel() *
                                                              float(img.dataobj.slope) + float(img.dataobj.inter)))
    assert before.returncode != 0 or "out-of-volume" in before.stdout + before.stderr  # the reason for the tool


def test_complete_file_left_untouched(tmp_path):
    path = tmp_path / "full.dcm"
    shutil.copyfile(T2STAR, path)
    r = run(path)
    assert r.returncode == 0
    assert "no partial dynamic (2 dynamics of 10 frames); left untouched" in r.stdout
    assert path.read_bytes() == T2STAR.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full.dcm"]


def test_existing_backup_never_overwritten(short):
    path, _, _ = short
    backup = path.with_name("bold.dcm.orig")
    backup.write_bytes(b"an older backup")
    before = path.read_bytes()
    r = run(path)
    assert r.returncode == 1
    assert "bold.dcm" in r.stderr and "backup bold.dcm.orig already exists" in r.stderr
    assert path.read_bytes() == before and backup.read_bytes() == b"an older backup"
    assert sorted(p.name for p in path.parent.iterdir()) == ["bold.dcm", "bold.dcm.orig"]


def test_dry_run_changes_nothing_and_backups_are_not_inputs(short):
    path, _, _ = short
    before = path.read_bytes()
    r = subprocess.run([sys.executable, "-m", "dcmpipe", "dcmshortacq", "--dry-run", path], capture_output=True,
                       text=True)
    assert r.returncode == 0 and "would drop temporal position 2 (4 of 10 frames)" in r.stdout
    assert path.read_bytes() == before and not path.with_name("bold.dcm.orig").exists()
    assert run(path.parent).returncode == 0  # the folder: bold.dcm only
    r = run(path.parent)  # again: the backup is passed over, bold.dcm is complete now
    assert r.returncode == 0 and "left untouched" in r.stdout and ".orig" not in r.stdout


def test_not_a_simple_early_stop_is_refused(tmp_path):
    ds = pydicom.dcmread(T2STAR)
    path = tmp_path / "odd.dcm"
    # drop one frame of the FIRST dynamic: the last one is then longer than the others
    first = next(k for k, i in enumerate(ds.PerFrameFunctionalGroupsSequence) if div(i)[2] == 1)
    keep = [k for k in range(20) if k != first]
    size = 80 * 80 * 2
    raw = bytes(ds.PixelData)
    ds.PerFrameFunctionalGroupsSequence = pydicom.Sequence([ds.PerFrameFunctionalGroupsSequence[k] for k in keep])
    ds.PixelData = b"".join(raw[k * size:(k + 1) * size] for k in keep)
    ds.NumberOfFrames = 19
    ds.save_as(path, enforce_file_format=False)
    before = path.read_bytes()
    r = run(path)
    assert r.returncode == 1 and "odd.dcm" in r.stderr and "last dynamic has 10 frames, the others 9" in r.stderr
    assert path.read_bytes() == before


def test_bad_input_one_line_errors(tmp_path):
    junk = tmp_path / "junk.dcm"
    junk.write_text("hello")
    r = run(junk)
    assert r.returncode != 0 and "junk.dcm" in r.stderr and "Traceback" not in r.stderr
    truncated = tmp_path / "cut.dcm"
    truncated.write_bytes(T2STAR.read_bytes()[:250_000])
    r = run(truncated)
    assert r.returncode == 1 and "cut.dcm" in r.stderr and len(r.stderr.strip().splitlines()) == 2  # error + summary
    assert truncated.stat().st_size == 250_000 and not (tmp_path / "cut.dcm.orig").exists()
    if CLASSIC.is_file():
        r = run(CLASSIC)
        assert r.returncode == 1 and "not an Enhanced MR image (MR Image Storage)" in r.stderr


@pytest.mark.skipif(not ASL.is_file(), reason="ASL of dcm_qa_philips_enh absent")
def test_asl_with_private_label_dimension(tmp_path):
    with gzip.open(ASL) as fh:
        src = pydicom.dcmread(fh)
    path = tmp_path / "asl.dcm"
    cut_last_dynamic(src, path, 50, dynamic_axis=2)
    assert run(path).returncode == 0
    array, info = dcmpipe.dicomeread(path)
    full, _ = dcmpipe.dicomeread(ASL)
    assert array.shape == (40, 2, 2, 96, 96)
    assert info.axes[2].values == ["CONTROL", "LABEL"]
    np.testing.assert_array_equal(array, full[:, :2])
    assert pydicom.dcmread(path).NumberOfFrames == 160


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (dicom3tools) not installed")
def test_no_new_dciodvfy_errors(short):
    path, _, _ = short
    assert run(path).returncode == 0

    def errors(p):
        r = subprocess.run(["dciodvfy", "-new", p], capture_output=True, text=True)
        return {line for line in (r.stdout + r.stderr).splitlines() if line.startswith("Error")}

    assert errors(path) <= errors(path.with_name("bold.dcm.orig"))


def test_private_dynamic_number_when_temporal_position_index_is_missing(short):
    path, _, complete = short
    ds = pydicom.dcmread(path)
    for item in ds.PerFrameFunctionalGroupsSequence:
        del item.FrameContentSequence[0].TemporalPositionIndex  # left: Philips' (0020,0100) in (2005,140F)
    ds.save_as(path, enforce_file_format=False)
    r = run(path)
    assert r.returncode == 0 and "4 of 10 frames: dropped" in r.stdout
    assert pydicom.dcmread(path).NumberOfFrames == 10
    for item in ds.PerFrameFunctionalGroupsSequence:
        del item[0x2005, 0x140F][0].TemporalPositionIdentifier
    ds.save_as(tmp := path.with_name("none.dcm"), enforce_file_format=False)
    r = run(tmp)
    assert r.returncode == 1 and "frame 1 has no temporal position" in r.stderr
