"""dcm2json: DCMTK's output on real files, its command line and exit codes, the recipe step."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from _dcm2json_helpers import (CORPUS, DATA, EXCEPTIONS, corpus_files, dcmtk, needs_corpus, needs_dcmtk, ours,
                               parsed)
from conftest import REPO, run_cli

TEST_FILES = sorted(p.name for p in DATA.glob("*.dcm"))


def _compare(path: Path, options: tuple, tmp_path: Path) -> str | None:
    """None when DCMTK and we agree on ``path`` (exit code, parsed JSON), else what differs."""
    d_code, d_out, d_err = dcmtk(path, *options)
    o_code, o_out = ours(path, *options, tmp_path=tmp_path)
    if path.name in EXCEPTIONS:
        want_dcmtk, want_ours, _why = EXCEPTIONS[path.name]
        if (d_code, o_code) != (want_dcmtk, want_ours):
            return f"{path}: known exception changed: DCMTK {d_code}, ours {o_code}"
        return None
    if d_code != o_code:
        return f"{path} {options}: DCMTK exit {d_code} ({d_err.strip()[-120:]}), ours {o_code}"
    if d_code == 0 and parsed(d_out) != parsed(o_out):
        return f"{path} {options}: the JSON differs"
    return None


@needs_dcmtk
@pytest.mark.dcmtk
@pytest.mark.parametrize("options", [(), ("-fc",), ("+m",), ("-fc", "+m")])
def test_same_json_as_dcmtk_on_the_test_files(options, tmp_path):
    problems = [p for name in TEST_FILES if (p := _compare(DATA / name, options, tmp_path))]
    assert not problems, "\n".join(problems)
    # not only parsed-equal: the text itself is DCMTK's, indentation and number formatting included
    code, text, _ = dcmtk(DATA / "CT_small.dcm", *options)
    assert ours(DATA / "CT_small.dcm", *options, tmp_path=tmp_path) == (0, text)


@needs_dcmtk
@needs_corpus
@pytest.mark.dcmtk
def test_same_json_as_dcmtk_on_the_whole_corpus(tmp_path):
    files = [CORPUS / f for f in corpus_files()]
    with ThreadPoolExecutor(4) as pool:
        references = list(pool.map(lambda p: dcmtk(p), files))
    problems, converted = [], 0
    for path, (d_code, d_out, d_err) in zip(files, references):
        o_code, o_out = ours(path, tmp_path=tmp_path)
        if path.name in EXCEPTIONS:
            if (d_code, o_code) != EXCEPTIONS[path.name][:2]:
                problems.append(f"{path}: known exception changed: DCMTK {d_code}, ours {o_code}")
            continue
        if d_code != o_code:
            problems.append(f"{path}: DCMTK exit {d_code} ({d_err.strip()[-100:]}), ours {o_code}")
        elif d_code == 0:
            converted += 1
            if d_out != o_out and parsed(d_out) != parsed(o_out):
                problems.append(f"{path}: the JSON differs")
    assert not problems, "\n".join(problems)
    assert converted > 100  # the corpus is what we think it is


@needs_dcmtk
@pytest.mark.dcmtk
def test_raw_data_sets_are_read_like_dcmtk(tmp_path):
    """No meta information: -f with -ti/-te/-tb, or the transfer syntax guessed from the first bytes."""
    from dcmpipe.plugins._dcm2json_parse import parse

    source = (DATA / "MR_small_implicit.dcm").read_bytes()
    meta_end = 132 + 12 + int.from_bytes(source[140:144], "little")
    raw = tmp_path / "raw_implicit.ds"
    raw.write_bytes(source[meta_end:])
    assert parse(source).dataset  # sanity
    for options in [(), ("-f",), ("-f", "-ti"), ("-td",)]:
        assert _compare(raw, options, tmp_path) is None
    big = DATA / "ExplVR_BigEndNoMeta.dcm"
    for options in [(), ("-f", "-tb")]:
        assert _compare(big, options, tmp_path) is None
    assert _compare(DATA / "CT_small.dcm", ("-td",), tmp_path) is None
    # +fo: a raw data set is not a file: both refuse it with 20
    assert dcmtk(raw, "+fo")[0] == ours(raw, "+fo", tmp_path=tmp_path)[0] == 20


# -- the command line -------------------------------------------------------------------------


def test_help_and_usage():
    result = run_cli("dcm2json", "-h")
    assert result.returncode == 0
    for option in ("+fo", "-t=", "-ee", "-in", "+bz", "+bp", "+bd", "+bs", "+fc", "-fc", "+m", "--log-config"):
        assert option in result.stdout
    assert run_cli("dcm2json").returncode == 0  # no arguments: the usage, as DCMTK
    assert "dcm2json" in run_cli("dcm2json", "--version").stdout


@pytest.mark.parametrize("args, message", [
    (["-x", "a.dcm"], "Unknown option -x"),
    (["a.dcm", "b.json", "c"], "Too many parameters"),
    (["-te", "a.dcm"], "--read-xfer-little only allowed with --read-dataset"),
    (["+bz", "4", "a.dcm"], "--bulk-size only allowed with --bulk-enabled"),
    (["+b", "+bz", "many", "a.dcm"], "--bulk-size"),
    (["-ll"], "Missing value for option --log-level"),
    (["-ll", "loud", "a.dcm"], "Invalid log level"),
    (["-f", "+m", "a.dcm"], "--write-meta not allowed with --read-dataset"),
    (["-q"], "Missing parameter dcmfile-in"),
])
def test_command_line_errors_exit_1_in_one_line(args, message):
    result = run_cli("dcm2json", *args)
    assert result.returncode == 1
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_bad_inputs_one_line_and_the_manuals_exit_code(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("this is not DICOM at all, just some words in a text file\n" * 3)
    cases = [
        (["", ], 21),
        ([str(tmp_path / "missing.dcm")], 20),
        ([str(text)], 20),
        ([str(DATA / "MR_truncated.dcm")], 20),
        ([str(DATA / "CT_small.dcm"), str(tmp_path / "no" / "such" / "folder.json")], 40),
        ([str(DATA / "JPEG2000.dcm")], 81),
    ]
    for args, code in cases:
        result = run_cli("dcm2json", *args)
        assert result.returncode == code, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
        assert result.stdout == ""  # nothing half written
    assert "compressed pixel data" in run_cli("dcm2json", DATA / "JPEG2000.dcm").stderr


def test_unwritable_output_folder_exits_40(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root can write anywhere")
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        assert run_cli("dcm2json", DATA / "CT_small.dcm", folder / "x.json").returncode == 40
    finally:
        folder.chmod(0o700)


def _with(ds_changes, tmp_path, name="x.dcm", implicit=False):
    from pydicom import dcmread

    from _dcm2json_helpers import dicom_bytes

    ds = dcmread(DATA / "CT_small.dcm")
    del ds.PixelData
    ds_changes(ds)
    path = tmp_path / name
    path.write_bytes(dicom_bytes(ds, implicit=implicit))
    return path


def test_character_set_errors_exit_80(tmp_path):
    def unknown(ds):
        ds.SpecificCharacterSet = "ISO_IR 999"

    def latin_without_charset(ds):
        del ds.SpecificCharacterSet
        ds.PatientName = "Müller^Jürgen"
        ds["PatientName"].value = "Müller^Jürgen".encode("latin-1")

    for change in (unknown, latin_without_charset):
        path = _with(change, tmp_path, change.__name__ + ".dcm")
        result = run_cli("dcm2json", path)
        assert result.returncode == 80, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


@needs_dcmtk
@pytest.mark.dcmtk
def test_nan_and_inf_strict_81_extended_written_as_dcmtk(tmp_path):
    def nan(ds):
        ds.add_new(0x00189089, "FD", [0.0, float("nan"), float("inf"), -float("inf")])  # DiffusionGradientOrientation

    path = _with(nan, tmp_path)
    assert dcmtk(path)[0] == ours(path, tmp_path=tmp_path)[0] == 81
    code, text, _ = dcmtk(path, "-ee")
    assert code == 0 and (0, text) == ours(path, "-ee", tmp_path=tmp_path)
    assert b"nan" in text and b"-inf" in text
    # DCMTK checks from the second value on: a nan first value slips through as invalid JSON
    from dcmpipe.plugins._dcm2json_encode import encode

    first = tmp_path / "first.dcm"
    first.write_bytes(encode({"00080018": {"vr": "UI", "Value": ["1.2.3"]},
                              "00189089": {"vr": "FD", "Value": ["nan"]}}))
    code, text, _ = dcmtk(first, "-fc")
    assert code == 0 and b"[nan]" in text  # not JSON
    assert ours(first, tmp_path=tmp_path)[0] == 81


def test_command_files_arguments_and_stdin(tmp_path):
    (tmp_path / "opts.txt").write_text('-fc\n  +m   "-es"\n')
    result = run_cli("dcm2json", "--arguments", f"@{tmp_path / 'opts.txt'}", DATA / "rtplan.dcm")
    assert result.returncode == 0
    # as DCMTK prints it: after the command file's expansion, options by their long names
    assert "with 5 arguments: '--arguments' '--compact-code' '--write-meta' '--encode-strict'" in result.stderr
    assert "\n" not in result.stdout.strip() and '"00020010"' in result.stdout  # compact, with meta
    piped = subprocess.run([sys.executable, "-m", "dcmpipe", "dcm2json", "-fc", "+m", "-"],
                           input=(DATA / "rtplan.dcm").read_bytes(), capture_output=True)
    assert piped.returncode == 0 and piped.stdout.decode() == result.stdout
    (tmp_path / "nested.txt").write_text(f"@{tmp_path / 'opts.txt'}")
    assert run_cli("dcm2json", f"@{tmp_path / 'nested.txt'}", DATA / "rtplan.dcm").returncode == 1


def test_output_file_is_written_and_replaced(tmp_path):
    out = tmp_path / "ct.json"
    out.write_text("old")
    assert run_cli("dcm2json", DATA / "CT_small.dcm", out).returncode == 0
    data = json.loads(out.read_text())
    assert data["00100010"]["Value"] == [{"Alphabetic": "CompressedSamples^CT1"}]
    assert data["00080005"]["Value"] == ["ISO_IR 192"]  # converted to UTF-8, as DCMTK says
    assert [p.name for p in tmp_path.iterdir()] == ["ct.json"]  # no temporary file left


def test_converting_an_explicit_vr_file_imports_no_pydicom():
    code = ("import sys\nfrom dcmpipe.cli import main\n"
            f"try:\n    main(['dcm2json', '-fc', '{DATA / 'CT_small.dcm'}'])\n"
            "except SystemExit as e:\n    print('EXIT', e.code)\n"
            "print('HEAVY', [m for m in ('pydicom', 'numpy') if m in sys.modules])\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "EXIT 0" in result.stdout and "HEAVY []" in result.stdout, result.stdout[-300:] + result.stderr


# -- what is written --------------------------------------------------------------------------


def test_person_names_groups_and_nulls(tmp_path):
    from dcmpipe.plugins._dcm2json_write import _pn_values

    assert _pn_values("Yamada^Tarou=山田^太郎=やまだ^たろう") == [
        [("Alphabetic", "Yamada^Tarou"), ("Ideographic", "山田^太郎"), ("Phonetic", "やまだ^たろう")]]
    assert _pn_values("^Bob^^Dr.") == [[("Alphabetic", "^Bob^^Dr.")]]
    assert _pn_values("Smith^John\\\\Doe") == [[("Alphabetic", "Smith^John")], None, [("Alphabetic", "Doe")]]
    assert _pn_values("=Kanji") == [[("Ideographic", "Kanji")]]
    assert _pn_values("A=B=C=D") == [[("Alphabetic", "A"), ("Ideographic", "B"), ("Phonetic", "C")]]
    data = parsed(ours(DATA / "chrX1.dcm", tmp_path=tmp_path)[1])
    assert data["00100010"]["Value"][0]["Alphabetic"] == "Wang^XiaoDong"
    assert data["00100010"]["Value"][0]["Ideographic"] == "王^小東"


def test_character_sets_become_utf8(tmp_path):
    russian = parsed(ours(DATA / "chrRuss.dcm", tmp_path=tmp_path)[1])
    assert russian["00100010"]["Value"][0]["Alphabetic"] == "Люкceмбypг"
    assert russian["00080005"]["Value"] == ["ISO_IR 192"]
    japanese = parsed(ours(DATA / "chrH31.dcm", tmp_path=tmp_path)[1])  # ISO 2022 IR 87: DCMTK here cannot
    assert japanese["00100010"]["Value"][0]["Ideographic"] == "山田^太郎"
    nested = json.dumps(parsed(ours(DATA / "chrSQEncoding.dcm", tmp_path=tmp_path)[1]), ensure_ascii=False)
    assert "山田^太郎" in nested  # an item with its own Specific Character Set is decoded with it


def test_bulk_data_files_named_by_sha256(tmp_path):
    os.chdir(tmp_path)
    code, text = ours(DATA / "JPEG2000.dcm", "+b", "+bd", str(tmp_path / "bulk"), tmp_path=tmp_path)
    assert code == 0
    data = parsed(text)
    uri = data["7FE00010"]["BulkDataURI"]
    assert uri.startswith("file://localhost" + os.path.realpath(tmp_path / "bulk") + "/") and uri.endswith(".jp2")
    bulk = tmp_path / "bulk" / uri.rsplit("/", 1)[1]
    assert hashlib.sha256(bulk.read_bytes()).hexdigest() + ".jp2" == bulk.name
    from pydicom import dcmread
    from pydicom.encaps import generate_fragments

    ds = dcmread(DATA / "JPEG2000.dcm")
    assert bulk.read_bytes() == b"".join(list(generate_fragments(ds.PixelData))[0:])
    # +bz 0 puts every binary and number value out; +bs: a folder per SOP instance; +bp: the URI prefix
    code, text = ours(DATA / "CT_small.dcm", "+b", "+bz", "0", "+bs", "+bp", "https://pacs/bulk",
                      "+bd", str(tmp_path / "b2"), tmp_path=tmp_path)
    data = parsed(text)
    uid = data["00080018"]["Value"][0]
    assert data["7FE00010"]["BulkDataURI"].startswith(f"https://pacs/bulk/{uid}/")
    assert "BulkDataURI" in data["00280030"]  # a DS value
    assert (tmp_path / "b2" / uid).is_dir()


@pytest.mark.parametrize("written, number", [
    ("1.5", "1.5"), ("+1.50", "1.50"), ("007", "7"), (".5", "0.5"), ("-.5", "-0.5"), ("5.", "5.0"),
    ("1e5", "1e5"), ("-0", "-0"), ("  12.25 ", "12.25"), ("0000", "0"), ("1.e3", "1.0e3"),
    ("0E0", "0E0"), ("00e5", "0e5"), ("-0e1", "-0e1"),  # DCMTK writes E0, e5, -e1: not JSON
])
def test_decimal_strings_as_dcmtk_normalises_them(written, number, tmp_path):
    def ds(d):
        d.add_new(0x00181050, "DS", written)  # Spatial Resolution

    path = _with(ds, tmp_path)
    text = ours(path, "-fc", tmp_path=tmp_path)[1].decode()
    assert f'"00181050":{{"vr":"DS","Value":[{number}]}}' in text


def test_invalid_numbers_policies(tmp_path):
    from dcmpipe.plugins._dcm2json_encode import encode

    path = tmp_path / "bad.dcm"
    path.write_bytes(encode({
        "00080016": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.7"]},
        "00080018": {"vr": "UI", "Value": ["1.2.3.4"]},
        "00181050": {"vr": "DS", "Value": ["1,5"]},
        "00200012": {"vr": "IS", "Value": ["99999999999"]},  # beyond 32 bits: not a valid IS
        "00280030": {"vr": "DS", "Value": ["0.661468", "0.661468"]},
    }))
    data = parsed(ours(path, tmp_path=tmp_path)[1])
    assert data["00181050"]["Value"] == ["1,5"] and data["00200012"]["Value"] == ["99999999999"]
    assert ours(path, "-in", tmp_path=tmp_path)[0] == 81
    strings = parsed(ours(path, "-is", tmp_path=tmp_path)[1])
    assert strings["00280030"]["Value"] == ["0.661468", "0.661468"]


def test_sv_uv_beyond_javascript_integers_are_strings(tmp_path):
    def big(d):
        d.add_new(0x00720082, "SV", [9007199254740991, -9007199254740992, 5])
        d.add_new(0x00720081, "UV", [18446744073709551615])

    data = parsed(ours(_with(big, tmp_path), tmp_path=tmp_path)[1])
    assert data["00720082"]["Value"] == [9007199254740991, "-9007199254740992", 5]
    assert data["00720081"]["Value"] == ["18446744073709551615"]


# -- the recipe --------------------------------------------------------------------------------


def test_recipe_converts_a_tree_one_json_per_file(tmp_path):
    tree = tmp_path / "incoming"
    for n, name in enumerate(["CT_small.dcm", "rtplan.dcm", "MR_small_bigendian.dcm", "MR_truncated.dcm"]):
        folder = tree / f"s{n % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(DATA / name, folder / name)
    recipe = REPO / "docs" / "examples" / "dcm2json-tree.toml"
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(recipe, work / "tree.toml")
    shutil.move(str(tree), work / "incoming")
    result = run_cli("run", work / "tree.toml", "-j", "2")
    assert result.returncode == 1  # the truncated file fails, the others are converted
    assert "MR_truncated.dcm" in result.stderr
    written = sorted(p.relative_to(work / "json").as_posix() for p in (work / "json").rglob("*.json"))
    assert written == ["s0/CT_small.dcm.json", "s0/MR_small_bigendian.dcm.json", "s1/rtplan.dcm.json"]
    for rel in written:
        source = work / "incoming" / rel[:-5]
        assert (work / "json" / rel).read_bytes() == ours(source, tmp_path=tmp_path)[1]
    again = run_cli("run", work / "tree.toml")  # a re-run: identical files count as done
    assert again.returncode == 1 and "TargetExists" not in again.stderr


def test_folder_as_input_runs_the_recipe(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(DATA / "rtplan.dcm", src / "a.dcm")
    printed = run_cli("dcm2json", "-fc", "--print-recipe", src, tmp_path / "out")
    assert 'export = "dcm2json"' in printed.stdout and "compact = true" in printed.stdout
    result = run_cli("dcm2json", "-fc", src, tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "a.dcm.json").read_bytes() == ours(src / "a.dcm", "-fc", tmp_path=tmp_path)[1]


def test_quiet_and_a_python_log_config(tmp_path):
    missing = tmp_path / "missing.dcm"
    quiet = run_cli("dcm2json", "-q", missing)
    assert quiet.returncode == 20 and quiet.stderr == ""  # -q: no warnings and errors, as DCMTK
    log = tmp_path / "log.txt"
    (tmp_path / "log.cfg").write_text(
        "[loggers]\nkeys=root\n[handlers]\nkeys=f\n[formatters]\nkeys=p\n"
        "[logger_root]\nlevel=INFO\nhandlers=f\n"
        f"[handler_f]\nclass=FileHandler\nargs=({str(log)!r},)\nformatter=p\n"
        "[formatter_p]\nformat=%(levelname)s %(message)s\n")
    configured = run_cli("dcm2json", "-lc", tmp_path / "log.cfg", missing)
    assert configured.returncode == 20 and configured.stderr == ""
    assert log.read_text().startswith("ERROR dcm2json: error (No such file or directory) reading file:")
