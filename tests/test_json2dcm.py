"""json2dcm: DICOM -> JSON -> DICOM gives back an equal data set, on real files; its command line."""

from __future__ import annotations

import json
import os

import pytest

from _dcm2json_helpers import (CORPUS, DATA, corpus_files, dcmtk, needs_corpus, needs_dcmtk, ours, parsed,
                               to_json_text)
from conftest import run_cli

META_KEYS = {"00020000", "00020001", "00020002", "00020003", "00020010", "00020012", "00020013", "00020016"}
# (0001,xxxx) is no valid group (private groups start at 0009): its nested "sequences" cannot be told
# from UN in explicit VR, so that file does not come back the same.
NOT_ROUND_TRIPPED = {"nested_priv_SQ.dcm": "elements in group 0001, which DICOM forbids"}


def _convertible(path) -> str | None:
    from dcmpipe.plugins._dcm2json_parse import ParseError
    from dcmpipe.plugins._dcm2json_write import ConvertError

    try:
        return to_json_text(path.read_bytes(), meta=True)
    except (ParseError, ConvertError):
        return None


def _round_trip(path, tmp_path, **encode_options) -> tuple[dict, dict, bytes]:
    from dcmpipe.plugins._dcm2json_encode import encode, load_json

    first = _convertible(path)
    dicom = encode(load_json(first), **encode_options)
    second = to_json_text(dicom, meta=True)
    a, b = json.loads(first), json.loads(second)
    for key in META_KEYS:
        a.pop(key, None)
        b.pop(key, None)
    return a, b, dicom


def _equal_data_sets(original, copy) -> list[str]:
    """Element by element with pydicom (values decoded), meta information and group lengths aside."""
    problems = []
    for element in original:
        if element.tag.element == 0 or element.tag == 0x00080005:
            continue
        if element.tag not in copy:
            problems.append(f"{element.tag} missing")
            continue
        other = copy[element.tag]
        if element.VR == "PN":
            if _pn(element.value) != _pn(other.value):
                problems.append(f"{element.tag} PN: {element.value} != {other.value}")
        elif element.VR == "SQ":
            if len(element.value) != len(other.value):
                problems.append(f"{element.tag}: {len(element.value)} items, {len(other.value)} back")
            for a, b in zip(element.value, other.value):
                problems += _equal_data_sets(a, b)
        elif element.value != other.value and not (element.VR in ("OB", "UN", "OW") and
                                                   element.value + b"\0" == other.value):
            problems.append(f"{element.tag} {element.VR}: {str(element.value)[:40]} != {str(other.value)[:40]}")
    return problems


def _pn(value) -> list[str]:
    """A PN value as the JSON model has it: empty trailing components and groups carry no meaning."""
    values = value if isinstance(value, (list, tuple)) or hasattr(value, "__iter__") and not isinstance(
        value, str) and not hasattr(value, "components") else [value]
    out = []
    for v in values:
        groups = [g.strip(" ").rstrip("^ ") for g in str(v).split("=")]
        while groups and not groups[-1]:
            groups.pop()
        out.append("=".join(groups))
    return out


@pytest.mark.parametrize("name", sorted(p.name for p in DATA.glob("*.dcm")))
def test_round_trip_gives_back_the_data_set(name, tmp_path):
    import io

    from pydicom import dcmread

    path = DATA / name
    if _convertible(path) is None:
        pytest.skip(f"{name} is not convertible (tested in test_dcm2json)")
    a, b, dicom = _round_trip(path, tmp_path)
    if name in NOT_ROUND_TRIPPED:
        assert a != b
        return
    assert a == b
    original = dcmread(path, force=True)
    copy = dcmread(io.BytesIO(dicom))
    assert not _equal_data_sets(original, copy), _equal_data_sets(original, copy)[:5]


@needs_corpus
def test_round_trip_on_the_whole_corpus(tmp_path):
    problems, done = [], 0
    for rel in corpus_files():
        path = CORPUS / rel
        if path.name in NOT_ROUND_TRIPPED or _convertible(path) is None:
            continue
        # (implicit VR loses VRs the dictionary cannot give back: private elements become UN)
        for options in ({}, {"transfer_syntax": "1.2.840.10008.1.2.2"}, {"transfer_syntax": "1.2.840.10008.1.2.1.99"}):
            a, b, _ = _round_trip(path, tmp_path, **options)
            if a != b:
                problems.append(f"{rel} {options}")
        done += 1
    assert not problems, problems
    assert done > 100


@needs_dcmtk
@pytest.mark.dcmtk
def test_dcmtk_reads_what_json2dcm_writes(tmp_path):
    """The DICOM written is DCMTK's business too: its dcm2json gives the same JSON as for the original."""
    for name in ("CT_small.dcm", "rtplan.dcm", "test-SR.dcm", "MR_small_bigendian.dcm", "chrX1.dcm"):
        json_file = tmp_path / f"{name}.json"
        json_file.write_bytes(ours(DATA / name, tmp_path=tmp_path)[1])
        # implicit VR gives 8-bit pixel data back as OW (DCMTK reads it so): only for files without it
        for ts in ("+te", "+tb", "+td") + (("+ti",) if name in ("CT_small.dcm", "rtplan.dcm") else ()):
            out = tmp_path / f"{name}{ts}.dcm"
            result = run_cli("json2dcm", ts, json_file, out)
            assert result.returncode == 0, result.stderr
            code, back, err = dcmtk(out)
            assert code == 0, err
            assert parsed(back) == parsed(dcmtk(DATA / name)[1]), (name, ts)


