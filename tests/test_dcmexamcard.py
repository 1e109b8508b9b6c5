"""dcmexamcard: ExamCards and blob texts from real Philips Raw Data Storage objects."""

from __future__ import annotations

import base64
import gzip
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conftest import run_cli

HERE = Path(__file__).resolve().parent
DATA = HERE / "data" / "examcard"
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
ENH = SHARED / "philips" / "dcm_qa_philips_enh" / "In" / "enh"
EXAMCARD_RAW = ENH / "104165610_ExamCard_Raw.dcm.gz"
BALLS_CARD = SHARED / "philips" / "nitest-balls1" / "cards" / "test_samples.ExamCard"
MR_SMALL = SHARED / "corpus" / "pydicom" / "MR_small.dcm"


def gunzip(src: Path, dst: Path) -> Path:
    dst.write_bytes(gzip.decompress(src.read_bytes()))
    return dst


@pytest.fixture
def series_raw(tmp_path) -> Path:
    return gunzip(DATA / "2101_WIP_fcMRI_Raw.dcm.gz", tmp_path / "XX_0011")


def needs(path: Path):
    if not path.exists():
        pytest.skip(f"{path} is absent (the shared Philips data is not on this machine)")


def parse_ours(text: str) -> dict[str, list[tuple]]:
    blocks, current = {}, None
    for line in text.splitlines():
        m = re.match(r"=== series \S+ .*?: (\S+) \(", line)
        if m:
            current = blocks.setdefault(m.group(1), [])
            continue
        m = re.match(r"(\S+)\s+(float|int|enum|string)\s+(\d+)  (.*)$", line)
        if m and current is not None:
            current.append(m.groups())
    return blocks


def parse_reference(text: str) -> dict[str, list[tuple]]:
    """The data set's own dumps: '-------------BLOCK', then 'name24 <TAB>type:T size: N values: V'."""
    blocks, current = {}, None
    for line in text.split("\r\n"):
        if line.startswith("-------------"):
            current = blocks.setdefault(line[13:], [])
        elif current is not None and "\ttype:" in line:
            m = re.match(r"(.{24}) \ttype:(\S+)\s+size:\s*(\d+) values: ?(.*)$", line, re.S)
            current.append(m.groups())
    return blocks


REFERENCES = [  # (Raw Data Storage object, the data set's text dump of it, parameters compared)
    (DATA / "2101_WIP_fcMRI_Raw.dcm.gz", DATA / "fcMRI.txt.gz", 2815),
    (ENH / "1903_WIP_SOURCE_-_3DpCASL_Raw.dcm.gz", ENH.parent / "xx_protocols" / "SOURCE_3DpCASL.txt", None),
]


@pytest.mark.parametrize("raw_gz, dump, expected", REFERENCES, ids=["fcMRI", "SOURCE_3DpCASL"])
def test_parameter_blocks_match_the_reference_dump(raw_gz, dump, expected, tmp_path):
    needs(raw_gz)
    needs(dump)
    raw = gunzip(raw_gz, tmp_path / "XX_raw")
    result = run_cli("dcmexamcard", "-o", tmp_path / "out", raw)
    assert result.returncode == 0, result.stderr
    ours = parse_ours(result.stdout)
    text = dump.read_bytes()
    reference = parse_reference((gzip.decompress(text) if dump.suffix == ".gz" else text).decode("latin-1"))
    # The reference tool read the empty PDF_PRESCAN_COIL_PARS blob from the next blob's bytes: not comparable.
    compared = [b for b in reference if b != "PDF_PRESCAN_COIL_PARS"]
    assert compared == ["PDF_EXAM_PARS", "PDF_CONTROL_SCAN_PARS", "PDF_CONTROL_RECON_PARS",
                        "PDF_CONTROL_GEN_PARS", "PDF_CONTROL_PREP_PARS", "PDF_HARDWARE_PARS"]
    checked = 0
    for block in compared:
        assert len(ours[block]) == len(reference[block]), block
        for (name, kind, count, values), (rname, rkind, rcount, rvalues) in zip(ours[block], reference[block]):
            assert name[:24] == rname.rstrip(" ") or name[:24] == rname, (block, name, rname)
            assert (kind, count) == (rkind, rcount), (block, name)
            if kind == "string":  # the reference prints whole 81-byte slots, junk after the NUL included
                first = re.match(r'"((?:[^"\\]|\\.)*)"', values).group(1)
                assert rvalues.startswith(first), (block, name)
            else:
                assert values == rvalues.strip(), (block, name, values, rvalues)
            checked += 1
    assert checked == (expected or sum(len(reference[b]) for b in compared)) and checked > 2000


