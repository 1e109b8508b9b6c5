"""dcminfo: `dcmpipe info` in its four forms, the settings files, Enhanced MR frames, renaming."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import DATA, SHARED, run_cli

FOUR_D = SHARED / "corpus" / "nibabel-sdist" / "4d_multiframe_test_8frames.dcm"


def _env(tmp_path: Path) -> dict:
    """No user settings unless a test writes them."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")}


def _info(*args, tmp_path, **kw):
    return run_cli("info", *args, env=_env(tmp_path), **kw)


def _sections(stdout: str) -> tuple[dict[str, str], list[dict[str, str]]]:
    """Parse the table form: ``({tag: value} equal in all, [row dicts])`` (one table, unfolded)."""
    same, rows, header = {}, [], None
    part = "same"
    for line in stdout.splitlines():
        if line.startswith("Different"):
            part = "table"
            continue
        if line.startswith("Not DICOM"):
            break
        if part == "same" and line.startswith("  "):
            match = re.match(r"  (\S+)(?: \([0-9A-F]{4},[0-9A-F]{4}\))?\s{2,}(.*)$", line)
            if match:
                same[match.group(1)] = match.group(2).rstrip()
            else:
                same[line.split()[0]] = ""
        elif part == "table" and line.strip():
            if header is None:
                header = [(m.start(), m.group()) for m in re.finditer(r"\S+", line)]
                continue
            cells = {}
            for i, (start, col) in enumerate(header):
                end = header[i + 1][0] if i + 1 < len(header) else None
                cells[col] = line[start:end].strip()
            rows.append(cells)
    return same, rows


@pytest.fixture(scope="module")
def exam(tmp_path_factory) -> Path:
    """Hundreds of generated files: two studies, series with and without some tags, a text file, a
    truncated file."""
    from dcmpipe.demo import SeriesPlan, StudyPlan, generate

    root = tmp_path_factory.mktemp("exam") / "exam"
    generate(root, [
        StudyPlan("1", "ALPHA^ONE", "P1", "Brain", [
            SeriesPlan(3, "T1 3D", slices=100),
            SeriesPlan(4, "fMRI", slices=20, dynamics=5, extra={"ProtocolName": "fmri_rest"}),
        ]),
        StudyPlan("2", "ALPHA^ONE", "P1", "Brain", [SeriesPlan(9, "CT scout", slices=60, template="CT_small.dcm")]),
    ])
    (root / "notes.txt").write_text("not DICOM\n")
    (root / "IM_CUT").write_bytes((root / "IM_00001").read_bytes()[:700])
    return root


