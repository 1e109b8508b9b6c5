"""The plugin host: loading, conflicts, broken plugins, hooks, packaging and start-up cost."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import tomllib
import zipfile
from pathlib import Path

import pytest

import dcmpipe
from dcmpipe import registry
from conftest import REPO, run_cli

LOCAL_RULE = """
from dataclasses import dataclass
from dcmpipe import Router, hookimpl, option

@dataclass(frozen=True)
class Opts:
    folder: str = option("x", help="a folder")

class ByLab(Router):
    "Route by lab rule."
    id = "{id}"
    Options = Opts
    def route(self, item):
        return None

@hookimpl
def dcmpipe_routers():
    return [ByLab]
"""


def _env(folder):
    return {"DCMPIPE_PLUGINS_DIR": str(folder), "DCMPIPE_DISABLE_PLUGINS": ""}


def test_local_rule_files_are_loaded_and_listed(tmp_path):
    (tmp_path / "lab_rules.py").write_text(LOCAL_RULE.format(id="by-lab"))
    result = run_cli("plugins", env=_env(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "lab_rules  (local -, " in result.stdout
    assert "route = 'by-lab': Route by lab rule." in result.stdout
    assert "folder (str, default 'x'): a folder" in result.stdout


def test_broken_plugin_is_reported_in_one_line_and_others_work(tmp_path, export):
    (tmp_path / "broken.py").write_text("import no_such_module_here\n")
    (tmp_path / "good.py").write_text(LOCAL_RULE.format(id="by-lab"))
    result = run_cli("plugins", "--brief", env=_env(tmp_path))
    assert result.returncode == 0
    lines = [line for line in result.stderr.splitlines() if "broken.py" in line]
    assert len(lines) == 1 and "ModuleNotFoundError" in lines[0]
    assert "good" in result.stdout and "dcm_move" in result.stdout
    moved = run_cli("move", "-a", "-R", "--wait", "0", "-s", export, tmp_path / "out", env=_env(tmp_path))
    assert moved.returncode == 0 and (tmp_path / "out/1001/0301/001").is_file()


def test_misspelled_hook_is_reported(tmp_path):
    (tmp_path / "typo.py").write_text(LOCAL_RULE.format(id="by-lab").replace("def dcmpipe_routers", "def dcmpipe_router"))
    result = run_cli("plugins", "--brief", env=_env(tmp_path))
    assert "plugin 'typo': dcmpipe_router matches no dcmpipe hook (misspelled?)" in result.stderr


def test_two_plugins_claiming_one_step_are_both_named(tmp_path):
    (tmp_path / "first.py").write_text(LOCAL_RULE.format(id="fixed"))
    recipe = tmp_path / "r.toml"
    recipe.write_text('[[step]]\nread = "files"\npath = "."\n[[step]]\nroute = "fixed"\ndest = "x"\n')
    result = run_cli("check", recipe, env=_env(tmp_path))
    assert result.returncode == 2
    assert "route step 'fixed' is offered by more than one plugin: dcm_move (dcmpipe" in result.stderr
    assert "first (local -)" in result.stderr
    listing = run_cli("plugins", "--brief", env=_env(tmp_path))
    assert "conflict: route step 'fixed' offered by dcm_move, first" in listing.stdout


def test_throwaway_plugin_registered_in_process():
    from dcmpipe import Transform, hookimpl

    class Upper(Transform):
        id = "throwaway-upper"

    class Plugin:
        @hookimpl
        def dcmpipe_transforms(self):
            return [Upper]

    from dcmpipe.testing import registered

    with registered(Plugin()) as reg:
        assert reg.lookup("transform", "throwaway-upper").cls is Upper
    assert "throwaway-upper" not in registry.get_registry().steps["transform"]


def test_every_hook_is_documented_in_the_contract():
    from dcmpipe import hookspecs

    names = [n for n in dir(hookspecs) if n.startswith("dcmpipe_")]
    assert len(names) == 10
    for name in names:
        doc = getattr(hookspecs, name).__doc__ or ""
        assert len(doc.strip()) > 30, name
    guide = (REPO / "docs" / "writing-a-plugin.md").read_text() + (REPO / "docs" / "architecture.md").read_text()
    for name in names:
        assert name in guide, f"{name} is not in docs/"


def test_help_is_quick_and_imports_no_heavy_library():
    code = ("import sys\nfrom dcmpipe.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('pydicom', 'numpy', 'pynetdicom') if m in sys.modules]\n"
            "print('HEAVY', heavy)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "HEAVY []" in result.stdout, result.stdout + result.stderr
    assert "move" in result.stdout and "Commands:" in result.stdout


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads in /proc (Linux)")
def test_numpy_in_a_dcmpipe_command_starts_no_blas_threads():
    code = ("import os\nfrom dcmpipe.cli import main\n"
            "try:\n    main(['--version'])\nexcept SystemExit:\n    pass\n"
            "import numpy\nprint('THREADS', len(os.listdir('/proc/self/task')), os.environ['OPENBLAS_NUM_THREADS'])\n")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert "THREADS 1 1" in result.stdout, result.stdout + result.stderr
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**env, "OPENBLAS_NUM_THREADS": "2"})
    assert result.stdout.rstrip().endswith(" 2"), result.stdout + result.stderr  # the user's choice is kept


def test_version():
    result = run_cli("--version")
    assert result.returncode == 0 and dcmpipe.__version__ in result.stdout


def test_package_list_in_pyproject_is_complete():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = set()
    for package, folder in config["package-dir"].items():
        for init in (REPO / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / folder)
            found.add(".".join([package, *rel.parts]))
    assert found <= listed, f"packages missing from pyproject.toml: {sorted(found - listed)}"


@pytest.mark.slow
def test_wheel_holds_only_the_dcmpipe_package(tmp_path):
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(REPO)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot build a wheel here: {result.stderr.strip().splitlines()[-1:]}")
    wheel = next(tmp_path.glob("dcmpipe-*.whl"))
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert tops == {"dcmpipe", next(t for t in tops if t.endswith(".dist-info"))}
    names = zipfile.ZipFile(wheel).namelist()
    for module in ("dcmpipe/cli.py", "dcmpipe/hookspecs/__init__.py", "dcmpipe/plugins/dcm_move.py"):
        assert module in names


def test_internal_errors_print_one_line_without_debug(tmp_path):
    (tmp_path / "explode.py").write_text(textwrap.dedent("""
        from dcmpipe import hookimpl
        import click

        @click.command("explode")
        def explode():
            raise RuntimeError("boom")

        @hookimpl
        def dcmpipe_register_commands(cli):
            cli.add_command(explode)
        """))
    result = run_cli("explode", env=_env(tmp_path))
    assert result.returncode == 70 and "Traceback" not in result.stderr
    assert "internal error: RuntimeError: boom (run with --debug for the traceback)" in result.stderr
    result = run_cli("--debug", "explode", env=_env(tmp_path))
    assert "Traceback" in result.stderr


def test_every_tool_module_is_a_listed_builtin_and_loads():
    """A new tool's module in plugins/ must be in BUILTINS, or `dcmpipe` would never offer it."""
    public = {p.stem for p in (REPO / "plugins").glob("*.py") if not p.name.startswith("_")}
    assert public == set(registry.BUILTINS)
    manager = registry.get_manager()
    assert not [p for p in manager.problems if "built-in" in p], manager.problems
    assert set(registry.BUILTINS) <= set(manager.info)


