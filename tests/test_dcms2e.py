"""dcms2e: classic Philips dynamic-1 files + PAR/REC -> Enhanced MR, round trip on the scanner's ASL series."""

from __future__ import annotations

import gzip
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import SHARED, run_cli

QA = SHARED / "philips" / "dcm_qa_philips_enh" / "In"
SCANNER = QA / "enh" / "1903_WIP_SOURCE_-_3DpCASL.dcm.gz"


@pytest.fixture(scope="module")
def asl_run(tmp_path_factory) -> dict:
    """The scanner's Enhanced ASL (series 1903), its classic dynamic-1 files, and our PAR/REC of it."""
    if not SCANNER.exists():
        pytest.skip(f"dcm_qa_philips_enh not found at {QA}")
    import pydicom

    root = tmp_path_factory.mktemp("asl")
    scanner = root / "scanner.dcm"
    scanner.write_bytes(gzip.decompress(SCANNER.read_bytes()))
    run = root / "run"
    run.mkdir()
    for path in sorted((QA / "cl").glob("1903_*.dcm.gz")):
        data = gzip.decompress(path.read_bytes())
        target = run / path.name[:-3]
        target.write_bytes(data)
        if int(pydicom.dcmread(target, stop_before_pixels=True).TemporalPositionIdentifier) != 1:
            target.unlink()
    done = run_cli("dcm2par", "-q", "-o", root / "par", scanner)
    assert done.returncode == 0, done.stderr
    (root / "par" / "scanner.PAR").rename(root / "run.PAR")
    (root / "par" / "scanner.REC").rename(root / "run.REC")
    return {"root": root, "scanner": scanner, "run": run}


def _frames(path: Path) -> dict:
    """(slice, dynamic, label) -> (frame number, pixels, per-frame item) of an Enhanced file."""
    import pydicom

    ds = pydicom.dcmread(path)
    pixels = ds.pixel_array
    out = {}
    for number, frame in enumerate(ds.PerFrameFunctionalGroupsSequence):
        private = frame[0x2005, 0x140F][0]
        key = (int(private[0x2001, 0x100A].value), int(private.TemporalPositionIdentifier),
               str(private[0x2005, 0x1429].value))
        out[key] = (number, pixels[number], frame)
    return out


def _errors(path: Path) -> list[str]:
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy (dicom3tools) not installed")
    done = subprocess.run(["dciodvfy", "-new", str(path)], capture_output=True, text=True)
    return [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("Error")]


def test_round_trip_equals_the_scanners_enhanced_file(asl_run, tmp_path):
    import numpy as np

    out = tmp_path / "ours.dcm"
    done = run_cli("dcms2e", "-q", "-o", out, "--par", asl_run["root"] / "run.PAR", asl_run["run"])
    assert done.returncode == 0, done.stderr
    ours, theirs = _frames(out), _frames(asl_run["scanner"])
    assert len(ours) == len(theirs) == 240
    for key, (number, pixels, frame) in theirs.items():
        our_number, our_pixels, our_frame = ours[key]
        assert our_number == number, key  # the scanner's frame order: label > slice > dynamic
        assert np.array_equal(our_pixels, pixels), key
        for sequence, keyword in (("FrameContentSequence", "DimensionIndexValues"),
                                  ("FrameContentSequence", "FrameAcquisitionDateTime"),
                                  ("FrameVOILUTSequence", "WindowCenter"),
                                  ("PixelValueTransformationSequence", "RescaleSlope")):
            assert str(our_frame[sequence][0][keyword].value) == str(frame[sequence][0][keyword].value), (key, keyword)
        private, our_private = frame[0x2005, 0x140F][0], our_frame[0x2005, 0x140F][0]
        assert our_private.InstanceNumber == private.InstanceNumber
        assert our_private[0x2005, 0x10A0].value == private[0x2005, 0x10A0].value  # dynamic scan begin time
        # Max FP: estimated from integers for dynamics > 1, within one scale step of the scanner's value
        step = 1 / private[0x2005, 0x100E].value
        assert private[0x2005, 0x100B].value - step <= our_private[0x2005, 0x100B].value <= private[0x2005, 0x100B].value
    # dcm2par of ours gives the PAR/REC dcm2par makes of the scanner's file
    assert run_cli("dcm2par", "-q", "-o", tmp_path / "par", out, asl_run["scanner"]).returncode == 0
    strip = lambda p: [l for l in p.read_bytes().split(b"\r\n") if not l.startswith(b"# Dataset name")]  # noqa: E731
    assert strip(tmp_path / "par" / "ours.PAR") == strip(tmp_path / "par" / "scanner.PAR")
    assert (tmp_path / "par" / "ours.REC").read_bytes() == (tmp_path / "par" / "scanner.REC").read_bytes()