def test_table_lists_equal_tags_first_then_the_ones_that_differ(exam, tmp_path):
    from pydicom import dcmread

    result = _info(exam, "-w", "1000", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    same, rows = _sections(result.stdout)
    assert result.stdout.startswith("Same in all 260 files:")
    assert same["PatientName"] == "ALPHA^ONE" and same["PatientID"] == "P1" and same["StudyDescription"] == "Brain"
    assert len(rows) == 260
    by_file = {r["file"]: r for r in rows}
    for name in sorted(by_file)[::23]:
        ds = dcmread(exam / name, stop_before_pixels=True)
        row = by_file[name]
        assert row["SeriesNumber"] == str(ds.SeriesNumber)
        assert row["SeriesDescription"] == ds.SeriesDescription
        assert row["InstanceNumber"] == str(ds.InstanceNumber)
        # a tag missing in some files (EchoTime in CT, ProtocolName outside fMRI) shows as '-'
        assert row["EchoTime"] == (str(ds.EchoTime) if "EchoTime" in ds else "-").replace(".0", "")
        assert row["ProtocolName"] == (ds.get("ProtocolName") or "-")
    assert "Not DICOM (2):\n  IM_CUT: truncated DICOM header\n  notes.txt: not a DICOM file" in result.stdout


def test_added_tags_numbers_and_only_these(exam, tmp_path):
    files = [exam / "IM_00001", exam / "IM_00002", exam / "IM_00003"]
    result = _info("-t", "0008,0016:Rows", "-t", "ImagePositionPatient", "-x", *files, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    same, rows = _sections(result.stdout)
    shown = set(same) | (set(rows[0]) - {"file"} if rows else set())
    assert shown == {"SOPClassUID", "Rows", "ImagePositionPatient"}
    with_defaults = _info("-t", "ImagePositionPatient", *files, tmp_path=tmp_path)
    same, rows = _sections(with_defaults.stdout)
    assert {"PatientName", "ImagePositionPatient", "InstanceNumber"} <= set(same) | set(rows[0])


def test_every_top_level_element_with_star(exam, tmp_path):
    from pydicom import dcmread

    result = _info("-t", "*", exam / "IM_00001", exam / "IM_00002", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    same, rows = _sections(result.stdout)
    keywords = {e.keyword for f in ("IM_00001", "IM_00002") for e in dcmread(exam / f, stop_before_pixels=True)
                if e.keyword}
    assert keywords <= set(same) | set(rows[0])


def test_full_paths_and_folding(exam, tmp_path):
    files = sorted(exam.glob("IM_000*"))[:5]
    result = _info("-w", "60", *files, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    table = result.stdout.split("Different", 1)[1].splitlines()[1:]
    assert max(len(line) for line in table) <= 60
    assert sum(line.startswith("file ") for line in table) >= 2  # folded: the header repeats
    assert {line.split()[0] for line in table if line.startswith("IM_")} == {f.name for f in files}
    folded = _info("-t", "SOPInstanceUID", "-x", "-w", "30", files[0], tmp_path=tmp_path)
    uid_lines = folded.stdout.splitlines()[1:]
    assert len(uid_lines) >= 2 and all(len(line) <= 30 for line in uid_lines)
    from pydicom import dcmread

    assert uid_lines[0].split() == ["SOPInstanceUID", "(0008,0018)"]  # the label leaves no room: value below
    assert "".join(line.strip() for line in uid_lines[1:]) == dcmread(files[0]).SOPInstanceUID
    full = _info("-f", *files, tmp_path=tmp_path)
    assert all(f"\n{f} " in full.stdout for f in files)


def test_unknown_tag_and_bad_switches_are_one_line_errors(exam, tmp_path):
    result = _info("-t", "EchoTimme", exam, tmp_path=tmp_path)
    assert result.returncode == 2 and "EchoTime" in result.stderr and "Traceback" not in result.stderr
    assert _info("-x", exam, tmp_path=tmp_path).returncode == 2
    assert _info("-r", "SeriesNumber", "-l", exam, tmp_path=tmp_path).returncode == 2
    assert _info(tmp_path=tmp_path).returncode == 2


def test_settings_from_dcminforc_and_from_toml(exam, tmp_path):
    env = _env(tmp_path)
    home = Path(env["HOME"])
    (home / ".dcminforc").write_text("# lab defaults\nTags SeriesNumber EchoTime\nTags 0018,0050\nMaxWidth 120\n")
    files = sorted(exam.glob("IM_000*"))[:4]
    result = run_cli("info", *files, env=env)
    assert result.returncode == 0, result.stderr
    same, rows = _sections(result.stdout)
    assert set(same) | set(rows[0] if rows else {}) - {"file"} <= {"SeriesNumber", "EchoTime", "SliceThickness",
                                                                    "file"}
    config = home / ".config" / "dcmpipe"
    config.mkdir(parents=True)
    (config / "dcminfo.toml").write_text('tags = ["PatientID"]\n')
    result = run_cli("info", *files, env=env)
    same, rows = _sections(result.stdout)
    assert set(same) == {"PatientID"} and not rows
    (home / ".dcminforc").write_text("Tagz PatientID\n")
    result = run_cli("info", *files, env=env)
    assert result.returncode != 0 and ".dcminforc, line 1" in result.stderr


def _enhanced(path: Path, frames: int = 6) -> Path:
    """pydicom's Enhanced MR file with per-frame functional groups: 3 slices x 2 echoes, b-values."""
    from pydicom import dcmread
    from pydicom.dataset import Dataset

    ds = dcmread(DATA / "emri_small.dcm")
    shared = Dataset()
    timing = Dataset()
    timing.RepetitionTime, timing.FlipAngle = 2000.0, 90.0
    shared.MRTimingAndRelatedParametersSequence = [timing]
    ds.SharedFunctionalGroupsSequence = [shared]
    per_frame = []
    for n in range(frames):
        group = Dataset()
        content, position, echo, diffusion = Dataset(), Dataset(), Dataset(), Dataset()
        content.InStackPositionNumber, content.TemporalPositionIndex = n % 3 + 1, 1
        content.DimensionIndexValues = [n % 3 + 1, n // 3 + 1]
        position.ImagePositionPatient = [0.0, 0.0, 5.0 * (n % 3)]
        echo.EffectiveEchoTime = 10.0 * (n // 3 + 1)
        diffusion.DiffusionBValue = 1000.0
        group.FrameContentSequence, group.PlanePositionSequence = [content], [position]
        group.MREchoSequence, group.MRDiffusionSequence = [echo], [diffusion]
        per_frame.append(group)
    ds.PerFrameFunctionalGroupsSequence = per_frame
    ds.NumberOfFrames = frames
    ds.PixelData = ds.PixelData[: len(ds.PixelData) * frames // 10]
    ds.save_as(path)
    return path


def test_frames_of_an_enhanced_mr_file_show_what_varies(tmp_path):
    path = _enhanced(tmp_path / "enhanced.dcm")
    result = _info("--frames", path, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("enhanced.dcm: 6 frames")
    same, rows = _sections(result.stdout)
    assert [r["frame"] for r in rows] == [f"frame {n}" for n in range(1, 7)]
    assert [r["InStackPositionNumber"] for r in rows] == ["1", "2", "3", "1", "2", "3"]
    assert [r["EffectiveEchoTime"] for r in rows] == ["10", "10", "10", "20", "20", "20"]
    assert rows[2]["ImagePositionPatient"] == "0\\0\\10"
    assert same["DiffusionBValue"] == "1000" and same["RepetitionTime"] == "2000"
    assert "TemporalPositionIndex" in same and "DiffusionBValue" not in rows[0]


def test_first_found_and_every_occurrence_inside_sequences(tmp_path):
    path = _enhanced(tmp_path / "enhanced.dcm")
    plain = _info("-t", "EffectiveEchoTime:InStackPositionNumber", "-x", path, tmp_path=tmp_path)
    same, _ = _sections(plain.stdout)
    assert same == {"EffectiveEchoTime": "10", "InStackPositionNumber": "1"}
    every = _info("-s", "-t", "EffectiveEchoTime", "-x", path, tmp_path=tmp_path)
    same, _ = _sections(every.stdout)
    assert same["EffectiveEchoTime"] == " | ".join(["10"] * 3 + ["20"] * 3)


@pytest.mark.skipif(not FOUR_D.is_file(), reason=f"{FOUR_D} (shared corpus) not present")
def test_frames_of_a_real_multiframe_file_match_pydicom(tmp_path):
    from pydicom import dcmread

    result = _info("--frames", FOUR_D, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    same, rows = _sections(result.stdout)
    ds = dcmread(FOUR_D, stop_before_pixels=True)
    frames = ds.PerFrameFunctionalGroupsSequence
    assert len(rows) == len(frames) == 8
    for row, frame in zip(rows, frames):
        content = frame.FrameContentSequence[0]
        assert row["InStackPositionNumber"] == str(content.InStackPositionNumber)
        assert row["TemporalPositionIndex"] == str(content.TemporalPositionIndex)
        assert row["DimensionIndexValues"] == "\\".join(str(v) for v in content.DimensionIndexValues)
    assert same["StackID"] == "1"


def test_list_and_dump_cover_every_element(tmp_path):
    from pydicom import dcmread
    from pydicom.data import get_testdata_file

    source = get_testdata_file("CT_small.dcm")
    ds = dcmread(source)
    listed = _info("-l", source, tmp_path=tmp_path)
    assert listed.returncode == 0, listed.stderr
    tags = [line.split()[0] for line in listed.stdout.splitlines()]
    assert tags == sorted(tags)
    expected = {f"({e.tag.group:04X},{e.tag.element:04X})" for e in ds.iterall()}
    expected |= {f"({e.tag.group:04X},{e.tag.element:04X})" for e in ds.file_meta}
    assert set(tags) == expected
    by_name = _info("-l", "-k", source, tmp_path=tmp_path)
    names = [line.split("  ")[0].strip() for line in by_name.stdout.splitlines()]
    assert names == sorted(names, key=str.lower)
    assert ".PrivateCreator" in names
    dumped = _info("-a", source, tmp_path=tmp_path)
    assert dumped.returncode == 0
    lines = dumped.stdout.splitlines()
    assert f"PatientName{' ' * 3}" in dumped.stdout or any(
        line.startswith("PatientName") and line.endswith(str(ds.PatientName)) for line in lines)
    top = [line for line in lines if not line.startswith(" ")]
    assert len(top) == len(ds) + len(ds.file_meta)
    assert all(line.startswith(".") for line, e in zip(top[len(ds.file_meta):], ds) if e.tag.is_private)


def test_dump_of_a_file_that_is_not_dicom_is_one_line(exam, tmp_path):
    result = _info("-a", exam / "notes.txt", exam / "IM_00001", tmp_path=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == f"dcmpipe: error: {exam / 'notes.txt'}: not a DICOM file"
    assert "PatientName" in result.stdout


@pytest.mark.dcmtk
@pytest.mark.skipif(shutil.which("dcmdump") is None, reason="DCMTK dcmdump not installed")
def test_dump_shows_every_top_level_value_dcmdump_shows(tmp_path):
    from pydicom.data import get_testdata_file

    source = get_testdata_file("MR_small.dcm")
    ours = _info("-a", source, tmp_path=tmp_path).stdout
    theirs = subprocess.run(["dcmdump", "-q", "+L", source], capture_output=True, text=True).stdout
    checked = 0
    for line in theirs.splitlines():
        match = re.match(r"^\((\w{4}),(\w{4})\) (\w\w) \[(.*)\]\s+#.*\s(\w+)$", line)
        if not match or match.group(3) in ("OB", "OW", "UN") or int(match.group(1), 16) % 2:
            continue
        value, keyword = match.group(4).rstrip(), match.group(5)
        assert re.search(rf"^{keyword}\s+{re.escape(value)}$", ours, re.M), (keyword, value)
        checked += 1
    assert checked > 40


# -- renaming ---------------------------------------------------------------------------------------


@pytest.fixture
def series(tmp_path) -> Path:
    from dcmpipe.demo import SeriesPlan, StudyPlan, generate

    folder = tmp_path / "series"
    generate(folder, [StudyPlan("1", "R^S", "P9", "Knee", [SeriesPlan(5, "PD ../../etc/x", slices=12),
                                                            SeriesPlan(6, "T2", slices=8)])])
    return folder


def test_rename_check_then_rename_then_again(series, tmp_path):
    from pydicom import dcmread

    before = {p.name: dcmread(p).SOPInstanceUID for p in series.iterdir()}
    check = _info("-r", "SeriesNumber:InstanceNumber", "-c", *sorted(series.iterdir()), tmp_path=tmp_path)
    assert check.returncode == 0, check.stderr
    assert sorted(p.name for p in series.iterdir()) == sorted(before)
    planned = dict(re.findall(r"(\S+) -> (\S+)", check.stdout))
    assert len(planned) == 20
    done = _info("-r", "SeriesNumber:InstanceNumber", *sorted(series.iterdir()), tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    after = {p.name: dcmread(p) for p in series.iterdir()}
    assert len(after) == 20
    for name, ds in after.items():
        assert name == f"{ds.SeriesNumber}_{ds.InstanceNumber}.dcm"
    assert {Path(old).name: new for old, new in planned.items()} == {
        old: next(n for n, d in after.items() if d.SOPInstanceUID == uid) for old, uid in before.items()}
    again = _info("-r", "SeriesNumber:InstanceNumber", "-q", *sorted(series.iterdir()), tmp_path=tmp_path)
    assert again.returncode == 0 and again.stdout == ""
    assert sorted(p.name for p in series.iterdir()) == sorted(after)


def test_rename_values_cannot_leave_the_folder(series, tmp_path):
    result = _info("-r", "SeriesDescription:InstanceNumber", *sorted(series.iterdir()), tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    names = sorted(p.name for p in series.iterdir())
    assert len(names) == 20 and all("/" not in n and not n.startswith(".") for n in names)
    assert "PD_.._.._etc_x_1.dcm" in names or "PD_etc_x_1.dcm" in names or any(n.startswith("PD_") for n in names)
    assert not (tmp_path / "etc").exists()


def _unchanged(folder: Path, names: list[str]) -> bool:
    return sorted(p.name for p in folder.iterdir()) == sorted(names)


def test_rename_refusals_rename_nothing(series, tmp_path):
    names = sorted(p.name for p in series.iterdir())
    files = sorted(series.iterdir())
    # two files would get the same name
    same = _info("-r", "SeriesNumber", *files, tmp_path=tmp_path)
    assert same.returncode == 1 and "would get the name 5.dcm" in same.stderr
    assert _unchanged(series, names)
    # a tag missing in some files
    from pydicom import dcmread

    ds = dcmread(files[0])
    ds.ProtocolName = "only here"
    ds.save_as(files[0])
    missing = _info("-r", "ProtocolName:InstanceNumber", *files, tmp_path=tmp_path)
    assert missing.returncode == 1 and "has no ProtocolName" in missing.stderr
    assert missing.stderr.count("has no ProtocolName") == 19
    assert _unchanged(series, names)
    # the new name is taken by a file that is not renamed
    ds = dcmread(files[1])
    taken = series / f"{ds.SeriesNumber}_{ds.InstanceNumber}.dcm"
    taken.write_text("someone else's file\n")
    clash = _info("-r", "SeriesNumber:InstanceNumber", *files, tmp_path=tmp_path)
    assert clash.returncode == 1 and "already has" in clash.stderr
    assert _unchanged(series, names + [taken.name])
    assert taken.read_text() == "someone else's file\n"


def test_recipe_table_written_to_a_file(exam, tmp_path):
    out = tmp_path / "table.txt"
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'[[step]]\nread = "files"\npath = "{exam}"\nsettle = 0\n\n'
                      '[[step]]\ntransform = "info-values"\ntags = ["SeriesNumber", "EchoTime"]\n\n'
                      f'[[step]]\nexport = "info-table"\noutput = "{out}"\n')
    result = run_cli("run", recipe, "--jobs", "2", env=_env(tmp_path))
    assert result.returncode == 0, result.stderr
    same, rows = _sections(out.read_text())
    assert len(rows) == 260 and set(rows[0]) == {"file", "SeriesNumber", "EchoTime"}
    assert sorted({r["SeriesNumber"] for r in rows}) == ["3", "4", "9"]
    again = run_cli("run", recipe, env=_env(tmp_path))
    assert again.returncode == 2 and "already exists" in again.stderr


def test_print_recipe(exam, tmp_path):
    result = _info("-t", "EchoTime", "--print-recipe", exam, tmp_path=tmp_path)
    assert 'transform = "info-values"' in result.stdout and '"EchoTime"' in result.stdout
    assert 'export = "info-table"' in result.stdout
    result = _info("-r", "SeriesNumber", "--print-recipe", exam, tmp_path=tmp_path)
    assert 'name = "tag-values"' in result.stdout and 'export = "rename"' in result.stdout
    assert os.listdir(exam)


CORPUS = SHARED / "corpus"


@pytest.mark.skipif(not (CORPUS / "MANIFEST.tsv").is_file(), reason=f"{CORPUS} (shared corpus) not present")
def test_every_file_of_the_real_corpus_is_in_the_table_or_named_as_not_dicom(tmp_path):
    result = _info("-w", "100000", CORPUS, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    _, rows = _sections(result.stdout)
    bad = re.findall(r"^  (\S+): (.+)$", result.stdout.split("Not DICOM", 1)[1], re.M)
    files = {str(p.relative_to(CORPUS)) for p in CORPUS.rglob("*") if p.is_file()}
    shown = [r["file"] for r in rows] + [name for name, _ in bad]
    assert sorted(shown) == sorted(files)
    assert {"MANIFEST.tsv", "README.md"} <= {name for name, _ in bad}
    by_file = {r["file"]: r for r in rows}
    assert by_file["pydicom/CT_small.dcm"]["Modality"] == "CT"
    if "nibabel-sdist/4d_multiframe_test_8frames.dcm" in by_file:  # an Enhanced file: found in its groups
        assert by_file["nibabel-sdist/4d_multiframe_test_8frames.dcm"]["RepetitionTime"] == "6.3"


def test_character_sets_in_the_table_and_the_dump(tmp_path):
    from pydicom import dcmread
    from pydicom.data import get_charset_files

    names = ["chrRuss.dcm", "chrJapMulti.dcm", "chrGreek.dcm", "chrH31.dcm", "chrX1.dcm", "chrArab.dcm"]
    for n in names:
        shutil.copy(get_charset_files(n)[0], tmp_path / n)
    result = _info("-t", "PatientName", "-x", *(tmp_path / n for n in names), tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    _, rows = _sections(result.stdout)
    got = {r["file"]: r["PatientName"] for r in rows}
    assert got == {n: str(dcmread(tmp_path / n).PatientName) for n in names}
    assert got["chrRuss.dcm"] == "Люкceмбypг"
    dumped = _info("-a", tmp_path / "chrJapMulti.dcm", tmp_path=tmp_path)
    assert re.search(r"^PatientName\s+やまだ\^たろう$", dumped.stdout, re.M)
