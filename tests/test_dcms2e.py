"""dcms2e: classic Philips dynamic-1 files + PAR/REC -> Enhanced MR, round trip on the scanner's ASL series."""

from __future__ import annotations

import gzip
import os
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


# -- the fast paths give what the plain ones give ----------------------------------------------------------


def _elements(path: Path, skip=(0x00020003, 0x00080012, 0x00080013, 0x00080018, 0x00209164)) -> list:
    """Every element of a file as (path, VR, value bytes), sequences walked, per-run values left out."""
    import pydicom
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_data_element

    def walk(ds, where):
        out = []
        for el in ds:
            if el.tag in skip:
                continue
            if el.VR == "SQ":
                out.append((where + (el.tag,), "SQ", len(el.value)))
                for k, item in enumerate(el.value):
                    out += walk(item, where + (el.tag, k))
            else:
                fp = DicomBytesIO()
                fp.is_little_endian, fp.is_implicit_VR = True, False
                write_data_element(fp, el)
                out.append((where + (el.tag,), el.VR, fp.getvalue()))
        return out

    ds = pydicom.dcmread(path)
    return walk(ds.file_meta, ("meta",))[1:] + walk(ds, ())  # group length: UIDs of other lengths


def test_frame_by_frame_path_writes_the_same_file(asl_run, tmp_path, monkeypatch):
    """Classic files whose slots lie in different orders are written frame by frame: the same bytes."""
    from dcmpipe.plugins import _philips_build as build

    par_path, rec_path = asl_run["root"] / "run.PAR", asl_run["root"] / "run.REC"
    build.build(asl_run["run"], par_path, rec_path, tmp_path / "columns.dcm")
    monkeypatch.setattr(build, "COLUMNWISE", False)
    build.build(asl_run["run"], par_path, rec_path, tmp_path / "frames.dcm")
    assert _elements(tmp_path / "columns.dcm") == _elements(tmp_path / "frames.dcm")


def test_pixel_copy_without_a_memory_map_writes_the_same_file(asl_run, tmp_path, monkeypatch):
    """Where the REC cannot be mapped it is read chunk by chunk: the same pixel data and Max/Min FP."""
    from dcmpipe.plugins import _philips_build as build
    from dcmpipe.plugins import _philips_write as write

    par_path, rec_path = asl_run["root"] / "run.PAR", asl_run["root"] / "run.REC"
    build.build(asl_run["run"], par_path, rec_path, tmp_path / "mapped.dcm")
    original = write.copy_frames
    monkeypatch.setattr(write, "_mapped", lambda fd, length: None)
    monkeypatch.setattr(write, "copy_frames", lambda *args: original(*args, chunk_bytes=50_000))  # many chunks
    build.build(asl_run["run"], par_path, rec_path, tmp_path / "read.dcm")
    assert _elements(tmp_path / "mapped.dcm") == _elements(tmp_path / "read.dcm")


def test_files_the_lean_reader_leaves_to_pydicom_give_the_same_file(asl_run, tmp_path):
    """Classic files in another character set are read by pydicom (then re-encoded and walked): same file."""
    import pydicom

    run = tmp_path / "utf8"
    run.mkdir()
    for path in sorted(asl_run["run"].iterdir()):
        ds = pydicom.dcmread(path)
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.save_as(run / path.name)
    par_path, rec_path = asl_run["root"] / "run.PAR", asl_run["root"] / "run.REC"
    assert run_cli("dcms2e", "-q", "-o", tmp_path / "lean.dcm", "--par", par_path, asl_run["run"]).returncode == 0
    done = run_cli("dcms2e", "-q", "-o", tmp_path / "pydicom.dcm", "--par", par_path, run)
    assert done.returncode == 0, done.stderr
    lean = [e for e in _elements(tmp_path / "lean.dcm") if e[0][-1:] != (0x00080005,)]
    other = [e for e in _elements(tmp_path / "pydicom.dcm") if e[0][-1:] != (0x00080005,)]
    assert lean == other


