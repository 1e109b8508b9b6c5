"""dcm2par: Philips Enhanced MR -> PAR/REC, checked against the console's own exports."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import DATA, SHARED, run_cli

PHILIPS = DATA / "philips"
BALLS = SHARED / "philips" / "nitest-balls1"
PAIRS = ["T1", "T2", "T2-interleaved", "T2_", "DTI"]


def _without_dataset_name(data: bytes) -> list[bytes]:
    return [line for line in data.split(b"\r\n") if not line.startswith(b"# Dataset name:")]


def _pair(name: str) -> tuple[Path, Path]:
    """(Enhanced DICOM, console PAR) for one scan; the bundled copy first, else ../shared."""
    if (PHILIPS / f"{name}.dcm").exists():
        return PHILIPS / f"{name}.dcm", PHILIPS / f"{name}.PAR"
    if not (BALLS / "DICOM" / f"{name}.dcm").exists():
        pytest.skip(f"nitest-balls1 not found at {BALLS}")
    return BALLS / "DICOM" / f"{name}.dcm", BALLS / "PARREC" / f"{name}.PAR"


@pytest.mark.parametrize("name", PAIRS)
def test_par_and_rec_are_byte_identical_to_the_console(tmp_path, name):
    dicom, console_par = _pair(name)
    result = run_cli("dcm2par", "-q", "-o", tmp_path, dicom)
    assert result.returncode == 0, result.stderr
    ours = (tmp_path / f"{name}.PAR").read_bytes()
    theirs = console_par.read_bytes()
    # Everything but the console's export path, line ends included.
    assert ours.count(b"\r\n") == ours.count(b"\n") and ours.endswith(b"\r\n")
    assert _without_dataset_name(ours) == _without_dataset_name(theirs)
    assert f"# Dataset name: {tmp_path / name}".encode() in ours
    assert (tmp_path / f"{name}.REC").read_bytes() == console_par.with_suffix(".REC").read_bytes()


@pytest.mark.parametrize("name", ["T2_", "DTI", "T1"])
def test_nibabel_reads_ours_as_it_reads_the_consoles(tmp_path, name):
    nib = pytest.importorskip("nibabel")
    import numpy as np

    dicom, console_par = _pair(name)
    assert run_cli("dcm2par", "-q", "-o", tmp_path, dicom).returncode == 0
    ours, theirs = nib.load(tmp_path / f"{name}.PAR"), nib.load(console_par)
    assert ours.shape == theirs.shape
    assert np.array_equal(ours.get_fdata(), theirs.get_fdata())
    assert np.allclose(ours.affine, theirs.affine)
    for scaling in ("dv", "fp"):
        assert np.array_equal(ours.header.get_data_scaling(scaling)[0], theirs.header.get_data_scaling(scaling)[0])


@pytest.mark.parametrize("version", ["4", "4.1"])
def test_older_versions_load_in_nibabel_with_the_same_data(tmp_path, version):
    nib = pytest.importorskip("nibabel")
    import numpy as np

    dicom, console_par = _pair("T2_")
    assert run_cli("dcm2par", "-q", "--version", version, "-o", tmp_path, dicom).returncode == 0
    text = (tmp_path / "T2_.PAR").read_bytes()
    assert f"Research image export tool     V{version}\r\n".encode() in text
    assert (b"Number of label types" in text) is False
    ours, theirs = nib.load(tmp_path / "T2_.PAR"), nib.load(console_par)
    assert np.array_equal(ours.dataobj.get_unscaled(), theirs.dataobj.get_unscaled())
    # V4 prints slopes with fewer decimals (%6.3f): scaled values agree to that precision
    assert np.allclose(ours.get_fdata(), theirs.get_fdata(), rtol=2e-3)
    assert np.allclose(ours.affine, theirs.affine, atol=0.5)  # angulations with one decimal


def test_dcm2niix_converts_ours(tmp_path):
    if shutil.which("dcm2niix") is None:
        pytest.skip("dcm2niix not installed")
    nib = pytest.importorskip("nibabel")
    import numpy as np

    dicom, console_par = _pair("T2_")
    assert run_cli("dcm2par", "-q", "-o", tmp_path / "par", dicom).returncode == 0
    for folder, par in (("ours", tmp_path / "par" / "T2_.PAR"), ("theirs", console_par)):
        (tmp_path / folder).mkdir()
        done = subprocess.run(["dcm2niix", "-b", "n", "-o", tmp_path / folder, "-f", "out", par],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
    ours, theirs = nib.load(tmp_path / "ours" / "out.nii"), nib.load(tmp_path / "theirs" / "out.nii")
    assert ours.shape == theirs.shape == (80, 80, 10, 2)
    assert np.array_equal(ours.get_fdata(), theirs.get_fdata())
    assert np.allclose(ours.affine, theirs.affine)


def _modified(tmp_path: Path, change) -> Path:
    import pydicom

    ds = pydicom.dcmread(PHILIPS / "T2_.dcm")
    change(ds)
    out = tmp_path / "changed.dcm"
    ds.save_as(out)
    return out


def _drop_private_frames(ds):
    for frame in ds.PerFrameFunctionalGroupsSequence:
        for tag in [t for t in frame.keys() if t.group == 0x2005]:
            del frame[tag]


@pytest.mark.parametrize("change, message", [
    (lambda ds: setattr(ds, "Manufacturer", "ACME"), "not a Philips file (Manufacturer 'ACME')"),
    (lambda ds: setattr(ds, "SOPClassUID", "1.2.840.10008.5.1.4.1.1.4"), "not Enhanced MR Image Storage"),
    (_drop_private_frames, "without private per-frame group (2005,140F)"),
    (lambda ds: ds.__delitem__(0x2001105F), "without MR Stack Sequence (2001,105F)"),
])
def test_refuses_what_it_cannot_convert_in_one_line(tmp_path, change, message):
    bad = _modified(tmp_path, change)
    result = run_cli("dcm2par", "-o", tmp_path / "out", bad)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if message in line]
    assert errors and str(bad) in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_not_dicom_and_stripped_enhanced_files_fail_cleanly(tmp_path):
    text = tmp_path / "notes.dcm"
    text.write_text("not DICOM")
    stripped = DATA / "emri_small.dcm"  # an "Enhanced MR" without functional groups (pydicom-data)
    result = run_cli("dcm2par", "-o", tmp_path / "out", text, stripped)
    assert result.returncode == 1
    assert f"{text}: " in result.stderr and "Traceback" not in result.stderr
    assert f"{stripped}: export 'dcm2par': not a Philips file" in result.stderr


def test_never_overwrites_a_different_par(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "T2_.PAR").write_bytes(b"someone else's PAR\r\n")
    result = run_cli("dcm2par", "-o", out, PHILIPS / "T2_.dcm")
    assert result.returncode == 1
    assert "a different file already exists" in result.stderr
    assert not (out / "T2_.REC").exists()
    assert (out / "T2_.PAR").read_bytes() == b"someone else's PAR\r\n"
    # the same conversion twice is fine: identical files count as done
    assert run_cli("dcm2par", "-q", "-o", tmp_path / "again", PHILIPS / "T2_.dcm").returncode == 0
    assert run_cli("dcm2par", "-q", "-o", tmp_path / "again", PHILIPS / "T2_.dcm").returncode == 0


def test_recipe_step_with_a_route_and_a_name(tmp_path):
    from dcmpipe.testing import run

    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(PHILIPS / "T2_.dcm", src / "scan.dcm")
    recipe = {"step": [{"read": "files", "path": [str(src)], "settle": 0},
                       {"export": "dcm2par", "outdir": str(tmp_path / "par")}]}
    summary = run(recipe, base_dir=tmp_path)
    assert summary.exit_code == 0 and summary.written == 1
    assert (tmp_path / "par" / "scan.REC").read_bytes() == (PHILIPS / "T2_.REC").read_bytes()


def test_print_recipe_and_help():
    result = run_cli("dcm2par", "--print-recipe", "-o", "out", PHILIPS / "T2_.dcm")
    assert result.returncode == 0
    assert 'export = "dcm2par"' in result.stdout and 'version = "4.2"' in result.stdout
    assert "Examples:" in run_cli("dcm2par", "--help").stdout


def test_fast_reader_gives_the_pydicom_records():
    """The lean per-frame reader (large files) and the pydicom path agree on every value of every frame."""
    from dcmpipe.plugins import _philips_dicom as dicom
    from dcmpipe.plugins import _philips_fast as fast

    files = [PHILIPS / "T2_.dcm"] + [BALLS / "DICOM" / f"{n}.dcm" for n in PAIRS if (BALLS / "DICOM" / f"{n}.dcm").exists()]
    for path in files:
        quick = fast.read_fast(path)
        assert quick is not None, path
        head, values, offset = quick
        assert "pydicom" not in type(head).__module__, "the top level should be read without pydicom"
        ds = dicom.read_header(path)
        assert fast.records_from_values(head, values, path) == dicom.frame_records(ds, path), path
        assert offset == dicom.pixel_data_offset(path, dicom.frame_bytes(ds) * int(ds.NumberOfFrames))
        assert dicom.general_info(head) == dicom.general_info(ds), path


def test_walk_and_search_paths_agree(monkeypatch):
    """The vectorised walk over same-layout frame items and the tag search find the same values."""
    from dcmpipe.plugins import _philips_fast as fast

    files = [PHILIPS / "T2_.dcm"] + [BALLS / "DICOM" / f"{n}.dcm" for n in PAIRS if (BALLS / "DICOM" / f"{n}.dcm").exists()]
    original = fast._walk_columns
    walked = []
    monkeypatch.setattr(fast, "_walk_columns", lambda *args: walked.append(original(*args)) or walked[-1])
    def plain(values):
        return {name: col.tolist() for name, col in values.items()}

    for path in files:
        walked.clear()
        by_walk = plain(fast.read_fast(path)[1])
        if path.name == "T2_.dcm":
            assert walked and walked[0] is not None, "the walk should handle a plain Philips file"
        monkeypatch.setattr(fast, "_walk_columns", lambda *args: None)  # the tag search
        assert plain(fast.read_fast(path)[1]) == by_walk, path
        monkeypatch.setattr(fast, "_walk_columns", lambda *args: walked.append(original(*args)) or walked[-1])


def test_bulk_formatting_and_order_equal_the_line_by_line_rules():
    """PAR lines formatted column by column, and the row order, equal one ``%`` per record and the sort key."""
    from dcmpipe.plugins import _philips_dicom as dicom
    from dcmpipe.plugins import _philips_fast as fast
    from dcmpipe.plugins import _philips_par as par

    files = [PHILIPS / "T2_.dcm"] + [BALLS / "DICOM" / f"{n}.dcm" for n in PAIRS if (BALLS / "DICOM" / f"{n}.dcm").exists()]
    for path in files:
        ds, records, _ = dicom.load(path)
        # Signed zeros and NaN must not be merged with 0.0 by the per-value forms.
        records[0]["offcentre_ap"], records[-1]["offcentre_ap"] = -0.0, 0.0
        records[0]["diffusion_fh"] = float("nan")
        mode3d = str(dicom.pget(ds, dicom.MR001, 0x6F, "")).strip().upper() == "3D"
        columns = {n: fast.Col.of([r[n] for r in records]) for n in par.COLUMNS}
        expected = sorted(range(len(records)), key=lambda i: par.row_sort_key(mode3d, records[i]))
        order = fast.row_order(mode3d, columns)
        assert order.tolist() == expected, path
        columns["index"] = None  # the row number
        for version in par.VERSIONS:
            rows = [dict(records[frame], index=row) for row, frame in enumerate(order.tolist())]
            assert fast.image_lines(columns, order, version) == list(map(par.line_formatter(version), rows)), path


@pytest.mark.parametrize("mapped", [True, False])
def test_rec_frames_reordered_in_chunks(tmp_path, mapped):
    """Frames put in any order a few at a time (views of the mapped file, or read into a buffer; gathered
    by writev) equal the frames in that order."""
    from dcmpipe.plugins import _philips_dicom as dicom

    source = tmp_path / "frames.bin"
    frames = [bytes([n]) * 6 for n in range(10)]
    source.write_bytes(b"HEAD" + b"".join(frames) + b"TAIL")
    for order in ([3, 4, 5, 0, 9, 1, 2], list(range(10)), [9, 8, 7, 6, 5, 4, 3, 2, 1, 0], [2, 2, 5], [7]):
        expected = b"".join(frames[n] for n in order)
        for chunk_bytes in (6, 18, 1 << 20):  # one frame, three frames, everything per chunk
            target = tmp_path / f"r{chunk_bytes}.REC"
            dicom._streamed_file(target, dicom.rec_chunks(source, 4, 6, order, chunk_bytes, mapped))
            assert target.read_bytes() == expected, (order, chunk_bytes)
            target.unlink()
    with pytest.raises(dicom.PhilipsError, match="ends early"):
        dicom._streamed_file(tmp_path / "c.REC", dicom.rec_chunks(source, 4, 6, [11], mapped=mapped))
    assert not (tmp_path / "c.REC").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_converting_a_philips_file_needs_no_pydicom(tmp_path):
    """A plain Philips Enhanced MR file is converted by the lean reader: pydicom (0.3 s to import) stays unloaded."""
    import sys

    code = ("import sys\nfrom dcmpipe.cli import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    print('EXIT', e.code)\n"
            "print('PYDICOM', 'pydicom' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code, "dcm2par", "-q", "-o", str(tmp_path), str(PHILIPS / "T2_.dcm")],
                            capture_output=True, text=True)
    assert "PYDICOM False" in result.stdout, result.stdout + result.stderr
    assert (tmp_path / "T2_.REC").read_bytes() == (PHILIPS / "T2_.REC").read_bytes()


def test_preallocated_output_has_exactly_what_was_written(tmp_path):
    """A size hint preallocates the file; a wrong hint never leaves a tail of zeros or cuts data."""
    from dcmpipe.plugins import _philips_dicom as dicom

    for hint in (None, 10, 6, 1000):
        tmp = dicom._write_temp(tmp_path / "x.REC", [b"abc", [memoryview(b"def"), memoryview(b"ghij")]], hint)
        assert tmp.read_bytes() == b"abcdefghij", hint
        tmp.unlink()


@pytest.mark.parametrize("durable", [False, True])
def test_fsync_flushes_both_files_and_changes_nothing_else(tmp_path, monkeypatch, durable):
    """Default: the files are renamed into place whole but not flushed; --fsync flushes both files and
    the folder before the command returns.  The files are the same either way."""
    import os

    from dcmpipe.plugins import _philips_dicom as dicom

    flushed = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: flushed.append(os.readlink(f"/proc/self/fd/{fd}")) or real_fsync(fd))
    dicom.convert(PHILIPS / "T2_.dcm", tmp_path, "T2_", fsync=durable)
    assert (tmp_path / "T2_.REC").read_bytes() == (PHILIPS / "T2_.REC").read_bytes()
    assert _without_dataset_name((tmp_path / "T2_.PAR").read_bytes()) == \
        _without_dataset_name((PHILIPS / "T2_.PAR").read_bytes())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["T2_.PAR", "T2_.REC"]  # no temporary left
    if durable:
        names = [Path(p).name for p in flushed]
        assert any(n.endswith("dcmpipe-part") and "T2_.REC" in n for n in names), names
        assert any(n.endswith("dcmpipe-part") and "T2_.PAR" in n for n in names), names
        assert str(tmp_path) in flushed  # the folder: the new names are on disk too
    else:
        assert flushed == []
    recipe = run_cli("dcm2par", "--print-recipe", *(["--fsync"] if durable else []), PHILIPS / "T2_.dcm").stdout
    assert ("fsync = true" in recipe) == durable


def test_walk_finds_variable_elements_the_sample_missed(monkeypatch):
    """The walk learns which elements vary in length from a sample of frames; one it missed is found by the
    walk itself, with the same values."""
    from dcmpipe.plugins import _philips_fast as fast

    def plain(values):
        return {name: col.tolist() for name, col in values.items()}

    path = PHILIPS / "T2_.dcm"
    sampled = plain(fast.read_fast(path)[1])
    walked = []
    original = fast._walk_columns
    monkeypatch.setattr(fast, "_variable_steps", lambda *args: set())  # as if every frame looked like frame 1
    monkeypatch.setattr(fast, "_walk_columns", lambda *args: walked.append(original(*args)) or walked[-1])
    assert plain(fast.read_fast(path)[1]) == sampled
    assert walked[0] is not None, "the walk should have found the variable elements itself"


def test_walk_refuses_a_frame_whose_element_is_not_where_frame_1_has_it(tmp_path, monkeypatch):
    """An element read from every frame is checked in every frame: one frame with another element there
    sends the file to the tag search, which reads the frames that do have it."""
    import struct

    from dcmpipe.plugins import _philips_fast as fast

    data = bytearray((PHILIPS / "T2_.dcm").read_bytes())
    in_stack = struct.pack("<HH", 0x0020, 0x9057) + b"UL"
    places = [i for i in range(len(data)) if data.startswith(in_stack, i)]
    assert len(places) == 20  # one per frame
    data[places[7] + 2:places[7] + 4] = struct.pack("<H", 0x9058)  # frame 8: another element, same size
    broken = tmp_path / "T2_.dcm"
    broken.write_bytes(bytes(data))
    walked = []
    original = fast._walk_columns
    monkeypatch.setattr(fast, "_walk_columns", lambda *args: walked.append(original(*args)) or walked[-1])
    sample = fast._variable_steps  # a sample of frames that misses frame 8 (as in a large file)
    monkeypatch.setattr(fast, "_variable_steps", lambda region, starts, steps: sample(region, starts[:7], steps))
    values = fast.read_fast(broken)[1]
    assert walked == [None]
    in_stack_values = values["in_stack"].tolist()
    assert in_stack_values[7] is None and None not in in_stack_values[:7] + in_stack_values[8:]


def test_a_value_read_after_the_rec_started_is_checked_in_every_frame(tmp_path, monkeypatch):
    """Values the row order does not need are read while the REC is written, each checked in every frame
    when it is first used: a frame with another element at that place gets the tag search's values."""
    import struct

    from dcmpipe.plugins import _philips_fast as fast

    data = bytearray((PHILIPS / "T2_.dcm").read_bytes())
    thickness = struct.pack("<HH", 0x0018, 0x0050) + b"DS"
    places = [i for i in range(len(data)) if data.startswith(thickness, i)]
    start = data.find(fast.PFG)
    places = [i for i in places if i > start]
    assert len(places) == 40  # twice per frame: pixel measures and the private copy
    data[places[15] + 2:places[15] + 4] = struct.pack("<H", 0x0051)  # frame 8's private copy
    broken = tmp_path / "T2_.dcm"
    broken.write_bytes(bytes(data))

    def plain(values):
        return {name: col.tolist() for name, col in values.items()}

    walked = []
    original = fast._walk_columns
    monkeypatch.setattr(fast, "_walk_columns", lambda *args: walked.append(original(*args)) or walked[-1])
    sample = fast._variable_steps  # a sample of frames that misses frame 8 (as in a large file)
    monkeypatch.setattr(fast, "_variable_steps", lambda region, starts, steps: sample(region, starts[:7], steps))
    by_walk = plain(fast.read_fast(broken)[1])
    assert walked[0] is not None  # the row order's values are fine: the walk went on
    monkeypatch.setattr(fast, "_walk_columns", lambda *args: None)
    assert by_walk == plain(fast.read_fast(broken)[1])  # the same values as the tag search finds
    assert by_walk["p_thickness"][7] is None and None not in by_walk["p_thickness"][:7]


@pytest.mark.parametrize("positional", [False, True])
def test_gathered_write_finishes_a_short_write(tmp_path, monkeypatch, positional):
    """writev/pwritev may write less than asked (a full disk, a signal): the rest still goes out, in place."""
    import os

    from dcmpipe.plugins import _philips_dicom as dicom

    real_writev, real_pwritev = os.writev, os.pwritev
    # Each call writes all but the last byte of its first buffer.
    monkeypatch.setattr(os, "writev", lambda fd, bufs: real_writev(fd, [bufs[0][:-1]]))
    monkeypatch.setattr(os, "pwritev", lambda fd, bufs, at: real_pwritev(fd, [bufs[0][:-1]], at))
    parts = [memoryview(b"abc"), memoryview(b"defg"), memoryview(b"hi")]
    path = tmp_path / "out"
    path.write_bytes(b"0123456789012")
    fd = os.open(path, os.O_WRONLY)
    try:
        if not positional:
            os.lseek(fd, 2, os.SEEK_SET)
        assert dicom.write_gathered(fd, parts, 2 if positional else None) == 9
    finally:
        os.close(fd)
    assert path.read_bytes() == b"01abcdefghi12"