def test_builtin_table_is_what_the_modules_offer():
    """registry.BUILTINS finds a tool's module without importing the others: it must name exactly the
    steps (from the six verb hooks), commands (from dcmpipe_register_commands) and other hooks of each."""
    import click

    verb_hooks = set(registry.HOOK_OF_VERB.values()) | {"dcmpipe_register_commands"}
    reg = registry.get_registry()
    assert not reg.conflicts and not reg.problems, (reg.conflicts, reg.problems)
    offered = {name: set() for name in registry.BUILTINS}
    for verb, steps in reg.steps.items():
        for step_id, info in steps.items():
            offered[info.plugin.name].add(f"{verb} {step_id}")
    for name in registry.BUILTINS:
        group = click.Group()
        module = registry.manager().get_plugin(name)
        if hasattr(module, "dcmpipe_register_commands"):
            module.dcmpipe_register_commands(cli=group)
        offered[name] |= {f"command {command}" for command in group.commands}
        # a run hook (dcmpipe_run_started ...) listed as "hook NAME" makes the host load the module for every run
        offered[name] |= {f"hook {hook}" for hook in registry.hooks_of(name) if hook not in verb_hooks}
    assert {name: set(offers) for name, offers in registry.BUILTINS.items()} == offered
    every = [offer for offers in registry.BUILTINS.values() for offer in offers]
    assert len(every) == len(set(every)), "two built-ins offer the same step or command"
    assert len(registry.STEPS) + len(registry.COMMANDS) == len([o for o in every if not o.startswith("hook ")])