def test_strict_passes_dciodvfy_and_default_keeps_only_the_scanners_quirks(asl_run, tmp_path):
    strict, default = tmp_path / "strict.dcm", tmp_path / "default.dcm"
    par = asl_run["root"] / "run.PAR"
    assert run_cli("dcms2e", "-q", "--strict", "-o", strict, "--par", par, asl_run["run"]).returncode == 0
    assert run_cli("dcms2e", "-q", "-o", default, "--par", par, asl_run["run"]).returncode == 0
    assert _errors(strict) == []
    quirks = ("Must start from one, not zero", "VelocityEncodingDirection")
    ours = _errors(default)
    assert ours and all(any(q in line for q in quirks) for line in ours)
    assert len(ours) <= len(_errors(asl_run["scanner"]))


def test_default_output_name_and_diffs(asl_run, tmp_path):
    run = tmp_path / "fmri"
    shutil.copytree(asl_run["run"], run)
    shutil.copy(asl_run["root"] / "run.PAR", tmp_path / "fmri.PAR")
    shutil.copy(asl_run["root"] / "run.REC", tmp_path / "fmri.REC")
    done = run_cli("dcms2e", "--diffs", run)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "fmri.dcm").is_file()
    assert "Max/Min FP" in done.stdout and "160 cloned" in done.stdout
    again = run_cli("dcms2e", run)  # never overwrites
    assert again.returncode == 1 and "already exists" in again.stderr


def _broken(asl_run, tmp_path, change, cli: bool) -> tuple:
    run = tmp_path / "broken"
    shutil.copytree(asl_run["run"], run)
    shutil.copy(asl_run["root"] / "run.PAR", tmp_path / "broken.PAR")
    shutil.copy(asl_run["root"] / "run.REC", tmp_path / "broken.REC")
    change(run, tmp_path)
    out = tmp_path / "broken.dcm"
    if cli:
        done = run_cli("dcms2e", run)
        return done.returncode, done.stderr, out
    from dcmpipe.plugins._philips_build import PhilipsError, build

    try:
        build(run, tmp_path / "broken.PAR", tmp_path / "broken.REC", out)
    except PhilipsError as exc:
        return 1, str(exc), out
    return 0, "", out


def _drop_one_file(run, _):
    sorted(run.iterdir())[5].unlink()


def _change_pixels(run, _):
    import pydicom

    path = sorted(run.iterdir())[3]
    ds = pydicom.dcmread(path)
    data = bytearray(ds.PixelData)
    data[100] ^= 0xFF
    ds.PixelData = bytes(data)
    ds.save_as(path)


def _other_acquisition(run, root):
    text = (root / "broken.PAR").read_bytes().replace(b"Acquisition nr                     :   19",
                                                      b"Acquisition nr                     :   7")
    (root / "broken.PAR").write_bytes(text)


def _truncate_rec(run, root):
    data = (root / "broken.REC").read_bytes()
    (root / "broken.REC").write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("change, message, cli", [
    (_drop_one_file, "79 classic files but 80 PAR images of dynamic 1", True),
    (_change_pixels, "pixel data differs from REC image", False),
    (_other_acquisition, "acquisition number differs: classic 19, PAR 7", False),
    (_truncate_rec, "truncated REC", False),
])
def test_checks_before_writing(asl_run, tmp_path, change, message, cli):
    code, stderr, out = _broken(asl_run, tmp_path, change, cli)
    assert code == 1
    assert message in stderr and "Traceback" not in stderr
    if cli:  # one line for the series, not one per file
        assert len([line for line in stderr.splitlines() if "dcms2e" in line and "failed" not in line]) == 1
    assert not out.exists()