def test_implicit_vr_classic_files_are_refused_in_one_line(asl_run, tmp_path):
    import pydicom

    run = tmp_path / "implicit"
    run.mkdir()
    for path in sorted(asl_run["run"].iterdir())[:2]:
        ds = pydicom.dcmread(path)
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
        ds.save_as(run / path.name, implicit_vr=True, little_endian=True)
    from dcmpipe.plugins._philips_build import PhilipsError, build

    with pytest.raises(PhilipsError, match="has no VR .an implicit VR file"):
        build(run, asl_run["root"] / "run.PAR", asl_run["root"] / "run.REC", tmp_path / "out.dcm")
    assert not (tmp_path / "out.dcm").exists()


def test_classic_files_laid_out_alike_read_as_the_lean_reader_reads_them(asl_run, tmp_path):
    """Files whose bytes outside values equal a walked file's get its element locations: the same data sets."""
    import shutil

    from dcmpipe.enhanced import read_dataset
    from dcmpipe.plugins._philips_lean import read_series

    run = tmp_path / "run"
    shutil.copytree(asl_run["run"], run)
    paths = sorted(run.iterdir())
    # One file with a value of another length (another layout), one with another character set value.
    data = bytearray(paths[5].read_bytes())
    at = data.index(b"WIP SOURCE - 3DpCASL")
    data[at:at + 20] = b"WIP SOURCE - 3DpCASX"
    paths[5].write_bytes(bytes(data))
    data = bytearray(paths[7].read_bytes())
    at = data.index(b"ISO_IR 100")
    data[at:at + 10] = b"ISO_IR 192"
    paths[7].write_bytes(bytes(data))

    def flat(ds, where=()):
        out = []
        for el in ds:
            if el.VR == "SQ":
                out.append((where + (el.tag,), len(el.value)))
                for k, item in enumerate(el.value):
                    out += flat(item, where + (el.tag, k))
            else:
                value = el.value
                out.append((where + (el.tag,), el.VR, el.raw, bytes(value) if isinstance(value, memoryview)
                            else repr(value)))
        return out

    layouts = set()
    for (path, ds, data, layout), reference in zip(read_series(paths), paths):
        expected = read_dataset(reference, pixels=True, lean=True)
        assert type(ds) is type(expected), path
        if hasattr(expected, "file_meta") and type(expected).__name__ == "LeanDataset":
            assert flat(ds) == flat(expected), path
            assert flat(ds.file_meta) == flat(expected.file_meta), path
            assert data == path.read_bytes()
            layouts.add(layout)
    assert len(layouts) >= 2  # control and label files differ in the length of (2005,1429)


def _par_variants(text: str) -> dict:
    """Variants of a console PAR that the two readings must read alike (or refuse alike)."""
    import re

    lines = text.split("\r\n")
    image = [k for k, line in enumerate(lines) if line.strip()[:1].isdigit()]

    def changed(function, rows=None):
        out = list(lines)
        for k in (image if rows is None else rows):
            out[k] = function(out[k])
        return "\r\n".join(out)

    def field(k, value):
        def change(line):
            parts = line.split()
            parts[k] = value
            return " ".join(parts)
        return change

    def in_place(k, value):  # the same width: the lines stay a table
        def change(line):
            token = list(re.finditer(r"\S+", line))[k]
            width = token.end() - max(token.start() - 1, 0)
            return line[:token.end() - width] + value.rjust(width) + line[token.end():]
        return change

    return {
        "as is": text,
        "LF": text.replace("\r\n", "\n"),
        "single spaces": changed(lambda line: " ".join(line.split())),
        "tabs": changed(lambda line: line.replace("  ", "\t ")),
        "negative zero": changed(field(19, "-0.00"), image[:3]),
        "negative int": changed(field(14, "-12"), image[:2]),
        "exponent in a float": changed(field(11, "1.5e+00"), image[:1]),
        "decimal in an int": changed(field(0, "3.0"), image[:1]),
        "enumeration name": changed(field(43, "DIFFUSION"), image[:1]) if len(lines[image[0]].split()) > 43 else text,
        "nan": changed(field(10, "nan"), image[:1]),
        "extra column": changed(lambda line: line + " 7"),
        "short line": changed(lambda line: " ".join(line.split()[:-2]), image[1:2]),
        "letters": changed(field(5, "x"), image[:1]),
        "comment among images": "\r\n".join(lines[:image[1]] + ["# a comment"] + lines[image[1]:]),
        "blank among images": "\r\n".join(lines[:image[1]] + [""] + lines[image[1]:]),
        "dot only": changed(field(12, "."), image[:1]),
        "table: negative zero": changed(in_place(19, "-0.00"), image[:3]),
        "table: negative numbers": changed(in_place(14, "-12"), image[::2]),
        "table: decimals in an int column": changed(in_place(0, "3.0"), image[:4]),
        "table: no fraction digits": changed(in_place(20, "12."), image[:2]),
        "table: leading dot": changed(in_place(21, "-.5"), image[:2]),
        "table: exponent": changed(in_place(12, "1e-3"), image[:2]),
        "table: plus sign": changed(in_place(2, "+1"), image[:2]),
        "table: minus alone": changed(in_place(3, "-"), image[:1]),
        "table: minus inside": changed(in_place(15, "1-2"), image[:1]),
        "table: two dots": changed(in_place(22, "1.2.3"), image[:1]),
        "wide number": changed(field(6, re.sub(r"\d", "9", "1" * 20)), image[:1]),
    }