def test_bulk_data_round_trip_and_permission(tmp_path):
    os.chdir(tmp_path)
    for name in ("CT_small.dcm", "JPEG2000.dcm"):
        json_file = tmp_path / f"{name}.json"
        code, text = ours(DATA / name, "+b", "+m", "+bd", str(tmp_path / "bulk"), tmp_path=tmp_path)
        assert code == 0
        json_file.write_bytes(text)
        refused = run_cli("json2dcm", json_file, tmp_path / "x.dcm")
        assert refused.returncode == 66 and "+Bd" in refused.stderr  # no permitted folder: no file is read
        assert not (tmp_path / "x.dcm").exists()
        out = tmp_path / f"{name}.back.dcm"
        result = run_cli("json2dcm", "+Bd", tmp_path / "bulk", json_file, out)
        assert result.returncode == 0, result.stderr
        assert ours(out, "+b", "+m", "+bd", str(tmp_path / "bulk"), tmp_path=tmp_path) == (0, text)
    from pydicom import dcmread

    back = dcmread(tmp_path / "JPEG2000.dcm.back.dcm")
    assert back.file_meta.TransferSyntaxUID == dcmread(DATA / "JPEG2000.dcm").file_meta.TransferSyntaxUID
    ignored = run_cli("json2dcm", "-Bu", tmp_path / "CT_small.dcm.json", tmp_path / "empty.dcm")
    assert ignored.returncode == 0
    assert dcmread(tmp_path / "empty.dcm")["PixelData"].value in (None, b"")  # -Bu: present, empty


@pytest.mark.parametrize("document, code, message", [
    ("{not json", 65, "not valid JSON"),
    ('[{"00100010": {"vr": "PN"}}, {"00100010": {"vr": "PN"}}]', 65, "+as"),
    ('{"0010001": {"vr": "PN"}}', 65, "not a tag"),
    ('{"00100010": {"vr": "XX"}}', 65, "unknown VR"),
    ('{"00280010": {"vr": "US", "Value": ["big"]}}', 65, "numbers"),
    ('{"7FE00010": {"vr": "OW", "BulkDataURI": "https://example.org/x"}}', 66, "http"),
    ('{"7FE00010": {"vr": "OW", "BulkDataURI": "file:///etc/passwd"}}', 66, "permitted"),
])
def test_invalid_documents_exit_65_or_66_in_one_line(document, code, message, tmp_path):
    source = tmp_path / "in.json"
    source.write_text(document)
    result = run_cli("json2dcm", source, tmp_path / "out.dcm")
    assert result.returncode == code and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out.dcm").exists()


def test_command_line(tmp_path):
    from pydicom import dcmread

    assert run_cli("json2dcm", "-h").returncode == 0
    assert run_cli("json2dcm", "only-one.json").returncode == 1
    assert run_cli("json2dcm", "+Uo", "a.json", "b.dcm").returncode == 1  # +Uo needs +Ug
    assert run_cli("json2dcm", tmp_path / "missing.json", tmp_path / "o.dcm").returncode == 20
    array = tmp_path / "two.json"
    one = json.loads(ours(DATA / "rtplan.dcm", tmp_path=tmp_path)[1])
    two = json.loads(ours(DATA / "CT_small.dcm", tmp_path=tmp_path)[1])
    array.write_text(json.dumps([one, two]))
    assert run_cli("json2dcm", "+as", "2", array, tmp_path / "second.dcm").returncode == 0
    assert dcmread(tmp_path / "second.dcm").Modality == "CT"
    assert run_cli("json2dcm", "+Ug", array, tmp_path / "x.dcm").returncode == 65
    single = tmp_path / "ct.json"
    single.write_text(json.dumps(two))
    assert run_cli("json2dcm", "+Ug", "+Uo", single, tmp_path / "new.dcm").returncode == 0
    new = dcmread(tmp_path / "new.dcm")
    assert new.SOPInstanceUID != two["00080018"]["Value"][0] and new.SOPInstanceUID.startswith("2.25.")
    assert new.file_meta.MediaStorageSOPInstanceUID == new.SOPInstanceUID
    assert run_cli("json2dcm", "-F", "+ti", single, tmp_path / "raw.ds").returncode == 0
    raw = (tmp_path / "raw.ds").read_bytes()
    assert raw[:4] == b"\x08\x00\x05\x00"  # a bare data set, implicit VR: (0008,0005) first
    assert run_cli("json2dcm", "-e", single, tmp_path / "undef.dcm").returncode == 0
    assert dcmread(tmp_path / "undef.dcm").PatientName == "CompressedSamples^CT1"


def test_recipe_reads_json_and_writes_dicom(tmp_path):
    from dcmpipe.testing import run

    (tmp_path / "json" / "a").mkdir(parents=True)
    for name in ("CT_small.dcm", "rtplan.dcm"):
        (tmp_path / "json" / "a" / f"{name}.json").write_bytes(ours(DATA / name, tmp_path=tmp_path)[1])
    (tmp_path / "json" / "broken.json").write_text("{")
    summary = run({"step": [
        {"read": "dicom-json", "path": ["json"], "recursive": True},
        {"route": "fixed", "dest": "dicom"},
        {"export": "json2dcm"},
    ]}, base_dir=tmp_path)
    assert summary.exit_code == 1  # the broken file fails, the others are written
    written = sorted(p.relative_to(tmp_path / "dicom").as_posix() for p in (tmp_path / "dicom").rglob("*.dcm"))
    assert written == ["a/CT_small.dcm.dcm", "a/rtplan.dcm.dcm"]
    for name in ("CT_small.dcm", "rtplan.dcm"):
        assert parsed(ours(tmp_path / "dicom" / "a" / f"{name}.dcm", tmp_path=tmp_path)[1]) == \
            parsed(ours(DATA / name, tmp_path=tmp_path)[1])
