"""The ``dcmpipe`` command line: run, check, plugins, demo, and one command per tool.

Tool commands come from plugins (``dcmpipe_register_commands``); each builds
a recipe and runs it with :func:`run_tool`, so ``--print-recipe`` shows the
recipe behind the switches.  Errors meant for users print one line (no
traceback unless ``--debug``) and set the exit code.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click

from . import __version__
from .errors import DcmpipeError

log = logging.getLogger("dcmpipe")
STATE = {"debug": bool(os.environ.get("DCMPIPE_DEBUG")), "level": logging.WARNING}
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class _Handler(logging.StreamHandler):
    def emit(self, record):
        from .progress import clear_all

        clear_all()
        super().emit(record)


def setup_logging(level: int) -> None:
    if not any(isinstance(h, _Handler) for h in log.handlers):
        handler = _Handler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.propagate = False
    log.setLevel(level)


class _Commands(click.Group):
    """The top-level group: a built-in tool's command is imported when it is asked for by name, so
    ``dcmpipe dcm2par`` imports the dcm2par plugin only; listing the commands loads every plugin."""

    def get_command(self, ctx, name):
        if name not in self.commands:
            _register_plugin_commands(name)
        return super().get_command(ctx, name)

    def list_commands(self, ctx):
        _register_plugin_commands()
        return super().list_commands(ctx)


@click.group(cls=_Commands, context_settings=CONTEXT, help="""DICOM pipelines for MR labs.

\b
Every tool is a plugin; a pipeline is a TOML recipe of plugin steps.
  dcmpipe run sort.toml            run a recipe
  dcmpipe check sort.toml          validate a recipe, touch nothing
  dcmpipe plugins                  list plugins, their steps and options
  dcmpipe move -a -s incoming out  sort files like dcm_move
  dcmpipe demo                     sort a small generated scanner export
  dcmpipe storescp --store in 104  receive from scanners (dcmpipe send, echo: the other way)
  dcmpipe dcm2json +fc in.dcm      DICOM to JSON like DCMTK (json2dcm: the way back)
  dcmpipe info *.dcm               the tags equal in all files, a table of those that differ
  dcmpipe COMMAND --help           each tool's switches, with examples
""")
@click.version_option(__version__, "--version", prog_name="dcmpipe")
@click.option("-q", "--quiet", is_flag=True, help="only errors")
@click.option("-v", "--verbose", is_flag=True, help="say what happens to every item")
@click.option("-d", "--debug", is_flag=True, help="debug messages and tracebacks")
def cli(quiet, verbose, debug):
    STATE["debug"] = STATE["debug"] or debug
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.ERROR if quiet else logging.WARNING
    STATE["level"] = level
    setup_logging(level)


def run_tool(data: dict, *, print_recipe=False, dry_run=False, jobs=None, quiet=False, verbose=False,
             debug=False, base_dir: Path | None = None, out=None) -> None:
    """Validate and run the recipe a tool command stands for; exit with the run's code."""
    from .recipe import build_recipe, dump_recipe

    STATE["debug"] = STATE["debug"] or debug
    if quiet or verbose or debug:
        setup_logging(logging.DEBUG if debug else logging.INFO if verbose else logging.ERROR)
    if print_recipe:
        click.echo(dump_recipe(data), nl=False)
        return
    recipe = build_recipe(data, base_dir or Path.cwd(), source=data.get("recipe", {}).get("name", "recipe"))
    _run(recipe, dry_run=dry_run, jobs=jobs, quiet=quiet, out=out)


def _run(recipe, *, dry_run, jobs, quiet=False, out=None):
    from .runner import run_recipe

    summary = run_recipe(recipe, dry_run=dry_run, jobs=jobs, debug=STATE["debug"], out=out)
    if not quiet or summary.exit_code:
        click.echo(f"{recipe.name}: {summary.line(dry_run)}", err=True)
    if summary.exit_code:
        sys.exit(summary.exit_code)


@cli.command(context_settings=CONTEXT)
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("--dry-run", "-n", is_flag=True, help="print what would happen to every input; change nothing")
@click.option("--jobs", "-j", type=click.IntRange(1), default=None, help="processes sharing the work, this one included (default: cores)")
def run(recipe, dry_run, jobs):
    """Run RECIPE, a TOML file of steps.

    \b
    Example:
      dcmpipe run sort.toml --dry-run
    """
    from .recipe import load_recipe

    _run(load_recipe(recipe), dry_run=dry_run, jobs=jobs, quiet=STATE["level"] >= logging.ERROR)


@cli.command(context_settings=CONTEXT)
@click.argument("recipe", type=click.Path(dir_okay=False))
def check(recipe):
    """Validate RECIPE without touching any file; list every problem."""
    from .recipe import load_recipe

    loaded = load_recipe(recipe)
    click.echo(f"{recipe}: ok, {len(loaded.steps)} steps: " + ", ".join(f"{s.verb} {s.id}" for s in loaded.steps))


