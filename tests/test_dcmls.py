"""dcmls: `dcmpipe ls` and the `listing` export, on real files."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import stat
from pathlib import Path

import pytest

from conftest import DATA, SHARED, run_cli

DEFAULT = ["SeriesDate", "SeriesTime", "StudyDescription", "SeriesDescription", "PatientName", "PatientID",
           "ProtocolName", "SeriesNumber", "PerformedProcedureStepDescription"]


def _tsv(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text), delimiter="\t", quoting=csv.QUOTE_NONE))


@pytest.fixture(scope="module")
def many(tmp_path_factory) -> Path:
    """Hundreds of generated files in two studies, plus a text file and a truncated file."""
    from dcmpipe.demo import SeriesPlan, StudyPlan, generate

    root = tmp_path_factory.mktemp("many")
    generate(root / "a", [StudyPlan("1", "ALPHA^ONE", "P1", "Brain", [SeriesPlan(k, f"S{k}", slices=60)
                                                                     for k in range(1, 4)])])
    generate(root / "b" / "deep", [StudyPlan("2", "BETA^TWO", "P2", "Knee", [SeriesPlan(7, "PD", slices=150)])],
             seed=2)
    (root / "b" / "notes.txt").write_text("not DICOM\n")
    whole = (root / "a" / "IM_00001").read_bytes()
    (root / "a" / "IM_TRUNCATED").write_bytes(whole[:500])
    return root


def test_tsv_lists_every_file_with_its_header_fields(many):
    from pydicom import dcmread

    result = run_cli("ls", many, "--format", "tsv")
    assert result.returncode == 0, result.stderr
    rows = _tsv(result.stdout)
    files = sorted(p for p in many.rglob("*") if p.is_file())
    assert sorted(Path(r["path"]) for r in rows) == files
    assert list(rows[0])[:7] == ["path", "mode", "owner", "group", "size", "mtime", "dicom"]
    assert list(rows[0])[7:] == DEFAULT
    by_path = {Path(r["path"]): r for r in rows}
    for path in files[::37]:
        row = by_path[path]
        st = path.stat()
        assert row["size"] == str(st.st_size) and row["mode"] == stat.filemode(st.st_mode)
        if row["dicom"] == "yes":
            ds = dcmread(path, stop_before_pixels=True)
            assert row["SeriesDescription"] == ds.SeriesDescription
            assert row["PatientName"] == str(ds.PatientName)
            assert row["SeriesNumber"] == str(ds.SeriesNumber)
    assert by_path[many / "b" / "notes.txt"]["dicom"] == "no"
    assert by_path[many / "a" / "IM_TRUNCATED"]["dicom"] == "no"
    assert sum(r["dicom"] == "yes" for r in rows) == 330


def test_text_output_is_grouped_by_folder_like_ls_lR(many):
    result = run_cli("ls", many)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    headers = [line[:-1] for line in lines if line.endswith(":") and not line.startswith(("-", "d"))]
    assert headers == [str(many), str(many / "a"), str(many / "b"), str(many / "b" / "deep")]
    # the subfolders are listed as folders, the text file as ls lists it, with nothing after its name
    top = lines[1:lines.index("")]
    assert [line.split()[0][0] + line.split()[-1] for line in top] == ["da", "db"]
    notes = next(line for line in lines if line.endswith("notes.txt"))
    assert notes.startswith("-rw") and notes.split()[-1] == "notes.txt"
    # columns are aligned: every DICOM row of a folder has its series description at the same place
    block = [line for line in lines if " IM_" in line and "ALPHA^ONE" in line]
    assert len(block) == 180
    assert len({line.index("ALPHA^ONE") for line in block}) == 1
    header = next(line for line in lines if line.startswith("mode "))
    assert header.split()[6:] == DEFAULT


def test_json_is_one_valid_document_with_numbers_as_numbers(many):
    result = run_cli("ls", many / "b", "-F", "json", "--tags", "SeriesNumber:0010,0010:EchoTime")
    assert result.returncode == 0, result.stderr
    records = json.loads(result.stdout)
    assert len(records) == 151
    dicom = [r for r in records if r["dicom"]]
    assert {tuple(r["tags"]) for r in dicom} == {("SeriesNumber", "PatientName", "EchoTime")}
    assert {r["tags"]["SeriesNumber"] for r in dicom} == {7}
    assert {r["tags"]["PatientName"] for r in dicom} == {"BETA^TWO"}
    other = [r for r in records if not r["dicom"]]
    assert [Path(r["path"]).name for r in other] == ["notes.txt"] and other[0]["reason"]


def test_real_files_of_several_modalities_and_character_sets(tmp_path):
    from pydicom import dcmread
    from pydicom.data import get_charset_files, get_testdata_file

    names = ["CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "JPEG2000.dcm", "MR_small_bigendian.dcm",
             "MR_small_implicit.dcm", "image_dfl.dcm", "chrRuss.dcm", "chrJapMulti.dcm",
             "chrGreek.dcm", "chrH31.dcm", "chrX1.dcm"]
    for n in names:
        shutil.copy(get_testdata_file(n) if not n.startswith("chr") else get_charset_files(n)[0], tmp_path / n)
    shutil.copy(DATA / "emri_small.dcm", tmp_path / "emri_small.dcm")
    names.append("emri_small.dcm")
    result = run_cli("ls", tmp_path, "-F", "tsv", "--tags", "PatientName:Modality:SeriesNumber")
    assert result.returncode == 0, result.stderr
    rows = {Path(r["path"]).name: r for r in _tsv(result.stdout)}
    assert set(rows) == set(names)
    for n in names:
        ds = dcmread(tmp_path / n, stop_before_pixels=True, force=True)
        assert rows[n]["dicom"] == "yes", n
        assert rows[n]["PatientName"] == str(ds.get("PatientName", "")), n
        assert rows[n]["Modality"] == (ds.get("Modality") or ""), n
    assert rows["chrRuss.dcm"]["PatientName"] == "Люкceмбypг"
    assert rows["chrJapMulti.dcm"]["PatientName"] == "やまだ^たろう"
    assert rows["emri_small.dcm"]["Modality"] == "MR"


def test_missing_paths_are_reported_and_the_rest_listed(many, tmp_path):
    result = run_cli("ls", many / "b", tmp_path / "absent", "-F", "tsv")
    assert result.returncode == 1
    assert "absent" in result.stderr and "Traceback" not in result.stderr
    assert len(_tsv(result.stdout)) == 151


def test_unknown_tag_is_refused_before_listing(many):
    result = run_cli("ls", many, "--tags", "SeriesDescriptoin")
    assert result.returncode == 2
    assert "SeriesDescription" in result.stderr and result.stdout == ""


def test_output_file_is_written_whole_and_never_overwritten(many, tmp_path):
    target = tmp_path / "listing.tsv"
    result = run_cli("ls", many / "b", "-F", "tsv", "-o", target)
    assert result.returncode == 0, result.stderr
    first = target.read_text()
    assert len(_tsv(first)) == 151
    assert [p.name for p in tmp_path.iterdir()] == ["listing.tsv"]  # no part file left
    again = run_cli("ls", many / "b", "-F", "tsv", "-o", target)
    assert again.returncode != 0 and "already exists" in again.stderr
    assert target.read_text() == first


def test_recipe_with_workers_keeps_the_order_of_a_single_process_run(many, tmp_path):
    """The listing runs in the main process: with --jobs 2 the rows are the same, in the same order."""
    lines = []
    for jobs in ("1", "2"):
        out = tmp_path / f"list{jobs}.json"
        recipe = tmp_path / f"r{jobs}.toml"
        recipe.write_text(f'[[step]]\nread = "files"\npath = "{many}"\nrecursive = true\nsettle = 0\n\n'
                          f'[[step]]\nexport = "listing"\nformat = "json"\noutput = "{out}"\n')
        result = run_cli("run", recipe, "--jobs", jobs)
        assert result.returncode == 0, result.stderr
        lines.append(out.read_text())
    assert lines[0] == lines[1]
    assert len(json.loads(lines[0])) == 332


def test_print_recipe_shows_the_steps(many):
    result = run_cli("ls", many, "--print-recipe", "--tags", "PatientID")
    assert result.returncode == 0
    assert 'export = "listing"' in result.stdout and 'read = "files"' in result.stdout
    assert '"PatientID"' in result.stdout


def test_a_closed_pipe_ends_the_listing_quietly(many):
    import subprocess
    import sys

    proc = subprocess.run(f"{sys.executable} -m dcmpipe ls {many} | head -3", shell=True, capture_output=True,
                          text=True, env=dict(os.environ))
    assert len(proc.stdout.splitlines()) == 3
    assert "Error" not in proc.stderr and "Traceback" not in proc.stderr


CORPUS = SHARED / "corpus"


@pytest.mark.skipif(not (CORPUS / "MANIFEST.tsv").is_file(), reason=f"{CORPUS} (shared corpus) not present")
def test_every_file_of_the_real_corpus_is_listed_without_a_crash():
    """~240 real files: many modalities, syntaxes, character sets, damaged files, PAR/REC and text."""
    import warnings

    from pydicom import dcmread

    result = run_cli("ls", CORPUS, "-F", "tsv", "--tags", "PatientName:Modality:SeriesNumber")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    rows = {Path(r["path"]): r for r in _tsv(result.stdout)}
    files = {p for p in CORPUS.rglob("*") if p.is_file() and not any(x.startswith(".") for x in p.parts)}
    assert set(rows) == files
    checked = 0
    for path, row in rows.items():
        if row["dicom"] != "yes" or path.suffix != ".dcm":
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                ds = dcmread(path, stop_before_pixels=True)
            except Exception:  # noqa: BLE001 - files pydicom refuses are compared no further
                continue
        assert row["PatientName"] == str(ds.get("PatientName") or ""), path
        assert row["Modality"] == (ds.get("Modality") or ""), path
        checked += 1
    assert checked > 100


def test_no_recursive_lists_only_the_folder_given(many):
    result = run_cli("ls", many / "b", "--no-recursive")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"{many / 'b'}:"
    assert [line.split()[-1] for line in lines[1:]] == ["deep", "notes.txt"]
    assert lines[1].startswith("d") and lines[2].startswith("-")
