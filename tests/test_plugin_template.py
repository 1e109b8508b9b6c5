"""plugin-template/ is product code: install it as a user would and use it.

The template is copied to a temporary folder (so that building it leaves
nothing in the checkout) and installed with pip into a ``--target`` folder.
Then, in subprocesses with only that folder on ``PYTHONPATH`` and plugins
enabled (this suite disables installed plugins in its own process), dcmpipe
must list the plugin, run the template's recipe, and the template's own
tests must pass.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dcmpipe.demo import SeriesPlan, StudyPlan, generate

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "plugin-template"
HOOKSPECS = ROOT / "hookspecs" / "__init__.py"
GUIDE = ROOT / "docs" / "writing-a-plugin.md"
BUILD_LEFTOVERS = shutil.ignore_patterns("build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
                                         ".benchmarks")


def project() -> dict:
    return tomllib.loads((TEMPLATE / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def _pip(source: Path, target: Path, isolation: bool) -> subprocess.CompletedProcess:
    shutil.rmtree(target, ignore_errors=True)
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
               "--no-input", "--target", str(target), str(source)]
    if not isolation:
        command.insert(4, "--no-build-isolation")
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The folder the template was installed into (pip --target).

    Without build isolation first (works offline with this environment's
    setuptools), then with it (fetches setuptools).  Skipped only when the
    environment cannot build at all; a template that does not build fails.
    """
    if subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True).returncode != 0:
        pytest.skip("pip is not available: cannot install plugin-template")
    work = tmp_path_factory.mktemp("template")
    copy = work / "source"  # building in a copy leaves no build/ or *.egg-info in the checkout
    shutil.copytree(TEMPLATE, copy, ignore=BUILD_LEFTOVERS)
    target = work / "site"
    local = _pip(copy, target, isolation=False)
    if local.returncode == 0:
        return target
    isolated = _pip(copy, target, isolation=True)
    if isolated.returncode == 0:
        return target
    environment_cannot_build = importlib.util.find_spec("setuptools") is None or "bdist_wheel" in local.stderr
    report = (f"without build isolation:\n{local.stderr[-1500:]}\n"
              f"with build isolation:\n{isolated.stderr[-1500:]}")
    if environment_cannot_build:
        pytest.skip("pip cannot build plugin-template here (setuptools without wheel support, and no network "
                    f"for build isolation):\n{report}")
    pytest.fail(f"pip install plugin-template failed:\n{report}")


@pytest.fixture
def env(installed, tmp_path) -> dict:
    """The environment of a user who installed the plugin: plugins enabled, no lab-local ones."""
    env = {k: v for k, v in os.environ.items() if k not in ("DCMPIPE_DISABLE_PLUGINS", "PYTHONPATH")}
    env.update(PYTHONPATH=str(installed), PYTHONDONTWRITEBYTECODE="1",
               DCMPIPE_PLUGINS_DIR=str(tmp_path / "no-local-plugins"))
    return env


def dcmpipe(*args, env, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dcmpipe", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=120)


# -- the files of the template ----------------------------------------------------


def test_template_follows_the_naming_rule():
    meta = project()
    thing = meta["name"].removeprefix("dcmpipe-")
    assert meta["name"] == f"dcmpipe-{thing}" and re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", thing)
    module = f"dcmpipe_{thing.replace('-', '_')}"
    assert meta["entry-points"] == {"dcmpipe": {thing: module}}
    assert (TEMPLATE / f"{module}.py").is_file() or (TEMPLATE / module / "__init__.py").is_file()
    assert "dcmpipe" in meta["dependencies"]
    assert any(dep.startswith("pytest") for dep in meta["optional-dependencies"]["test"])


def test_template_readme_says_how_to_install_run_and_test():
    readme = (TEMPLATE / "README.md").read_text(encoding="utf-8")
    for needed in ("pip install -e", "dcmpipe plugins", "dcmpipe run recipe.toml", "pytest",
                   project()["name"], "DCMPIPE_PLUGINS_DIR"):
        assert needed in readme, f"plugin-template/README.md does not mention {needed!r}"


def test_plugin_guide_covers_every_hook_and_the_template():
    guide = GUIDE.read_text(encoding="utf-8")
    hooks = re.findall(r"^def (dcmpipe_\w+)\(", HOOKSPECS.read_text(encoding="utf-8"), re.M)
    assert len(hooks) >= 10
    missing = [hook for hook in hooks if f"`{hook}" not in guide]
    assert not missing, f"docs/writing-a-plugin.md does not document {missing}"
    for needed in ("plugin-template", "DCMPIPE_PLUGINS_DIR", "dcmpipe.safefile", "dcmpipe.naming", "Skip",
                   "entry-points", "__post_init__"):
        assert needed in guide, f"docs/writing-a-plugin.md does not mention {needed!r}"


# -- the installed template ---------------------------------------------------------


def test_installed_plugin_is_listed(env, tmp_path):
    result = dcmpipe("plugins", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    meta = project()
    thing = meta["name"].removeprefix("dcmpipe-")
    assert f"{thing}  ({meta['name']} {meta['version']}, entry point)" in result.stdout
    assert "route = 'site-rules'" in result.stdout
    assert "problem:" not in result.stdout and "conflict:" not in result.stdout


def test_template_recipe_routes_by_rule(env, tmp_path):
    shutil.copy(TEMPLATE / "recipe.toml", tmp_path / "recipe.toml")
    generate(tmp_path / "incoming", [
        StudyPlan("3001", "TEST^A", "PA", "Brain routine", [SeriesPlan(2, "T1", slices=3)]),
        StudyPlan("3002", "TEST^B", "PB", "Abdomen", [SeriesPlan(5, "T2", slices=2)]),
    ])
    result = dcmpipe("run", "recipe.toml", "--jobs", "1", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 read, 5 written" in result.stderr
    sorted_ = tmp_path / "sorted"
    assert sorted(p.name for p in (sorted_ / "neuro" / "3001" / "0002").iterdir()) == ["001", "002", "003", "info"]
    assert sorted(p.name for p in (sorted_ / "other" / "3002" / "0005").iterdir()) == ["001", "002", "info"]
    assert sorted(p.name for p in sorted_.iterdir()) == ["neuro", "other"]


def test_template_own_tests_pass(env, tmp_path):
    # cwd outside the checkout and no cache: running them leaves nothing in plugin-template/
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(TEMPLATE / "tests")],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert re.search(r"\b\d+ passed\b", result.stdout) and "skipped" not in result.stdout
