"""Tests of the site-rules router, on real DICOM files.

``dcmpipe.demo.generate`` writes real DICOM series (made from pydicom's
bundled test files) with the Study Description, patient and series you ask
for.  The end-to-end tests run ``recipe.toml`` as dcmpipe would; they need
the plugin installed (``pip install -e '.[test]'``) so that dcmpipe finds it
through its entry point.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from dcmpipe import Context, Item, RecipeError
from dcmpipe.testing import registered
from dcmpipe.demo import SeriesPlan, StudyPlan, generate
from dcmpipe.recipe import load_recipe
from dcmpipe.runner import run_recipe

import dcmpipe_siterouter
from dcmpipe_siterouter import SiteRules, SiteRulesOptions

PROJECT = Path(__file__).resolve().parents[1]
RECIPE = PROJECT / "recipe.toml"


def study(study_id: str, description: str, referrer: str = "", slices: int = 2) -> StudyPlan:
    extra = {"ReferringPhysicianName": referrer} if referrer else {}
    return StudyPlan(study_id, f"TEST^{study_id}", f"P{study_id}", description,
                     [SeriesPlan(1, "T1", slices=slices, extra=extra)])


def one_file(folder: Path, description: str, referrer: str = "") -> Item:
    """A real DICOM file with this Study Description, as an item with its header read."""
    (path,) = generate(folder, [study("1", description, referrer, slices=1)])
    item = Item(source=path)
    item.load_header(None)
    assert item.ok, item.reason
    return item


def router(root: Path, rules: list[str], **options) -> SiteRules:
    return SiteRules(SiteRulesOptions(root=root, rules=rules, **options), Context(base_dir=root))


# -- the step on its own --------------------------------------------------------


def test_first_matching_prefix_decides_ignoring_case(tmp_path):
    step = router(tmp_path, ["NEURO=neuro", "CARDIAC=cardiac/adult"])
    assert step.route(one_file(tmp_path / "a", "Neuro^Brain routine")) == tmp_path / "neuro"
    assert step.route(one_file(tmp_path / "b", "cardiac function")) == tmp_path / "cardiac" / "adult"


def test_no_match_goes_to_default_or_to_the_next_route_step(tmp_path):
    item = one_file(tmp_path / "in", "Knee")
    assert router(tmp_path, ["NEURO=neuro"], default="unsorted").route(item) == tmp_path / "unsorted"
    assert router(tmp_path, ["NEURO=neuro"]).route(item) is None


def test_a_study_without_the_element_matches_no_rule(tmp_path):
    item = one_file(tmp_path / "in", "")
    assert item.get("StudyDescription") in (None, "")
    assert router(tmp_path, ["NEURO=neuro"]).route(item) is None


def test_matches_the_referring_physician_when_asked(tmp_path):
    item = one_file(tmp_path / "in", "Brain", referrer="HOUSE^GREGORY")
    rules = ["HOUSE=princeton", "BRAIN=neuro"]
    assert router(tmp_path, rules, field="ReferringPhysicianName").route(item) == tmp_path / "princeton"
    assert router(tmp_path, rules).route(item) == tmp_path / "neuro"


@pytest.mark.parametrize(("rules", "default", "message"), [
    (["NEURO"], "", "rule 1 'NEURO' has no '='"),
    (["=neuro"], "", "empty prefix"),
    (["NEURO=../elsewhere"], "", "no '..'"),
    (["NEURO=/data/neuro"], "", "no absolute path"),
    (["NEURO=neuro/.hidden"], "", "not starting with a dot"),
    (["NEURO=neuro research"], "", "letters, digits"),
    (["NEURO=neuro", "NEURO FMRI=fmri"], "", "rule 2 'NEURO FMRI=fmri' can never match: rule 1"),
    ([], "", "no rules"),
    (["NEURO=neuro"], "..", "option 'default'"),
])
def test_bad_options_are_refused_with_the_reason(tmp_path, rules, default, message):
    with pytest.raises(ValueError, match="option '") as caught:
        SiteRulesOptions(root=tmp_path, rules=rules, default=default)
    assert message in str(caught.value)


def test_every_bad_rule_is_reported_at_once(tmp_path):
    with pytest.raises(ValueError) as caught:
        SiteRulesOptions(root=tmp_path, rules=["NEURO", "BODY=ok", "KNEE=.."], default="/tmp")
    message = str(caught.value)
    assert "rule 1 'NEURO'" in message and "rule 3 'KNEE=..'" in message and "option 'default'" in message


def test_importing_the_plugin_does_not_import_pydicom():
    code = "import sys, dcmpipe_siterouter; print('pydicom' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "False"


# -- installed: found by dcmpipe, running the recipe ----------------------------


@pytest.fixture
def registry():
    """dcmpipe's registry with installed plugins loaded, forgotten afterwards."""
    if not any(ep.value == "dcmpipe_siterouter" for ep in entry_points(group="dcmpipe")):
        pytest.fail("the plugin is not installed: run  pip install -e '.[test]'  in the project folder")
    with registered(installed=True) as reg:  # installed plugins even where a host test suite disables them
        yield reg


def test_dcmpipe_finds_the_step_through_the_entry_point(registry):
    found = registry.lookup("route", "site-rules")
    assert found.cls.__module__ == dcmpipe_siterouter.__name__
    assert found.plugin.dist == "dcmpipe-siterouter"
    assert found.plugin.origin == "entry point"


def copy_recipe(tmp_path: Path) -> Path:
    """recipe.toml in tmp_path, with an export to sort in tmp_path/incoming."""
    generate(tmp_path / "incoming", [study("2001", "BRAIN^Routine"), study("2002", "Spine C"),
                                     study("2003", "Heart")])
    (tmp_path / "incoming" / "notes.txt").write_text("not DICOM\n")
    return Path(shutil.copy(RECIPE, tmp_path / "recipe.toml"))


def test_the_recipe_routes_by_rule_and_falls_back_to_fixed(registry, tmp_path):
    recipe = load_recipe(copy_recipe(tmp_path), registry=registry)
    summary = run_recipe(recipe, jobs=1, progress=False)
    assert summary.exit_code == 0, summary.failures
    assert (summary.read, summary.written, summary.bad) == (7, 6, 1)
    sorted_ = tmp_path / "sorted"
    assert sorted(p.name for p in (sorted_ / "neuro" / "2001" / "0001").iterdir()) == ["001", "002", "info"]
    assert len(list((sorted_ / "neuro" / "spine" / "2002" / "0001").iterdir())) == 3
    assert len(list((sorted_ / "other" / "2003" / "0001").iterdir())) == 3
    assert (sorted_ / "bad" / "notes.txt").is_file()
    assert len(list((tmp_path / "incoming").iterdir())) == 7  # copied, not moved


def test_a_bad_rule_in_the_recipe_names_the_step_and_the_option(registry, tmp_path):
    path = copy_recipe(tmp_path)
    path.write_text(path.read_text().replace('"KNEE=msk"', '"KNEE=../msk"'))
    with pytest.raises(RecipeError) as caught:
        load_recipe(path, registry=registry)
    (problem,) = caught.value.problems
    assert problem.startswith("step 2 (route = 'site-rules'): option 'rules': rule 3 'KNEE=../msk'")
    assert not (tmp_path / "sorted").exists()
