"""dcmcleanup: tidy a folder filled from a scanner console; nothing a user could need is lost."""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
from pathlib import Path

import pytest

from conftest import run_cli
from test_dcmexamcard import DATA as EXAMCARD_DATA
from test_dcmexamcard import make_examcard_object

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
PARREC = SHARED / "corpus" / "parrec"
OLD = 1_000_000_000


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): digest(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def age(folder: Path) -> None:
    for p in folder.rglob("*"):
        os.utime(p, (OLD, OLD))


@pytest.fixture
def scanner_folder(export, tmp_path) -> Path:
    """What a technologist copies from the console: images, XX_ objects, a DICOMDIR, debris."""
    from pydicom.data import get_testdata_file

    folder = tmp_path / "s1"
    folder.mkdir()
    for p in sorted((export / "DICOM").iterdir()):
        shutil.copy(p, folder / p.name)
    series_raw = folder / "XX_0002"
    series_raw.write_bytes(gzip.decompress((EXAMCARD_DATA / "2101_WIP_fcMRI_Raw.dcm.gz").read_bytes()))
    make_examcard_object(series_raw, folder / "XX_0001", "Brain research")
    shutil.copy(get_testdata_file("DICOMDIR"), folder / "DICOMDIR")
    shutil.copy(folder / "IM_00001", folder / "IM_00001 (1)")  # exported twice
    (folder / "IM_00099").write_bytes(b"")  # an empty file
    (folder / "notes.txt").write_text("patient moved in run 2\n")
    (folder / "Thumbs.db").write_bytes(b"\0" * 10)
    age(folder)
    return folder


def test_dry_run_shows_the_plan_and_changes_nothing(scanner_folder):
    before = snapshot(scanner_folder)
    result = run_cli("cleanup", "--dry-run", scanner_folder)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "rename  IM_00001 -> " in out
    assert "delete  IM_00001 (1)  (exact duplicate of IM_00001)" in out
    assert "delete  IM_00099  (empty file)" in out
    assert "move    XX_0002 -> extras/XX_0002" in out and "no ExamCard in it" in out
    assert "move    XX_0001 -> extras/XX_0001" in out and "ExamCard Brain_research.ExamCard to write" in out
    assert "move    DICOMDIR -> extras/DICOMDIR" in out
    assert "move    Thumbs.db -> extras/Thumbs.db" in out
    assert "keep    notes.txt" in out and "keep    IM_BROKEN" in out
    assert snapshot(scanner_folder) == before


def test_answer_no_changes_nothing(scanner_folder):
    before = snapshot(scanner_folder)
    result = run_cli("cleanup", scanner_folder, input="n\n")
    assert result.returncode == 0, result.stderr
    assert "Clean-up plan for" in result.stdout and "Go ahead?" in result.stderr
    assert "nothing changed" in result.stderr
    assert snapshot(scanner_folder) == before
    no_answer = run_cli("cleanup", scanner_folder, input="")
    assert no_answer.returncode == 0 and snapshot(scanner_folder) == before


def test_cleanup_renames_extracts_moves_and_deletes_only_copies(scanner_folder):
    before = snapshot(scanner_folder)
    result = run_cli("cleanup", scanner_folder, input="y\n")
    assert result.returncode == 0, result.stderr
    after = snapshot(scanner_folder)
    # Every content that was there is still there (except the empty file and the second copy) ...
    assert set(before.values()) - set(after.values()) == {hashlib.sha256(b"").hexdigest()}
    assert list(after.values()).count(before["IM_00001"]) == 1
    # ... under the new names
    names = set(after)
    assert {"notes.txt", "IM_BROKEN", "Brain_research.ExamCard"} <= names
    assert {"extras/XX_0001", "extras/XX_0002", "extras/DICOMDIR", "extras/Thumbs.db"} <= names
    assert not any(n.startswith("IM_000") for n in names)
    from pydicom import dcmread

    for name in names:
        if name.endswith(".dcm"):
            ds = dcmread(scanner_folder / name, stop_before_pixels=True)
            from dcmpipe.naming import component

            assert name.startswith(f"{int(ds.SeriesNumber):02d}_{component(ds.SeriesDescription)}_"), name
    assert (scanner_folder / "Brain_research.ExamCard").read_bytes().startswith(b"<SOAP-ENV:Envelope>")
    assert "cleanup: 36 renamed, 4 moved to extras, 2 deleted, 1 ExamCard files written" in result.stderr
    # A second run finds nothing to do.
    again = run_cli("cleanup", "-y", scanner_folder)
    assert again.returncode == 0, again.stderr
    assert "nothing to change" in again.stderr
    assert snapshot(scanner_folder) == after


def test_names_taken_by_other_files_are_never_overwritten(scanner_folder):
    plan = run_cli("cleanup", "--dry-run", scanner_folder).stdout
    target = next(line.split(" -> ")[1] for line in plan.splitlines() if line.startswith("rename  IM_00003 "))
    (scanner_folder / target).write_text("a file of the user's with that name")
    os.utime(scanner_folder / target, (OLD, OLD))
    result = run_cli("cleanup", "-y", scanner_folder)
    assert result.returncode == 0, result.stderr
    assert (scanner_folder / target).read_text() == "a file of the user's with that name"
    assert (scanner_folder / target.replace(".dcm", "_2.dcm")).is_file()


def test_files_still_arriving_are_left_alone(scanner_folder):
    os.utime(scanner_folder / "IM_00002")  # just now
    result = run_cli("cleanup", "-y", scanner_folder)
    assert result.returncode == 0, result.stderr
    assert (scanner_folder / "IM_00002").is_file()
    dry = run_cli("cleanup", "--dry-run", "--wait", "0", scanner_folder)
    assert "rename  IM_00002 -> " in dry.stdout


def test_recipe_options_and_alias(scanner_folder, tmp_path):
    recipe = run_cli("dcmcleanup", "-y", "--keep-duplicates", "--no-examcards", "--print-recipe", scanner_folder)
    assert recipe.returncode == 0, recipe.stderr
    text = recipe.stdout
    assert 'read = "cleanup"' in text and 'export = "cleanup"' in text and "ask = false" in text
    (tmp_path / "clean.toml").write_text(text)
    result = run_cli("run", tmp_path / "clean.toml")
    assert result.returncode == 0, result.stderr
    names = set(snapshot(scanner_folder))
    assert not any(n.endswith(".ExamCard") for n in names)
    assert len([n for n in names if n.startswith("03_Scout_CT")]) == 3  # the duplicate kept, named apart


def test_bad_extras_name_is_refused(scanner_folder):
    before = snapshot(scanner_folder)
    result = run_cli("cleanup", "-y", "--extras", "../elsewhere", scanner_folder)
    assert result.returncode != 0
    assert "--extras" in result.stderr and "Traceback" not in result.stderr
    assert snapshot(scanner_folder) == before


def test_a_duplicate_changed_after_planning_is_kept(scanner_folder):
    from dcmpipe import Skip
    from dcmpipe.plugins._cleanup_plan import PlanOptions, plan_folder
    from dcmpipe.plugins.dcmcleanup import CleanupExport

    actions = {a.path.name: a for a in plan_folder(scanner_folder, PlanOptions(settle=0))}
    dup = actions["IM_00001 (1)"]
    assert dup.kind == "delete" and dup.keeper == scanner_folder / "IM_00001"
    with open(scanner_folder / "IM_00001 (1)", "ab") as f:
        f.write(b"\0")
    with pytest.raises(Skip):
        CleanupExport._delete(dup)
    assert (scanner_folder / "IM_00001 (1)").exists()
    (scanner_folder / "IM_00099").write_bytes(b"now written")
    with pytest.raises(Skip):
        CleanupExport._delete(actions["IM_00099"])
    assert (scanner_folder / "IM_00099").read_bytes() == b"now written"


def test_par_rec_pairs_are_renamed_together_and_never_orphaned(tmp_path):
    if not (PARREC / "phantom_EPI_asc_CLEAR_2_1.PAR").exists():
        pytest.skip(f"{PARREC} is absent (the shared corpus is not on this machine)")
    folder = tmp_path / "parrec"
    folder.mkdir()
    for ext in (".PAR", ".REC"):
        shutil.copy(PARREC / f"phantom_EPI_asc_CLEAR_2_1{ext}", folder / f"phantom_EPI_asc_CLEAR_2_1{ext}")
    shutil.copy(PARREC / "phantom_varscale.REC", folder / "other.REC")  # same size, other data
    shutil.copy(PARREC / "phantom_varscale.PAR", folder / "other.PAR")
    shutil.copy(PARREC / "phantom_EPI_asc_CLEAR_2_1.REC", folder / "copy.REC")  # same data ...
    shutil.copy(PARREC / "T1.PAR", folder / "copy.PAR")  # ... but its own header
    shutil.copy(PARREC / "T2.PAR", folder / "lonely.PAR")  # no REC
    age(folder)
    before = snapshot(folder)
    result = run_cli("cleanup", "-y", folder)
    assert result.returncode == 0, result.stderr
    after = snapshot(folder)
    assert sorted(before.values()) == sorted(after.values())  # nothing lost, nothing deleted
    where = {d: n for n, d in after.items()}
    for stem in ("phantom_EPI_asc_CLEAR_2_1", "other", "copy"):  # each header still beside its data
        new_par = where[before[f"{stem}.PAR"]]  # the PAR files differ from one another
        assert after[new_par[:-4] + ".REC"] == before[f"{stem}.REC"]
        assert new_par.startswith(("02_EPI_asc_CLEAR", "06_T1_SENSE")), new_par
    assert where[before["phantom_EPI_asc_CLEAR_2_1.PAR"]] in ("02_EPI_asc_CLEAR.PAR", "02_EPI_asc_CLEAR_2.PAR")
    assert "lonely.PAR" in after  # a PAR without its REC keeps its name


def test_extras_already_holding_a_different_file_of_that_name(scanner_folder):
    (scanner_folder / "extras").mkdir()
    (scanner_folder / "extras" / "XX_0002").write_text("from an earlier clean-up")
    result = run_cli("cleanup", "-y", scanner_folder)
    assert result.returncode == 0, result.stderr
    assert (scanner_folder / "extras" / "XX_0002").read_text() == "from an earlier clean-up"
    assert (scanner_folder / "extras" / "XX_0002_2").stat().st_size > 700_000


def test_recursive_renames_inside_each_folder(export):
    before = snapshot(export)
    result = run_cli("cleanup", "-y", "-R", export)
    assert result.returncode == 0, result.stderr
    after = snapshot(export)
    assert sorted(before.values()) == sorted(after.values())  # nothing deleted, nothing lost
    assert after["README.txt"] == before["README.txt"] and after["DICOM/IM_BROKEN"] == before["DICOM/IM_BROKEN"]
    renamed = [n for n in after if n.endswith(".dcm")]
    assert len(renamed) == 36 and all(n.startswith("DICOM/") and "/" not in n[6:] for n in renamed)
    flat = run_cli("cleanup", "--dry-run", export)  # without -R the sub-folder is not entered
    assert "DICOM/" not in flat.stdout
