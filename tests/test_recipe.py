"""Recipes: validation reports every problem with its place, before any file is touched."""

from __future__ import annotations

import textwrap

from conftest import files_under, run_cli

BROKEN = """\
[recipe]
name = "broken"
autor = "me"

[[step]]
read = "files"
path = "incoming"
recursiv = true

[[step]]
route = "fixd"
dest = "out"

[[step]]
export = "fixed"

[[step]]
name = "hierarchical"
series_description = "yes"

[[step]]
export = "dicom"
mode = "teleport"

[[step]]
route = "fixed"

[[step]]
route = "patient-history"
name = "flat"
"""


def test_every_problem_is_reported_with_step_and_key(export, tmp_path):
    recipe = tmp_path / "broken.toml"
    recipe.write_text(BROKEN)
    before = files_under(export)
    for command in ("check", "run"):
        result = run_cli(command, recipe)
        assert result.returncode == 2, result.stderr
        err = result.stderr
        assert "Traceback" not in err
        assert "8 problems" in err
        assert "[recipe]: unknown key 'autor'" in err
        assert "step 1 (read = 'files'): unknown option 'recursiv'; did you mean 'recursive'?" in err
        assert "step 2 (route = 'fixd'): unknown route step 'fixd'; did you mean 'fixed'?" in err
        assert "step 3 (export = 'fixed'): 'fixed' is not a export step; it offers route" in err
        assert "step 4 (name = 'hierarchical'): option 'series_description' must be bool, not text ('yes')" in err
        assert "step 5 (export = 'dicom'): option 'mode' must be one of 'move' | 'copy', not 'teleport'" in err
        assert "step 6 (route = 'fixed'): missing required option 'dest'" in err
        assert "step 7: has 'route' and 'name'; a step has exactly one verb key" in err
    assert files_under(export) == before


def test_toml_syntax_error_names_the_line(tmp_path):
    recipe = tmp_path / "bad.toml"
    recipe.write_text("[[step]]\nread = files\n")
    result = run_cli("check", recipe)
    assert result.returncode == 2 and "not valid TOML" in result.stderr and "line 2" in result.stderr


def test_missing_recipe_file(tmp_path):
    result = run_cli("run", tmp_path / "nope.toml")
    assert result.returncode == 2 and "nope.toml: 1 problem" in result.stderr and "cannot read" in result.stderr


def test_recipe_without_read_step(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('[[step]]\nexport = "dicom"\n')
    result = run_cli("check", recipe)
    assert result.returncode == 2 and "no read step" in result.stderr


def test_paths_are_relative_to_the_recipe_folder(export, tmp_path):
    lab = tmp_path / "lab"
    lab.mkdir()
    (lab / "incoming").symlink_to(export)
    recipe = lab / "sort.toml"
    recipe.write_text(textwrap.dedent("""\
        [recipe]
        name = "sort"

        [[step]]
        read = "files"
        path = "incoming/DICOM"
        settle = 0

        [[step]]
        route = "fixed"
        dest = "sorted"

        [[step]]
        name = "flat"
        extension = ".dcm"

        [[step]]
        export = "dicom"
        mode = "copy"
        bad_dir = "sorted/bad"
        """))
    assert run_cli("check", recipe, cwd=tmp_path).returncode == 0
    result = run_cli("run", recipe, cwd=tmp_path)  # run from elsewhere
    assert result.returncode == 0, result.stderr
    assert (lab / "sorted" / "1001_0301_001.dcm").is_file()
    assert (lab / "sorted" / "bad" / "IM_BROKEN").is_file()
    assert not (tmp_path / "sorted").exists()


def test_dry_run_of_a_recipe_touches_nothing(export, tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'[[step]]\nread = "files"\npath = "{export}"\nrecursive = true\nsettle = 0\n'
                      '[[step]]\nroute = "fixed"\ndest = "out"\n[[step]]\nname = "unmove"\n'
                      '[[step]]\nexport = "dicom"\n')
    before = files_under(export)
    result = run_cli("run", "--dry-run", recipe)
    assert result.returncode == 0, result.stderr
    assert files_under(export) == before and not (tmp_path / "out").exists()
    assert result.stdout.count(" -> ") == 36
    assert f"keep {export}/DICOM/IM_BROKEN (not DICOM: " in result.stdout
    assert "36 to write, 0 skipped, 2 bad, 0 failed" in result.stderr


def test_non_dicom_files_nobody_handles_fail_the_run(export, tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'[[step]]\nread = "files"\npath = "{export}"\nsettle = 0\n'
                      '[[step]]\nroute = "fixed"\ndest = "out"\n[[step]]\nname = "unmove"\n')
    result = run_cli("run", recipe)
    assert result.returncode == 1
    assert f"{export}/README.txt: not a DICOM file" in result.stderr


def test_print_recipe_round_trips_through_toml(tmp_path):
    import tomllib

    from dcmpipe.recipe import dump_recipe

    data = {"recipe": {"name": 'odd "name"\\'}, "step": [
        {"read": "files", "path": ["a b", "c\\d"], "recursive": True, "settle": 1.5},
        {"export": "dicom", "mode": "copy"}]}
    assert tomllib.loads(dump_recipe(data)) == data


def test_single_files_and_missing_paths_as_sources(export, tmp_path):
    one = export / "DICOM" / "IM_00001"
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'[[step]]\nread = "files"\npath = ["{one}", "{tmp_path}/missing"]\nsettle = 0\n'
                      '[[step]]\nroute = "fixed"\ndest = "out"\n[[step]]\nname = "unmove"\n'
                      '[[step]]\nexport = "dicom"\nmode = "copy"\n')
    result = run_cli("run", recipe)
    assert result.returncode == 1
    assert f"{tmp_path}/missing: No such file or directory" in result.stderr
    assert "1 written" in result.stderr and "1 failed" in result.stderr and "Traceback" not in result.stderr
    assert len(files_under(tmp_path / "out")) == 1