def _read_both(text: str):
    from dcmpipe.plugins import _philips_par as par

    out = []
    for fast in (True, False):
        try:
            parsed = par.parse_par(text, "x.PAR", fast=fast)
            out.append((parsed.version, parsed.general, parsed.dataset_name,
                        [{k: (type(v).__name__, repr(v)) for k, v in r.items()} for r in parsed.records]))
        except (ValueError, ArithmeticError) as exc:
            out.append((type(exc).__name__, str(exc)))
    return out


def test_par_read_as_columns_equals_the_line_by_line_reading():
    """The numpy reading of long PARs gives the records (types, -0.0 included) or the error of the plain one."""
    from dcmpipe.plugins import _philips_par as par

    pars = sorted((SHARED / "philips").rglob("*.PAR")) + sorted((SHARED / "corpus").rglob("*.PAR"))
    if not pars:
        pytest.skip("no PAR files in ../shared")
    for path in pars:
        fast, slow = _read_both(path.read_bytes().decode("latin-1"))
        assert fast == slow, path
    text = (SHARED / "philips" / "nitest-balls1" / "PARREC" / "DTI.PAR").read_bytes().decode("latin-1")
    for name, variant in _par_variants(text).items():
        fast, slow = _read_both(variant)
        assert fast == slow, name
    # The file's bytes (read_par) and its text read alike, and a long PAR goes the numpy way by itself.
    parsed = par.parse_par(text.encode("latin-1"), "x")
    assert parsed.records == par.parse_par(text, "x", fast=False).records


def test_builder_keywords_match_the_dictionary():
    pydicom = pytest.importorskip("pydicom")
    from dcmpipe.plugins._philips_write import KEYWORDS

    for keyword, (tag, vr) in KEYWORDS.items():
        assert pydicom.datadict.tag_for_keyword(keyword) == tag, keyword
        assert pydicom.datadict.dictionary_VR(tag) == vr or keyword == "PixelData", keyword


@pytest.mark.parametrize("durable", [False, True])
def test_fsync_flushes_the_file_and_changes_nothing_else(asl_run, tmp_path, monkeypatch, durable):
    """Default: the file gets its name whole but unflushed; --fsync flushes it and its folder first.
    The file is the same either way."""
    from dcmpipe.plugins import _philips_build as build

    par_path, rec_path = asl_run["root"] / "run.PAR", asl_run["root"] / "run.REC"
    build.build(asl_run["run"], par_path, rec_path, tmp_path / "reference.dcm")
    flushed = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: flushed.append(os.readlink(f"/proc/self/fd/{fd}")) or real_fsync(fd))
    build.build(asl_run["run"], par_path, rec_path, tmp_path / "out.dcm", fsync=durable)
    assert _elements(tmp_path / "out.dcm") == _elements(tmp_path / "reference.dcm")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.dcm", "reference.dcm"]  # no temporary left
    if durable:
        assert any("out.dcm" in Path(p).name and p.endswith("dcmpipe-part") for p in flushed), flushed
        assert str(tmp_path) in flushed  # the folder: the name is on disk too
    else:
        assert flushed == []
    recipe = run_cli("dcms2e", "--print-recipe", *(["--fsync"] if durable else []), asl_run["run"]).stdout
    assert ("fsync = true" in recipe) == durable