def test_a_tool_command_imports_only_the_builtins_it_needs(tmp_path):
    code = ("import sys\nfrom dcmpipe.cli import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print('LOADED', sorted(m.rsplit('.', 1)[-1] for m in sys.modules if m.startswith('dcmpipe.plugins.') "
            "and not m.rsplit('.', 1)[-1].startswith('_')))\n")

    def loaded(*args):
        result = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True)
        assert "LOADED" in result.stdout, result.stdout + result.stderr
        return result.stdout.rsplit("LOADED ", 1)[1].strip()

    dicom = REPO / "tests/data/enhanced/T2_.dcm"
    assert loaded("dcm2par", "--help") == "['dcm2par']"
    assert loaded("dcms2e", "--help") == "['dcms2e']"
    assert loaded("dcm2json", dicom) == "['dcm2json']"
    assert loaded("ls", dicom) == "['dcmls', 'files']"  # the command's module and its recipe's steps
    assert loaded("dcm2par", "-q", "-o", tmp_path, dicom) == "['dcm2par', 'files']"
    assert (tmp_path / "T2_.PAR").is_file()
    assert loaded("move", "--gui", "--help") == "['dcm_move']"
    assert loaded("--help") == str(sorted(registry.BUILTINS))


def test_a_recipe_with_a_problem_is_checked_against_every_plugin(tmp_path):
    """A recipe loads only the built-ins of its steps; its error messages still know every step."""
    recipe = tmp_path / "r.toml"
    recipe.write_text('[[step]]\nread = "files"\npath = "."\n[[step]]\nexport = "listng"\n'
                      '[[step]]\nroute = "hierarchical"\n')
    result = run_cli("check", recipe)
    assert result.returncode == 2
    assert "unknown export step 'listng'; did you mean 'listing'?" in result.stderr
    assert "'hierarchical' is not a route step; it offers name" in result.stderr


def test_a_third_party_step_clashing_with_a_tool_commands_step_is_reported(tmp_path):
    (tmp_path / "mylisting.py").write_text(textwrap.dedent("""
        from dcmpipe import Exporter, hookimpl

        class Listing(Exporter):
            "Another listing."
            id = "listing"

        @hookimpl
        def dcmpipe_exporters():
            return [Listing]
        """))
    result = run_cli("ls", REPO / "tests/data/enhanced/T2_.dcm", env=_env(tmp_path))
    assert result.returncode == 2
    assert "export step 'listing' is offered by more than one plugin: dcmls (dcmpipe" in result.stderr
    assert "mylisting (local -)" in result.stderr