@cli.command(context_settings=CONTEXT)
@click.option("--brief", is_flag=True, help="one line per plugin, no options")
def plugins(brief):
    """List plugins: distribution, version, hooks, steps and their options."""
    from .registry import get_registry, hooks_of
    from .recipe import option_fields, type_name

    reg = get_registry()
    for name, info in reg.plugins.items():
        click.echo(f"{name}  ({info.dist} {info.version}, {info.origin})")
        if brief:
            continue
        click.echo(f"  hooks: {', '.join(hooks_of(name))}")
        for verb, steps in reg.steps.items():
            for step_id, step in sorted(steps.items()):
                if step.plugin.name != name:
                    continue
                group = f", per {step.cls.group}" if step.cls.group != "item" else ""
                click.echo(f"  {verb} = {step_id!r}{group}: {step.cls.describe_step()}")
                for key, tp, default, help_text in option_fields(step.cls.Options):
                    shown = "required" if default.__class__.__name__ == "_MISSING_TYPE" else f"default {default!r}"
                    click.echo(f"      {key} ({type_name(tp)}, {shown}): {help_text}")
    for (verb, step_id), infos in reg.conflicts.items():
        click.echo(f"conflict: {verb} step {step_id!r} offered by " + ", ".join(i.plugin.name for i in infos))
    for problem in reg.problems:
        click.echo(f"problem: {problem}")


@cli.command(context_settings=CONTEXT)
@click.argument("folder", required=False, type=click.Path(file_okay=False))
@click.option("--jobs", "-j", type=click.IntRange(1), default=None, help="processes sharing the work (default: cores)")
def demo(folder, jobs):
    """Write a small scanner-like export and sort it, then print the tree.

    The export (in FOLDER, default a new temporary folder) is made from
    pydicom's bundled test files: a 3D series, an fMRI run with dynamics, a
    multi-echo series, a cardiac cine with phases, a CT, a text file and a
    truncated file.  It is sorted with the dcm_move recipe into FOLDER/sorted.
    """
    import tempfile

    from .demo import make_export, tree
    from .registry import get_manager

    get_manager()
    root = Path(folder) if folder else Path(tempfile.mkdtemp(prefix="dcmpipe-demo-"))
    incoming = root / "incoming"
    count = make_export(incoming)
    click.echo(f"wrote {count} files to {incoming}")
    from dcmpipe.recipe import build_recipe, dump_recipe
    from dcmpipe.runner import run_recipe

    data = {"recipe": {"name": "demo"}, "step": [
        {"read": "files", "path": [str(incoming)], "recursive": True, "settle": 0.0},
        {"route": "patient-history"},
        {"route": "fixed", "dest": str(root / "sorted")},
        {"name": "hierarchical", "series_description": True},
        {"export": "dicom", "mode": "move", "bad_dir": str(root / "sorted" / "bad")},
    ]}
    click.echo("recipe:\n" + dump_recipe(data))
    summary = run_recipe(build_recipe(data, root), jobs=jobs)
    click.echo(f"demo: {summary.line()}")
    click.echo(tree(root / "sorted"))
    if summary.exit_code:
        sys.exit(summary.exit_code)


_registered = False


def _register_plugin_commands(name: str | None = None) -> None:
    """Add the commands of the built-in plugin that offers ``name`` (importing that module only),
    or else (any other name, or None) of every plugin, built-ins last: theirs win a clash."""
    global _registered
    from . import registry

    if name in registry.COMMANDS:
        plugin = registry.manager().load_builtin(registry.COMMANDS[name])
        if plugin is not None:
            plugin.dcmpipe_register_commands(cli=cli)
        if name in cli.commands:
            return
    if not _registered:
        pm = registry.get_manager()
        for impl in reversed(pm.impls("dcmpipe_register_commands")):
            impl.function(**dict.fromkeys(impl.argnames, cli))  # as pluggy calls it: the arguments it names
        _registered = True


def main(argv=None) -> None:
    """Entry point of the ``dcmpipe`` console script; ends the process."""
    try:
        _main(argv)
    finally:
        # The interpreter's shutdown runs full garbage collections over every object still alive
        # (30-50 ms once numpy is loaded, for nothing: the process ends).  Frozen objects are left out
        # of them; they are still released, and open files flushed, as the modules are cleared.
        import gc

        gc.freeze()


def _main(argv) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    # numpy's BLAS starts a thread per core at import; the threads spin for a while, taking a core
    # from the work (no dcmpipe tool does linear algebra that needs them), and their shutdown costs
    # tens of milliseconds at exit.  One thread unless the user chose otherwise.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    STATE["debug"] = STATE["debug"] or "--debug" in argv or (argv[:1] in (["-d"], ["--debug"]))
    setup_logging(logging.DEBUG if STATE["debug"] else logging.WARNING)
    try:
        result = cli.main(argv, prog_name="dcmpipe", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("dcmpipe: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except DcmpipeError as exc:
        click.echo(f"dcmpipe: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("dcmpipe: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # anything unexpected: one line, unless --debug
        if STATE["debug"]:
            raise
        click.echo(f"dcmpipe: internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)",
                   err=True)
        sys.exit(70)
    sys.exit(result if isinstance(result, int) else 0)
