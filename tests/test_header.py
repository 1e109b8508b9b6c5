"""Tests for dcmpipe.header: the lean path must give exactly what pydicom gives."""

from __future__ import annotations

import functools
import gzip
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pydicom = pytest.importorskip("pydicom")
from pydicom.data import get_charset_files, get_testdata_file  # noqa: E402
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.sequence import Sequence  # noqa: E402

import dcmpipe.header as header_module  # noqa: E402
from dcmpipe.errors import NotDicomError  # noqa: E402
from dcmpipe.header import Header, _read_with_pydicom, is_dicom, read_header  # noqa: E402

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
TAGS = frozenset({
    0x0020000D, 0x0020000E, 0x00080018, 0x00080016,  # Study/Series/SOP Instance UID, SOP Class
    0x00080060, 0x00200010, 0x00200011, 0x00200013,  # Modality, Study ID, Series/Instance Number
    0x0008103E, 0x00081030, 0x00100010, 0x00100020,  # Series/Study Description, Patient Name/ID
    0x00080020, 0x00200032, 0x00200037, 0x00180086,  # Study Date, IPP, IOP, Echo Numbers
    0x00200100, 0x00181060, 0x00181090, 0x00200105,  # Temporal Position Id., Trigger Time, ...
    0x001021B0, 0x00280030, 0x00280010,  # Additional Patient History, Pixel Spacing, Rows
    0x20010010, 0x2001100A,  # Philips private creator, Slice Number MR
})
EXPLICIT_LE = "1.2.840.10008.1.2.1"
MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"


def _corpus_params():
    if not CORPUS.is_dir():
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"no shared corpus at {CORPUS}"))]
    files = sorted(p for p in CORPUS.rglob("*") if p.is_file())
    return [pytest.param(p, id=str(p.relative_to(CORPUS))) for p in files]


def outcome(read, path, tags):
    """What a reader makes of a file, comparable with ``==``: the error reason, or
    the values (sequences only by presence), transfer syntax and SOP class."""
    try:
        header = read(path, tags)
    except NotDicomError as exc:
        return "NotDicomError", exc.reason
    assert isinstance(header, Header)
    values = {tag: "<SQ>" if isinstance(v, Sequence) else v for tag, v in header.items()}
    return values, header.transfer_syntax, header.sop_class_uid


@functools.lru_cache(maxsize=None)
def every_plain_tag(path) -> frozenset | None:
    """Every top-level non-sequence tag pydicom finds before Pixel Data."""
    try:
        header = _read_with_pydicom(path)
    except NotDicomError:
        return None
    return frozenset(tag for tag, value in header.items() if not isinstance(value, Sequence))


# --- the shared corpus: both paths on every file ------------------------------

@pytest.mark.parametrize("tag_set", ["realistic", "None", "every element"])
@pytest.mark.parametrize("path", _corpus_params())
def test_corpus_lean_path_matches_pydicom(path, tag_set):
    tags = {"realistic": TAGS, "None": None, "every element": every_plain_tag(path)}[tag_set]
    if tag_set == "every element" and tags is None:
        tags = TAGS  # not DICOM: both must still refuse it
    assert outcome(read_header, path, tags) == outcome(_read_with_pydicom, path, tags)


@pytest.mark.skipif(not CORPUS.is_dir(), reason=f"no shared corpus at {CORPUS}")
def test_corpus_lean_path_reads_most_explicit_little_endian_files():
    lean, explicit = [], []
    for path in sorted(p for p in CORPUS.rglob("*.dcm") if p.is_file()):
        try:
            header = read_header(path, TAGS)
        except NotDicomError:
            continue
        syntax = header.transfer_syntax or ""
        if syntax == EXPLICIT_LE or syntax.startswith("1.2.840.10008.1.2.4."):
            explicit.append(path)
            lean += [path] if header.fast else []
    assert len(lean) >= 0.85 * len(explicit), sorted(set(explicit) - set(lean))
    # an undefined-length sequence and encapsulated icon pixel data are skipped
    for name in ("nibabel/philips_mprage.dcm", "nibabel/slicethickness_empty_string.dcm"):
        assert read_header(CORPUS / name, TAGS).fast, name


# --- pydicom's bundled files and files made here -----------------------------

@pytest.fixture(scope="module")
def mr_small() -> Path:
    return Path(get_testdata_file("MR_small.dcm"))