def test_run_hooks_of_local_plugins_hear_a_tool_commands_run(tmp_path):
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "heard.py").write_text(textwrap.dedent(f"""
        from dcmpipe import hookimpl

        @hookimpl
        def dcmpipe_run_finished(summary, context):
            open({str(tmp_path / "heard.txt")!r}, "w").write(f"{{summary.read}} read")
        """))
    result = run_cli("ls", REPO / "tests/data/enhanced/T2_.dcm", env=_env(tmp_path / "plugins"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "heard.txt").read_text() == "1 read"


def test_a_builtin_with_run_hooks_is_loaded_for_every_run(monkeypatch):
    monkeypatch.setattr(registry, "LISTENERS", ("dcmls",))
    registry.reset()
    try:
        assert "dcmls" in registry.get_manager(builtins=()).info
    finally:
        registry.reset()


def test_a_broken_builtin_is_reported_once_and_skipped(monkeypatch, caplog):
    from dcmpipe.recipe import build_recipe

    monkeypatch.setitem(registry.BUILTINS, "no_such_tool", ("export nothing",))
    monkeypatch.setitem(registry.STEPS, ("export", "nothing"), "no_such_tool")
    registry.reset()
    try:
        with pytest.raises(dcmpipe.RecipeError, match="unknown export step 'nothing'"):
            build_recipe({"step": [{"read": "files", "path": "."}, {"export": "nothing"}]}, REPO)
        failed = [p for p in registry.manager().problems if "no_such_tool" in p]
        assert failed == ["built-in plugin 'no_such_tool' failed to load: ModuleNotFoundError: "
                          "No module named 'dcmpipe.plugins.no_such_tool'"]
        assert len([r for r in caplog.records if "no_such_tool" in r.getMessage()]) == 1
        assert "dicom" in registry.get_registry().steps["export"]  # the others work
    finally:
        registry.reset()


def test_a_plugin_may_not_take_a_builtins_name(tmp_path):
    (tmp_path / "files.py").write_text(LOCAL_RULE.format(id="by-lab"))
    assert run_cli("ls", REPO / "tests/data/enhanced/T2_.dcm", env=_env(tmp_path)).returncode == 0
    result = run_cli("plugins", "--brief", env=_env(tmp_path))
    assert f"plugin 'files' ({tmp_path / 'files.py'}) not loaded: a built-in plugin has that name" in result.stderr


def test_entry_points_are_looked_for_without_importlib_metadata(tmp_path, monkeypatch):
    """importlib.metadata (~25 ms) is only used when some distribution may declare [dcmpipe] entry points."""
    dist = tmp_path / "site" / "other-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "entry_points.txt").write_text("[console_scripts]\nother = other:main\n")
    monkeypatch.setattr(sys, "path", [str(tmp_path / "site"), str(tmp_path / "missing")])
    assert not registry._may_offer_entry_points()
    (dist / "entry_points.txt").write_bytes(b"[console_scripts]\nother = other:main \xff\n")  # not UTF-8
    assert not registry._may_offer_entry_points()
    (dist / "entry_points.txt").write_text("[console_scripts]\nother = other:main\n\n[ dcmpipe ]\nx = other.x\n")
    assert registry._may_offer_entry_points()
    (tmp_path / "lib.zip").write_bytes(b"")
    monkeypatch.setattr(sys, "path", [str(tmp_path / "lib.zip")])  # a zip: importlib.metadata decides
    assert registry._may_offer_entry_points()


def test_every_builtin_step_and_option_is_documented():
    from dcmpipe.recipe import option_fields

    reg = registry.get_registry()
    for verb, steps in reg.steps.items():
        for step_id, info in steps.items():
            page = REPO / "docs" / "plugins" / f"{info.plugin.name}.md"
            assert page.is_file(), f"no docs page for plugin {info.plugin.name}"
            text = page.read_text()
            assert f"{verb} `{step_id}`" in text, f"{verb} {step_id} missing from {page.name}"
            for key, *_ in option_fields(info.cls.Options):
                assert f"`{key}`" in text, f"option {key} of {step_id} missing from {page.name}"


def test_built_in_keyword_table_agrees_with_pydicom():
    from pydicom.datadict import keyword_dict, tag_for_keyword

    from dcmpipe.keywords import keywords, tags
    from dcmpipe.steps import known_keyword, known_tag, tag_of

    table = keywords()
    assert len(table) > 4000 and len(tags()) == len(table)
    for keyword, tag in table.items():
        assert tag_for_keyword(keyword) == tag, keyword
    # every fixed-tag keyword of the installed pydicom is in the table (a newer pydicom may add some)
    missing = [k for k, t in keyword_dict.items() if k and t <= 0xFFFFFFFF and k not in table]
    assert len(missing) < 50, missing[:10]
    assert known_tag("PatientName") == 0x00100010 and known_keyword(0x00100010) == "PatientName"
    assert known_tag("NoSuchKeyword") is None
    assert tag_of("DeidentificationMethod") == tag_for_keyword("DeidentificationMethod")  # pydicom fallback
    assert tag_of("(0020,000d)") == tag_of("0020,000D") == 0x0020000D


def test_sorting_lean_files_imports_no_pydicom(export, tmp_path):
    """The lean header path needs neither pydicom nor numpy: a move of plain files pays for neither."""
    (export / "DICOM" / "IM_BROKEN").unlink()  # a damaged file rightly takes pydicom to judge
    code = ("import sys\nfrom dcmpipe.cli import main\n"
            f"try:\n    main(['move', '-a', '-b', '-q', '--wait', '0', '-j', '1', '-s', '{export}/DICOM', '{tmp_path}/o'])\n"
            "except SystemExit as e:\n    print('EXIT', e.code)\n"
            "print('HEAVY', [m for m in ('pydicom', 'numpy') if m in sys.modules])\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "EXIT 0" in result.stdout and "HEAVY []" in result.stdout, result.stdout + result.stderr


def test_parallel_stages_on_both_sides_of_a_group_step(export, tmp_path):
    """Two pool stages in one recipe (a parallel export after a series namer) must not deadlock."""
    from dcmpipe import Exporter, hookimpl
    from dcmpipe.testing import registered, run

    class Listing(Exporter):
        "Write one line per file: its name and header size, in a worker."
        id = "test-listing"
        parallel = True
        tags = ("SeriesNumber",)

        def export(self, item, destination):
            out = destination / (item.name + f".{os.getpid()}.txt")
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(f"{item.get('SeriesNumber')}\n")
            return [out]

    class Plugin:
        @hookimpl
        def dcmpipe_exporters(self):
            return [Listing]

    recipe = {"step": [{"read": "files", "path": [str(export / "DICOM")], "settle": 0.0},
                       {"route": "fixed", "dest": str(tmp_path / "out")},
                       {"name": "hierarchical"},
                       {"export": "test-listing"}]}
    with registered(Plugin()):
        summary = run(recipe, jobs=3)
    assert summary.written == 36 and summary.bad == 1
    pids = {p.name.split(".")[1] for p in (tmp_path / "out").rglob("*.txt")}
    assert len(list((tmp_path / "out").rglob("*.txt"))) == 36
    assert str(os.getpid()) not in pids  # written by the workers


def test_demo_sorts_a_generated_export_and_prints_the_tree(tmp_path):
    result = run_cli("demo", tmp_path)
    assert result.returncode == 0, result.stderr
    assert "36 written, 0 skipped, 2 bad, 0 failed" in result.stdout
    assert "0401_fMRI_rest/" in result.stdout and "001_d0001" in result.stdout
    assert (tmp_path / "sorted/1002/0002_Cine/002_p004").is_file()
    assert (tmp_path / "sorted/bad/README.txt").is_file()


def test_a_step_with_an_option_named_like_a_verb_is_refused(tmp_path):
    (tmp_path / "clash.py").write_text(LOCAL_RULE.format(id="by-lab").replace("folder: str", "name: str"))
    result = run_cli("plugins", "--brief", env=_env(tmp_path))
    assert "route step 'by-lab' has option(s) named name, a verb key; the step is not registered" in result.stderr


def test_steps_that_run_only_in_workers_are_not_built_in_the_main_process(export, tmp_path):
    from dcmpipe import Transform, hookimpl
    from dcmpipe.testing import registered, run

    built = []

    class Counted(Transform):
        "Record the process that builds it."
        id = "test-counted"

        def __init__(self, options, context):
            super().__init__(options, context)
            built.append(os.getpid())

    class Plugin:
        @hookimpl
        def dcmpipe_transforms(self):
            return [Counted]

    recipe = {"step": [{"read": "files", "path": [str(export / "DICOM")], "settle": 0.0},
                       {"transform": "test-counted"}]}
    with registered(Plugin()):
        run(recipe, jobs=2)
        assert built == []  # built in the worker (a forked copy of this list), not here
        run(recipe, jobs=1)
        assert built == [os.getpid()]