# -- a long run (more than the scanner's 16,384 images); the benchmark uses the same generator ------


def generate_run(frames: int, folder: Path, size: int = 64) -> Path:
    """A long fMRI-like run: FOLDER/run (classic files of dynamic 1) + run.PAR/run.REC; cached.

    From the 80 classic dynamic-1 files of the scanner's ASL series 1903 cut to size x size; the
    REC holds FRAMES/80 dynamics: dynamic 1 = the classic pixels, the others random 12-bit values.
    """
    import numpy as np
    import pydicom

    from dcmpipe.plugins import _philips_par as par

    run = folder / "run"
    if (folder / "run.REC").exists():
        return run
    if not QA.exists():
        raise FileNotFoundError(f"data missing: {QA}")
    work = Path(tempfile.mkdtemp(dir=folder))
    scanner = work / "scanner.dcm"
    scanner.write_bytes(gzip.decompress((QA / "enh" / "1903_WIP_SOURCE_-_3DpCASL.dcm.gz").read_bytes()))
    subprocess.run([sys.executable, "-m", "dcmpipe", "dcm2par", "-q", "-o", work, scanner], check=True)
    parsed = par.read_par(work / "scanner.PAR")
    dyn1 = [dict(r) for r in parsed.records if r["dynamic"] == 1]
    per_dynamic = len(dyn1)
    dynamics = max(1, frames // per_dynamic)
    records = []
    for d in range(1, dynamics + 1):
        for r in dyn1:
            row = dict(r, dynamic=d, dyn_time=(d - 1) * 2.0, recon_x=size, recon_y=size)
            records.append(row)
    records.sort(key=lambda r: par.row_sort_key(True, r))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 4096, size=(len(records), size * size), dtype=np.uint16)
    run.mkdir(parents=True, exist_ok=True)
    key = lambda r: (r["slice"], r["label"])  # noqa: E731
    first_row = {}
    for row, r in enumerate(records):
        r["index"] = row
        if r["dynamic"] == 1:
            first_row[key(r)] = row
    for path in sorted((QA / "cl").glob("1903_*.dcm.gz")):
        ds = pydicom.dcmread(gzip.GzipFile(path))
        if int(ds.TemporalPositionIdentifier) != 1:
            continue
        label = 2 if str(ds[0x2005, 0x1429].value).upper() == "LABEL" else 1
        row = first_row[(int(ds[0x2001, 0x100A].value), label)]
        ds.Rows = ds.Columns = size
        ds.PixelData = images[row].tobytes()
        ds.save_as(run / path.name[:-3])
    general = dict(parsed.general)
    general["Max. number of dynamics"] = str(dynamics)
    (folder / "run.PAR").write_bytes(par.format_par(general, records, "4.2", str(folder / "run")))
    images.tofile(folder / "run.REC")
    shutil.rmtree(work)
    return run


def test_more_than_16384_frames(tmp_path):
    """16,400 frames of 8x8: dcms2e writes one Enhanced file, dcm2par gives the REC back unchanged."""
    if not (QA / "cl").exists():
        pytest.skip(f"dcm_qa_philips_enh not found at {QA}")
    run = generate_run(16_400, tmp_path, size=8)
    done = run_cli("dcms2e", "-q", run)
    assert done.returncode == 0, done.stderr
    assert run_cli("dcm2par", "-q", "-o", tmp_path / "back", tmp_path / "run.dcm").returncode == 0
    from dcmpipe.plugins import _philips_par as par

    back = par.read_par(tmp_path / "back" / "run.PAR")
    assert len(back.records) == 16_400 and max(r["dynamic"] for r in back.records) == 205
    assert (tmp_path / "back" / "run.REC").read_bytes() == (tmp_path / "run.REC").read_bytes()