def test_mr_small_is_read_by_the_lean_path(mr_small):
    header = read_header(mr_small, TAGS)
    assert header.fast
    assert header.transfer_syntax == EXPLICIT_LE and header.sop_class_uid == MR_IMAGE
    assert header[0x00100010] == "CompressedSamples^MR1"
    assert header[0x00200013] == 1 and header[0x00280010] == 64
    assert header[0x00200032] == (-83.9063, -91.2, 6.6406)
    assert header[0x00280030] == (0.3125, 0.3125)
    assert 0x0008103E not in header  # absent tags are left out
    assert outcome(read_header, mr_small, TAGS) == outcome(_read_with_pydicom, mr_small, TAGS)


def test_all_tags_stop_before_pixel_data(mr_small):
    header = read_header(mr_small)
    assert header.fast and 0x7FE00010 not in header and 0xFFFCFFFC not in header
    assert header[0x00080008] == ("DERIVED", "SECONDARY", "OTHER")
    assert header[0x00080021] is None  # empty DA
    assert header[0x00101020] is None  # empty DS
    assert outcome(read_header, mr_small, None) == outcome(_read_with_pydicom, mr_small, None)


@pytest.mark.parametrize("name", ["MR_small_implicit.dcm", "MR_small_bigendian.dcm"])
def test_implicit_and_big_endian_give_the_same_values(mr_small, name):
    header = read_header(get_testdata_file(name), TAGS)
    assert not header.fast
    assert dict(header) == dict(read_header(mr_small, TAGS))


@pytest.mark.parametrize("name", ["CT_small.dcm", "JPEG2000.dcm", "rtplan.dcm", "SC_rgb_rle.dcm"])
def test_bundled_files_every_element(name):
    path = get_testdata_file(name)
    tags = every_plain_tag(path)
    assert outcome(read_header, path, tags) == outcome(_read_with_pydicom, path, tags)


def test_character_sets():
    x1 = read_header(get_charset_files("chrX1.dcm")[0], TAGS)  # ISO_IR 192: lean, UTF-8
    assert x1.fast and x1[0x00100010] == "Wang^XiaoDong=王^小東"
    russian = read_header(get_charset_files("chrRuss.dcm")[0], TAGS)  # ISO_IR 144: pydicom
    assert not russian.fast and russian[0x00100010] == "Люкceмбypг"


def test_wanted_sequence_comes_from_pydicom():
    path = get_testdata_file("CT_small.dcm")
    header = read_header(path, {0x00101002, 0x00100020})  # Other Patient IDs Sequence
    assert not header.fast and isinstance(header[0x00101002], Sequence)
    assert header[0x00100020] == "1CT1"


def test_skips_undefined_length_sequences(mr_small, tmp_path):
    ds = pydicom.dcmread(mr_small)
    inner = Dataset()
    inner.ReferencedSOPInstanceUID = "1.2.3"
    item = Dataset()
    item.ReferencedSOPClassUID = MR_IMAGE
    item.add_new(0x00081199, "SQ", Sequence([inner]))  # nested
    item[0x00081199].is_undefined_length = True
    item.is_undefined_length_sequence_item = True
    ds.ReferencedImageSequence = Sequence([item, Dataset()])  # (0008,1140): before the UIDs
    ds["ReferencedImageSequence"].is_undefined_length = True
    out = tmp_path / "sq.dcm"
    ds.save_as(out)
    assert b"\xff\xff\xff\xff" in out.read_bytes()
    header = read_header(out, TAGS)
    assert header.fast and header[0x0020000D] == ds.StudyInstanceUID
    assert outcome(read_header, out, TAGS) == outcome(_read_with_pydicom, out, TAGS)
    assert not read_header(out, {0x00081140}).fast  # wanted: pydicom builds it


def test_private_tags(tmp_path, mr_small):
    ds = pydicom.dcmread(mr_small)
    block = ds.private_block(0x2001, "Philips Imaging DD 001", create=True)
    block.add_new(0x0A, "IS", "7")
    block.add_new(0x0B, "FL", [1.5, 2.5])
    out = tmp_path / "private.dcm"
    ds.save_as(out)
    header = read_header(out, TAGS | {0x2001100B})
    assert header.fast
    assert header[0x20010010] == "Philips Imaging DD 001" and header[0x2001100A] == 7
    assert header[0x2001100B] == (1.5, 2.5)