def test_other_blobs_are_text_or_hex(series_raw):
    out = run_cli("dcmexamcard", "-o", series_raw.parent, series_raw).stdout
    json_part = out.split("PDF_USED_PRESCAN_RESPONSES (IEEE_PDF, 12190 bytes, text)\n", 1)[1]
    assert json_part.startswith('{"RequestResponsePair<CoilSelectionRequest')
    coil = out.split("COILSTATE (IEEE_PDF, 366 bytes, hex)\n", 1)[1].splitlines()
    assert coil[0].startswith("00000000  01 00 00 00 04 00 00 00")
    assert "PDF_PRESCAN_COIL_PARS (IEEE_PDF, 0 bytes, empty)" in out
    assert out.count("\n=== series 2101 'WIP fcMRI': ") == 12
    assert list(series_raw.parent.glob("*.ExamCard")) == []  # a series object holds no ExamCard


def test_blobs_as_text_files(series_raw, tmp_path):
    out = tmp_path / "txt"
    result = run_cli("dcmexamcard", "--blobs", "text", "-o", out, series_raw)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    text = (out / "2101_WIP_fcMRI.blobs.txt").read_text()
    assert "EX_single_scan_id" in text and "57005710" in text
    again = run_cli("dcmexamcard", "--blobs", "text", "-o", out, series_raw)
    assert again.returncode == 0 and sorted(p.name for p in out.iterdir()) == ["2101_WIP_fcMRI.blobs.txt"]


def test_study_examcard_is_the_console_export_format(tmp_path):
    needs(EXAMCARD_RAW)
    raw = gunzip(EXAMCARD_RAW, tmp_path / "XX_0001")
    out = tmp_path / "cards"
    result = run_cli("dcmexamcard", "-o", out, raw)
    assert result.returncode == 0, result.stderr
    assert [p.name for p in out.iterdir()] == ["20210902_MR61_MPRAGE.ExamCard"]
    card = (out / "20210902_MR61_MPRAGE.ExamCard").read_bytes()
    assert b"\0" not in card
    assert card.startswith(b"<SOAP-ENV:Envelope ") and card.endswith(b"</SOAP-ENV:Envelope>\r\n")
    assert b"\n" not in card.replace(b"\r\n", b"")  # CRLF lines, as the console writes
    root = ET.fromstring(card)
    ns = {"a1": "http://schemas.microsoft.com/clr/nsassem/Philips.PmsMR.ExamCards.ECModel/philips.pmsmr.examcards.ecmodel_cs",
          "env": "http://schemas.xmlsoap.org/soap/envelope/"}
    assert root.find("env:Body/a1:ExamCard/name", ns).text == "20210902_MR61_MPRAGE"
    if BALLS_CARD.exists():  # a card the console itself exported (another release): same envelope
        console = BALLS_CARD.read_bytes()
        assert card.split(b"\r\n", 3)[:2] == console.split(b"\r\n", 3)[:2]


def test_rerun_writes_nothing_and_a_different_file_is_never_overwritten(tmp_path):
    needs(EXAMCARD_RAW)
    raw = gunzip(EXAMCARD_RAW, tmp_path / "XX_0001")
    out = tmp_path / "cards"
    assert run_cli("dcmexamcard", "-o", out, raw).returncode == 0
    first = (out / "20210902_MR61_MPRAGE.ExamCard").read_bytes()
    assert run_cli("dcmexamcard", "-o", out, raw).returncode == 0
    assert [p.name for p in out.iterdir()] == ["20210902_MR61_MPRAGE.ExamCard"]
    (out / "20210902_MR61_MPRAGE.ExamCard").write_bytes(b"edited by hand")
    assert run_cli("dcmexamcard", "-o", out, raw).returncode == 0
    assert (out / "20210902_MR61_MPRAGE.ExamCard").read_bytes() == b"edited by hand"
    assert (out / "20210902_MR61_MPRAGE_2.ExamCard").read_bytes() == first


def make_examcard_object(series_raw: Path, target: Path, name: str) -> bytes:
    """A study ExamCard object built from the real series object: its blobs replaced by one ExamCardBlob."""
    from pydicom import dcmread
    from pydicom.dataset import Dataset

    document = ("<SOAP-ENV:Envelope>\r\n<SOAP-ENV:Body>\r\n<a1:ExamCard id=\"ref-1\">\r\n"
                f"<name id=\"ref-7\">{name}</name>\r\n</a1:ExamCard>\r\n</SOAP-ENV:Body>\r\n"
                "</SOAP-ENV:Envelope>\r\n").encode()
    encoded = base64.encodebytes(document + b"\0" * 10).replace(b"\n", b"\r\n")
    outer = (b'<?xml version="1.0"?>\r\n<ExamCard>\r\n  <Name>' + name.replace("&", "&amp;").encode()
             + b"</Name>\r\n  <ExamCardBlob>" + encoded + b"</ExamCardBlob>\r\n</ExamCard>")
    outer += b"\0" * (4096 - len(outer))
    ds = dcmread(series_raw)
    block = ds.private_block(0x2005, "Philips MR Imaging DD 002")
    item = Dataset()
    item_block = item.private_block(0x2005, "Philips MR Imaging DD 002", create=True)
    item_block.add_new(0x37, "LO", "ExamCardBlob")
    item_block.add_new(0x39, "LO", "")
    item_block.add_new(0x43, "SL", len(outer))
    item_block.add_new(0x44, "OW", outer)
    item_block.add_new(0x47, "CS", "Y")
    ds[block.get_tag(0x32)].value = [item]
    ds.ProtocolName = "ExamCard"
    ds.save_as(target)
    return document


