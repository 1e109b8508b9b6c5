"""dcm_move, as users run it: every switch, on real DICOM files, checked by reading the results."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pydicom
import pytest

from conftest import DATA, files_under, run_cli, sop_uids

MOVE = ("move", "--wait", "0")

EXPECTED = {
    "1001/0301": [f"{n:03d}" for n in range(1, 9)] + ["info"],
    "1001/0401": [f"{s:03d}_d{d:04d}" for s in range(1, 5) for d in range(1, 4)] + ["info"],
    "1001/0501": [f"{s:03d}_e{e:02d}" for s in range(1, 4) for e in range(1, 3)] + ["info"],
    "1002/0002": [f"{s:03d}_p{p:03d}" for s in range(1, 3) for p in range(1, 5)] + ["info"],
    "1002/0003": ["001", "002", "info"],
}


def tree(folder: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for path in files_under(folder):
        rel = path.relative_to(folder)
        out.setdefault("" if str(rel.parent) == "." else str(rel.parent), []).append(rel.name)
    return {k: sorted(v) for k, v in out.items()}


def header(path: Path):
    return pydicom.dcmread(path, stop_before_pixels=True)


def test_sort_all_builds_study_series_slice_tree(export, tmp_path):
    before = sop_uids(export)
    dest = tmp_path / "sorted"
    result = run_cli(*MOVE, "-a", "-R", "-s", export, dest)
    assert result.returncode == 0, result.stderr
    got = tree(dest)
    for folder, names in EXPECTED.items():
        assert got[folder] == sorted(names), folder
    assert got["bad"] == ["README.txt"] and got["bad/DICOM"] == ["IM_BROKEN"]
    assert files_under(export) == []  # everything moved
    assert sop_uids(dest) == before  # nothing lost, nothing duplicated
    assert "36 written" in result.stderr and "2 bad" in result.stderr and "0 failed" in result.stderr


def test_slice_numbers_follow_position_and_phases_follow_trigger_time(export, tmp_path):
    dest = tmp_path / "sorted"
    assert run_cli(*MOVE, "-a", "-R", "-s", export, dest).returncode == 0
    z = [float(header(dest / "1001/0301" / f"{n:03d}").ImagePositionPatient[2]) for n in range(1, 9)]
    assert z == sorted(z) and len(set(z)) == 8
    for s in (1, 2):
        times = [float(header(dest / "1002/0002" / f"{s:03d}_p{p:03d}").TriggerTime) for p in range(1, 5)]
        assert times == sorted(times)
    ds = header(dest / "1001/0401/003_d0002")
    assert int(ds.TemporalPositionIdentifier) == 2 and int(ds[0x2001, 0x100A].value) == 3
    assert int(header(dest / "1001/0501/002_e02").EchoNumbers) == 2


def test_philips_private_slice_number_wins_over_position(tmp_path):
    from dcmpipe.demo import SeriesPlan, StudyPlan, generate

    src = tmp_path / "in"
    paths = generate(src, [StudyPlan("7", "P^Q", "X", "d", [SeriesPlan(9, "rev", slices=4, philips=True)])])
    for path in paths:  # number the slices against the position order, as a descending acquisition does
        ds = pydicom.dcmread(path)
        ds[0x2001, 0x100A].value = 5 - int(ds[0x2001, 0x100A].value)
        ds.save_as(path)
    dest = tmp_path / "out"
    assert run_cli(*MOVE, "-a", "-s", src, dest).returncode == 0
    z = [float(header(dest / "7/0009" / f"{n:03d}").ImagePositionPatient[2]) for n in range(1, 5)]
    assert z == sorted(z, reverse=True)


def test_copy_keeps_source_and_copies_are_identical(export, tmp_path):
    dest = tmp_path / "sorted"
    before = {p: p.read_bytes() for p in files_under(export)}
    assert run_cli(*MOVE, "-a", "-R", "-c", "-s", export, dest).returncode == 0
    assert {p: p.read_bytes() for p in files_under(export)} == before
    originals = {header(p).SOPInstanceUID: data for p, data in before.items() if p.parent.name == "DICOM"
                 and p.name != "IM_BROKEN"}
    for path in files_under(dest):
        if path.name != "info" and "bad" not in path.parts:
            assert path.read_bytes() == originals[header(path).SOPInstanceUID]


def test_series_description_and_dcm_extension(export, tmp_path):
    dest = tmp_path / "sorted"
    assert run_cli(*MOVE, "-a", "-R", "-S", "-d", "-s", export, dest).returncode == 0
    got = tree(dest)
    assert "1001/0301_T1_3D" in got and "1001/0401_fMRI_rest" in got and "1002/0003_Scout_CT" in got
    assert "001.dcm" in got["1001/0301_T1_3D"] and "002_p004.dcm" in got["1002/0002_Cine"]


def test_flat_names_in_one_folder(export, tmp_path):
    dest = tmp_path / "flat"
    assert run_cli(*MOVE, "-a", "-R", "-f", "-s", export, dest).returncode == 0
    names = set(tree(dest)[""])
    assert {"1001_0301_001", "1001_0401_004_d0003", "1002_0002_002_p004", "1001_0301.info",
            "1001_0401.info", "1002_0002.info"} <= names
    assert len([n for n in names if n.endswith(".info")]) == 5
    assert "SeriesDescription: fMRI rest" in (dest / "1001_0401.info").read_text()


def test_rename_in_place_is_flat_and_stays_in_folder(export):
    result = run_cli(*MOVE, "-a", "-r", "-s", export / "DICOM")
    assert result.returncode == 0, result.stderr
    names = set(tree(export)["DICOM"])
    assert "1001_0301_001" in names and "IM_00001" not in names
    assert "IM_BROKEN" in names  # non-DICOM files stay where they are when renaming in place
    assert run_cli(*MOVE, "-a", "-r", "-s", export, "somewhere").returncode == 2


def test_unmove_names_by_sop_instance_uid(export, tmp_path):
    dest = tmp_path / "sorted"
    assert run_cli(*MOVE, "-a", "-R", "-s", export, dest).returncode == 0
    back = tmp_path / "back"
    assert run_cli(*MOVE, "-a", "-R", "-u", "-b", "-s", dest, back).returncode == 0
    for path in files_under(back):
        assert path.name == header(path).SOPInstanceUID
    assert len(files_under(back)) == 36


def test_no_breakdown_numbers_by_instance_number(export, tmp_path):
    dest = tmp_path / "sorted"
    assert run_cli(*MOVE, "-a", "-R", "-n", "-s", export, dest).returncode == 0
    for path in (dest / "1001/0401").iterdir():
        if path.name != "info":
            assert int(path.name) == int(header(path).InstanceNumber)
    assert len(list((dest / "1001/0401").iterdir())) == 13


def test_info_file_holds_study_patient_series_and_i_switch_drops_it(export, tmp_path):
    dest = tmp_path / "sorted"
    assert run_cli(*MOVE, "-a", "-R", "-c", "-s", export, dest).returncode == 0
    info = (dest / "1001/0401/info").read_text()
    assert "PatientName: DEMO^ALICE" in info and "SeriesDescription: fMRI rest" in info
    assert "StudyID: 1001" in info and "PHI" in info
    dest2 = tmp_path / "sorted2"
    assert run_cli(*MOVE, "-a", "-R", "-i", "-s", export, dest2).returncode == 0
    assert not any(p.name == "info" for p in files_under(dest2))


def test_location_in_patient_history(tmp_path):
    from dcmpipe.demo import SeriesPlan, StudyPlan, generate

    special = tmp_path / "special"
    special.mkdir()
    src = tmp_path / "in"
    generate(src, [StudyPlan("5", "H^I", "H1", "d", [SeriesPlan(1, "a", slices=2)], history=f"scan #-#{special}"),
                   StudyPlan("6", "J^K", "J1", "d", [SeriesPlan(1, "a", slices=2)], history="#-#/no/such/dir")])
    dest = tmp_path / "out"
    result = run_cli(*MOVE, "-a", "-c", "-s", src, dest)
    assert result.returncode == 0
    assert sorted(tree(special)["5/0001"]) == ["001", "002", "info"]
    assert "/no/such/dir" in result.stderr and "normal destination" in result.stderr
    assert (dest / "6/0001/001").is_file() and not (dest / "5").exists()
    ignored = tmp_path / "ignored"
    assert run_cli(*MOVE, "-a", "-c", "-l", "-s", src, ignored).returncode == 0
    assert (ignored / "5/0001/001").is_file()


def test_keep_bad_leaves_non_dicom_in_place(export, tmp_path):
    dest = tmp_path / "sorted"
    result = run_cli(*MOVE, "-a", "-R", "-b", "-s", export, dest)
    assert result.returncode == 0, result.stderr
    assert not (dest / "bad").exists()
    assert sorted(p.name for p in files_under(export)) == ["IM_BROKEN", "README.txt"]


def test_modality_filter(export, tmp_path):
    dest = tmp_path / "sorted"
    assert run_cli(*MOVE, "-a", "-R", "-b", "-m", "CT", "-s", export, dest).returncode == 0
    assert set(tree(dest)) == {"1002/0003"}
    assert len(files_under(export)) == 36  # 34 MR files + 2 non-DICOM stay


def test_without_recurse_subfolders_are_not_read(export, tmp_path):
    dest = tmp_path / "sorted"
    assert run_cli(*MOVE, "-a", "-s", export, dest).returncode == 0
    assert set(tree(dest)) == {"bad"} and len(files_under(export / "DICOM")) == 37


def test_quiet_prints_nothing_on_success(export, tmp_path):
    result = run_cli(*MOVE, "-a", "-R", "-q", "-s", export, tmp_path / "out")
    assert result.returncode == 0 and result.stderr == "" and result.stdout == ""


def test_asks_once_per_study_without_a(export, tmp_path):
    dest = tmp_path / "sorted"
    result = run_cli(*MOVE, "-R", "-s", export, dest, input="y\nn\n")
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("Process? [y/n]") == 2
    assert "patient DEMO^ALICE (ID P001), 3 series, 26 files" in result.stderr
    assert "patient DEMO^BOB (ID P002), 2 series, 10 files" in result.stderr
    alice_first = result.stderr.index("DEMO^ALICE") < result.stderr.index("DEMO^BOB")
    yes, no = ("1001", "1002") if alice_first else ("1002", "1001")
    assert (dest / yes).is_dir() and not (dest / no).exists()
    assert len(files_under(export / "DICOM")) == (10 if alice_first else 26)  # IM_BROKEN went to bad/


def test_dry_run_changes_nothing_and_says_what_would_happen(export, tmp_path):
    before = files_under(export)
    dest = tmp_path / "sorted"
    result = run_cli(*MOVE, "-a", "-R", "--dry-run", "-s", export, dest)
    assert result.returncode == 0, result.stderr
    assert files_under(export) == before and not dest.exists()
    assert f"-> {dest}/1001/0301/001" in result.stdout
    assert f"bad move {export}/README.txt -> {dest}/bad/README.txt" in result.stdout
    assert result.stdout.count("\n") >= 38


def test_print_recipe_runs_the_same(export, tmp_path):
    dest = tmp_path / "sorted"
    printed = run_cli(*MOVE, "-a", "-R", "-S", "-s", export, dest, "--print-recipe")
    assert printed.returncode == 0 and 'name = "hierarchical"' in printed.stdout
    recipe = tmp_path / "move.toml"
    recipe.write_text(printed.stdout)
    result = run_cli("run", recipe)
    assert result.returncode == 0, result.stderr
    assert "1001/0301_T1_3D" in tree(dest)


def test_never_overwrites_a_different_file_and_identical_counts_done(export, tmp_path):
    dest = tmp_path / "sorted"
    assert run_cli(*MOVE, "-a", "-R", "-c", "-s", export, dest).returncode == 0
    victim = dest / "1001/0301/001"
    victim.write_bytes(b"somebody else's file")
    result = run_cli(*MOVE, "-a", "-R", "-s", export, dest)
    assert result.returncode == 1
    assert "a different file already exists" in result.stderr and "Traceback" not in result.stderr
    assert victim.read_bytes() == b"somebody else's file"
    left = files_under(export)
    assert len(left) == 1 and header(left[0]).ImagePositionPatient[2] == -20.0  # the one that could not go


def test_files_still_arriving_are_left_for_the_next_run(export, tmp_path):
    fresh = export / "DICOM" / "IM_00001"
    series = header(fresh).SeriesInstanceUID
    same_series = [p for p in files_under(export / "DICOM") if p.name != "IM_BROKEN"
                   and header(p).SeriesInstanceUID == series]
    os.utime(fresh)  # just written: its whole series waits, so slices are numbered when all are there
    result = run_cli("move", "-a", "-R", "-s", export, tmp_path / "sorted")
    assert result.returncode == 0, result.stderr
    assert "1 file modified less than 5 s ago (still arriving?) left for the next run" in result.stderr
    assert sorted(files_under(export / "DICOM")) == sorted(same_series)
    result = run_cli("move", "-a", "-R", "--wait", "0", "-s", export, tmp_path / "sorted")
    assert result.returncode == 0, result.stderr
    assert files_under(export) == []
    got = tree(tmp_path / "sorted")
    for folder, names in EXPECTED.items():
        assert got[folder] == sorted(names), folder


def test_rerun_after_partial_series_numbers_the_rest_as_the_first_run_would(export, tmp_path):
    """A crash mid-series leaves part of it at the destination: the rest must get the same numbers."""
    dest = tmp_path / "sorted"
    assert run_cli(*MOVE, "-a", "-R", "-c", "-s", export, tmp_path / "reference").returncode == 0
    reference = tree(tmp_path / "reference")
    assert run_cli(*MOVE, "-a", "-R", "-s", export, dest).returncode == 0
    # put back half of the T1 series, as if the first run had been killed half-way through it
    for name in ("002", "005", "007", "info"):
        (dest / "1001/0301" / name).rename(export / "DICOM" / f"back_{name}")
    (export / "DICOM" / "back_info").unlink()
    assert run_cli(*MOVE, "-a", "-R", "-s", export, dest).returncode == 0
    assert tree(dest) == reference
    for name in reference["1001/0301"]:
        assert (dest / "1001/0301" / name).read_bytes() == (tmp_path / "reference/1001/0301" / name).read_bytes()


def test_enhanced_mr_file_is_sorted(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    (src / "enh").write_bytes((DATA / "emri_small.dcm").read_bytes())
    dest = tmp_path / "out"
    result = run_cli(*MOVE, "-a", "-s", src, dest)
    assert result.returncode == 0, result.stderr
    ds = header(DATA / "emri_small.dcm")
    moved = [p for p in files_under(dest) if p.name != "info"]
    assert len(moved) == 1 and header(moved[0]).SOPInstanceUID == ds.SOPInstanceUID
    assert moved[0].parent.name == f"{int(ds.SeriesNumber):04d}"


@pytest.mark.parametrize("args, message", [
    (("-s", "/no/such/folder", "out"), "does not exist"),
    (("-m", "XX", "out"), "Invalid value for '-m'"),
    (("--jobs", "0", "out"), "Invalid value for '--jobs'"),
])
def test_bad_command_lines_give_one_line_errors(args, message, tmp_path):
    result = run_cli("move", "-a", *args, cwd=tmp_path)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_move_across_file_systems(export_template, tmp_path):
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("no second file system (/dev/shm) on this machine")
    import shutil
    import tempfile

    src = Path(tempfile.mkdtemp(dir=shm))
    try:
        shutil.copytree(export_template, src / "in")
        before = sop_uids(src / "in")
        result = run_cli(*MOVE, "-a", "-R", "-s", src / "in", tmp_path / "out")
        assert result.returncode == 0, result.stderr
        assert sop_uids(tmp_path / "out") == before and files_under(src / "in") == []
        assert not [p for p in files_under(tmp_path / "out") if p.name.endswith(".dcmpipe-part")]
    finally:
        shutil.rmtree(src)


def test_python_api_runs_the_same_recipe(export, tmp_path):
    """The command is a recipe underneath: building it in Python gives the same result."""
    sys.path.insert(0, str(Path(__file__).parent))
    from dcmpipe.plugins.dcm_move import move_recipe
    from dcmpipe.recipe import build_recipe
    from dcmpipe.runner import run_recipe

    data = move_recipe(tmp_path / "out", export, True, None, True, False, False, False, False, False, False,
                       False, False, False, False, 0.0)
    summary = run_recipe(build_recipe(data, tmp_path), jobs=1)
    assert summary.exit_code == 0 and summary.written == 36 and summary.bad == 2
    assert tree(tmp_path / "out")["1001/0301"] == EXPECTED["1001/0301"]


def test_unsafe_tag_values_cannot_leave_the_destination(tmp_path):
    from dcmpipe.demo import SeriesPlan, StudyPlan, generate
    from dcmpipe.naming import component

    src = tmp_path / "in"
    generate(src, [StudyPlan("../../escape", "E^V", "E", "d",
                             [SeriesPlan(1, "../../../tmp/x\\y", slices=2)])])
    dest = tmp_path / "out"
    result = run_cli(*MOVE, "-a", "-S", "-s", src, dest)
    assert result.returncode == 0, result.stderr
    moved = files_under(dest)
    assert len(moved) == 3 and all(dest in p.parents for p in moved)
    assert {p.parent.relative_to(dest).as_posix() for p in moved} == {"escape/0001_tmp_x_y"}
    assert component("..") == "unknown" and component("/etc/passwd") == "etc_passwd"


def test_progress_bar_on_a_terminal_and_none_when_piped(export, tmp_path):
    import shutil
    import subprocess

    if not shutil.which("script"):
        pytest.skip("no 'script' command to give the run a terminal")
    cmd = f"{sys.executable} -m dcmpipe move -a -R --wait 0 -s {export} {tmp_path / 'out'}"
    typescript = tmp_path / "typescript"
    subprocess.run(["script", "-q", "-e", "-c", cmd, str(typescript)], check=True, capture_output=True,
                   stdin=subprocess.DEVNULL, timeout=60)
    screen = typescript.read_text(errors="replace")
    assert "/38" in screen and "/s" in screen  # done/total and the rate, redrawn in place
    piped = run_cli(*MOVE, "-a", "-R", "-c", "-s", tmp_path / "out", tmp_path / "again")
    assert "\r" not in piped.stderr and "/38" not in piped.stderr


def test_magnitude_and_phase_images_of_one_series_get_distinct_names(tmp_path):
    from dcmpipe.demo import SeriesPlan, StudyPlan, generate

    src = tmp_path / "in"
    paths = generate(src, [StudyPlan("8", "M^P", "MP", "d", [SeriesPlan(4, "ffe", slices=2)])])
    for n, path in enumerate(paths):  # a phase image beside every magnitude image, as Philips sends them
        ds = pydicom.dcmread(path)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M_FFE", "M", "FFE"]
        ds.save_as(path)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "P_FFE", "P", "FFE"]
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"1.2.3.4.{n}"
        ds.InstanceNumber = 10 + n
        ds.save_as(src / f"phase{n}")
    dest = tmp_path / "out"
    result = run_cli(*MOVE, "-a", "-s", src, dest)
    assert result.returncode == 0, result.stderr
    assert tree(dest)["8/0004"] == ["001_M_FFE", "001_P_FFE", "002_M_FFE", "002_P_FFE", "info"]
    assert list(header(dest / "8/0004/002_P_FFE").ImageType)[3] == "P"