def test_binary_file_objects(mr_small):
    data = mr_small.read_bytes()
    stream = io.BytesIO(data)
    stream.seek(100)  # read from the start whatever the position
    header = read_header(stream, TAGS)
    assert header.fast and header == read_header(mr_small, TAGS) and not stream.closed
    implicit = io.BytesIO(Path(get_testdata_file("MR_small_implicit.dcm")).read_bytes())
    assert read_header(implicit, TAGS) == header
    with pytest.raises(NotDicomError, match="<file object>: not a DICOM file"):
        read_header(io.BytesIO(b"hello" * 100), TAGS)
    with pytest.raises(NotDicomError, match="truncated DICOM header"):
        read_header(io.BytesIO(data[:500]), TAGS)
    with open(mr_small, "rb") as f:
        assert read_header(f, TAGS) == header and is_dicom(f)


# --- raw data sets, non-DICOM and damaged files ---------------------------------

def test_raw_data_set_without_meta_is_dicom(mr_small, tmp_path):
    ds = pydicom.dcmread(mr_small)
    ds.preamble, ds.file_meta = None, FileMetaDataset()
    out = tmp_path / "raw.dcm"
    ds.save_as(out, implicit_vr=True, little_endian=True, enforce_file_format=False)
    assert out.read_bytes()[:2] == b"\x08\x00" and is_dicom(out)
    header = read_header(out, TAGS)
    assert not header.fast and header.transfer_syntax is None
    assert dict(header) == dict(read_header(mr_small, TAGS))


def _error(path, tags=TAGS) -> str:
    with pytest.raises(NotDicomError) as lean:
        read_header(path, tags)
    with pytest.raises(NotDicomError) as reference:
        _read_with_pydicom(path, tags)
    assert lean.value.path == str(path) and lean.value.reason == reference.value.reason
    return lean.value.reason


def test_not_dicom_files(tmp_path, mr_small):
    text = tmp_path / "notes.txt"
    text.write_text("# PAR file\n. Patient name : x\n" * 20)
    assert _error(text) == "not a DICOM file" and not is_dicom(text)
    empty = tmp_path / "empty.dcm"
    empty.write_bytes(b"")
    assert _error(empty) == "empty file" and not is_dicom(empty)
    zipped = tmp_path / "mr.dcm.gz"
    zipped.write_bytes(gzip.compress(mr_small.read_bytes()))
    assert _error(zipped) == "not a DICOM file" and not is_dicom(zipped)
    assert _error(tmp_path) == "is a directory" and not is_dicom(tmp_path)
    assert _error(tmp_path / "missing.dcm") == "no such file"
    assert is_dicom(mr_small) and is_dicom(get_testdata_file("MR_small_implicit.dcm"))


def test_unreadable_file(tmp_path, mr_small, monkeypatch):
    locked = tmp_path / "locked.dcm"
    shutil.copy(mr_small, locked)
    locked.chmod(0)
    if os.access(locked, os.R_OK):  # root reads anyway: make open() refuse instead

        def refuse(file, *args, **kwargs):
            raise PermissionError(13, "Permission denied", str(file))

        monkeypatch.setattr(header_module, "open", refuse, raising=False)
    assert _error(locked) == "permission denied" and not is_dicom(locked)


def test_truncated_header(tmp_path, mr_small):
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(mr_small.read_bytes()[:500])
    assert _error(cut) == "truncated DICOM header"
    assert _error(cut, None) == "truncated DICOM header"


def test_truncated_anywhere_both_paths_agree(tmp_path, mr_small):
    data = mr_small.read_bytes()
    pixels = data.index(b"\xe0\x7f\x10\x00OW")
    cut = tmp_path / "cut.dcm"
    for size in range(0, pixels + 12, 11):
        cut.write_bytes(data[:size])
        for tags in (TAGS, None):
            reference = outcome(_read_with_pydicom, cut, tags)
            assert outcome(read_header, cut, tags) == reference, size


def test_truncated_inside_pixel_data_is_fine(tmp_path, mr_small):
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(mr_small.read_bytes()[:-3000])
    header = read_header(cut, TAGS)
    assert header.fast and header == read_header(mr_small, TAGS)
    assert read_header(cut) == read_header(mr_small)


def test_import_does_not_load_pydicom():
    code = "import sys, dcmpipe.header; sys.exit('pydicom' in sys.modules)"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    assert subprocess.run([sys.executable, "-c", code], env=env).returncode == 0