def test_names_from_tags_cannot_leave_the_folder(series_raw, tmp_path):
    document = make_examcard_object(series_raw, tmp_path / "XX_0001", "../../evil/name & co")
    out = tmp_path / "deep" / "cards"
    result = run_cli("dcmexamcard", "-o", out, tmp_path / "XX_0001")
    assert result.returncode == 0, result.stderr
    written = list(out.iterdir())
    assert [p.name for p in written] == ["evil_name_co.ExamCard"]
    assert written[0].read_bytes() == document
    assert sorted(p.name for p in (tmp_path / "deep").iterdir()) == ["cards"]


def test_recipe_and_dry_run(series_raw, tmp_path):
    make_examcard_object(series_raw, tmp_path / "XX_0001", "Brain protocol")
    out = tmp_path / "cards"
    dry = run_cli("dcmexamcard", "--dry-run", "-o", out, tmp_path / "XX_0001")
    assert dry.returncode == 0, dry.stderr
    assert "Brain_protocol.ExamCard" in dry.stdout and not out.exists()
    recipe = run_cli("dcmexamcard", "--print-recipe", "--blobs", "none", "-o", out, tmp_path / "XX_0001").stdout
    assert 'export = "examcard"' in recipe
    (tmp_path / "r.toml").write_text(recipe)
    result = run_cli("run", tmp_path / "r.toml")
    assert result.returncode == 0, result.stderr
    assert [p.name for p in out.iterdir()] == ["Brain_protocol.ExamCard"]


def test_bad_inputs_get_one_line_each_and_nothing_is_written(series_raw, tmp_path):
    truncated = tmp_path / "XX_trunc"
    truncated.write_bytes(series_raw.read_bytes()[:300_000])
    text = tmp_path / "notes.txt"
    text.write_text("scan notes\n")
    files = [truncated, text]
    if MR_SMALL.exists():
        files.append(MR_SMALL)
    out = tmp_path / "out"
    result = run_cli("dcmexamcard", "--blobs", "text", "-o", out, *files)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if not line.startswith("dcmexamcard:")]
    assert len(lines) == len(files), result.stderr
    assert any(line.startswith(f"{truncated}: ") and "truncated" in line for line in lines)
    assert any(line.startswith(f"{text}: ") and "not a DICOM file" in line for line in lines)
    if MR_SMALL.exists():
        assert any(line.startswith(f"{MR_SMALL}: ") and "not a Raw Data Storage object" in line for line in lines)
    assert "Traceback" not in result.stderr
    assert not out.exists() or list(out.iterdir()) == []


def test_object_without_blob_sequence_is_refused(series_raw, tmp_path):
    from pydicom import dcmread

    ds = dcmread(series_raw)
    del ds[ds.private_block(0x2005, "Philips MR Imaging DD 002").get_tag(0x32)]
    ds.save_as(tmp_path / "XX_empty")
    result = run_cli("dcmexamcard", "-o", tmp_path / "out", tmp_path / "XX_empty")
    assert result.returncode == 1
    assert "XX_empty: export 'examcard': no Philips blob sequence (2005,1132)" in result.stderr


def test_not_strict_recipe_passes_images_untouched(series_raw, tmp_path):
    needs(MR_SMALL)
    folder = tmp_path / "export"
    folder.mkdir()
    shutil.copy(MR_SMALL, folder / "IM_0001")
    make_examcard_object(series_raw, folder / "XX_0001", "Knee")
    (tmp_path / "r.toml").write_text(
        f'[recipe]\nname = "cards"\n[[step]]\nread = "files"\npath = ["{folder}"]\nsettle = 0\n'
        f'[[step]]\nexport = "examcard"\ndest = "{tmp_path / "cards"}"\nstrict = false\n')
    result = run_cli("run", tmp_path / "r.toml")
    assert result.returncode == 0, result.stderr
    assert [p.name for p in (tmp_path / "cards").iterdir()] == ["Knee.ExamCard"]
    assert sorted(p.name for p in folder.iterdir()) == ["IM_0001", "XX_0001"]
