"""dcms2e: classic Philips MR files of dynamic 1 + the PAR/REC of the run -> one Enhanced MR file.

Step: transform ``dcms2e`` (per series).  Command: ``dcmpipe dcms2e DIR``:
DIR holds the classic DICOM files of the first dynamic, ``DIR.PAR``/``DIR.REC``
beside it are the whole acquisition; writes ``DIR.dcm``, a Philips-style
Enhanced MR file with every dynamic.  The scanner cannot export Enhanced MR
above 16,384 images; this can.  See docs/plugins/dcms2e.md and
../shared/philips/SPEC.md 2.4.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import click

from dcmpipe import Transform, hookimpl, option


@dataclass(frozen=True)
class Dcms2eOptions:
    par: Path | None = option(None, help="the PAR file of the run; default: FOLDER.PAR beside the files' folder")
    output: Path | None = option(None, help="the Enhanced MR file to write; default: FOLDER.dcm beside the folder")
    strict: bool = option(False, help="make the file pass dciodvfy: 1-based private dimension indices, "
                                      "no zero velocity vector")
    diffs: bool = option(False, help="print what differs from a scanner export, and why")
    fsync: bool = option(False, help="flush the output to disk before it gets its name (slower; survives a "
                                     "power loss)")


class Dcms2e(Transform):
    """Classic Philips MR files of dynamic 1 + PAR/REC -> one Enhanced MR file with every dynamic."""

    id = "dcms2e"
    Options = Dcms2eOptions
    group = "series"
    tags = ("SOPClassUID", "Manufacturer", "SeriesInstanceUID")

    def transform_group(self, items):
        from dcmpipe.plugins import _philips_build as build
        from dcmpipe.plugins import _philips_par as par

        sources = [i.source for i in items if i.ok and i.source is not None]
        if not sources:
            return items
        folders = {s.parent for s in sources}
        if len(folders) != 1:
            raise ValueError("the classic files of one series must be in one folder")
        folder = folders.pop()
        par_path = self.options.par or folder.with_name(folder.name + ".PAR")
        if not par_path.exists() and par_path.with_suffix(".par").exists():
            par_path = par_path.with_suffix(".par")
        if not par_path.exists():
            raise build.PhilipsError(f"{par_path}: no PAR file for {folder}")
        rec_path = par.rec_path_of(par_path)
        if rec_path is None:
            raise build.PhilipsError(f"{par_path}: no REC file beside it")
        output = self.options.output or folder.with_name(folder.name + ".dcm")
        if self.context.dry_run:
            items[0].extra.setdefault("plan", []).append(
                f"dcms2e: {folder} ({len(sources)} files) + {par_path.name} -> {output}")
            for item in items:
                item.extra["planned"] = True
            return items
        try:
            notes = build.build(folder, par_path, rec_path, output, strict=self.options.strict, files=sources,
                                fsync=self.options.fsync)
        except Exception as exc:  # one line for the series, not one per file
            from dcmpipe import DcmpipeError

            items[0].status = "failed"
            items[0].reason = "transform 'dcms2e': " + (str(exc) if isinstance(exc, DcmpipeError)
                                                        else f"{type(exc).__name__}: {exc}")
            if not isinstance(exc, DcmpipeError) and self.context.log.isEnabledFor(10):
                self.context.log.exception("dcms2e")
            for item in items[1:]:
                item.status, item.reason = "skipped", f"its series failed (see {items[0].source.name})"
            return items
        items[0].outputs.append(output)
        for item in items:
            item.extra["handled"] = True
            item.extra.setdefault("log", []).append(f"{item.source} -> {output}")
        self.context.log.info("%s: %d frames (%d cloned from dynamic 1 and updated from the PAR), %.1f MB",
                              output, notes["frames"], notes["cloned"], notes["bytes"] / 1e6)
        if self.options.diffs:
            click.echo(build.DIFFS + (build.STRICT_DIFFS if self.options.strict else ""), nl=False)
            click.echo(f"- this file: {notes['frames']} frames, {notes['cloned']} cloned, "
                       f"{notes['estimated_fp']} with estimated Max/Min FP\n", nl=False)
        return items


@hookimpl
def dcmpipe_transforms():
    return [Dcms2e]


DCMS2E_HELP = """Build one Enhanced MR file from classic Philips files + PAR/REC (dcms2e).

\b
DIR holds the classic DICOM files of the first dynamic of a run (an fMRI
series, say); DIR.PAR and DIR.REC beside it are the same acquisition with
every dynamic.  Writes DIR.dcm: a Philips-style Enhanced MR file with all
dynamics, also above the scanner's 16,384-image limit.  Before writing,
checks that the files and the PAR are the same acquisition (acquisition
number, matrix, slices, dynamic-1 pixels and scalings); otherwise a clear
error and nothing is written.  Never overwrites DIR.dcm; the file gets
its name only when it is complete (--fsync: and flushed to disk).

\b
Examples:
  dcmpipe dcms2e run1                  run1/ + run1.PAR/.REC -> run1.dcm
  dcmpipe dcms2e --strict run1         passes dciodvfy without errors
  dcmpipe dcms2e --diffs run1          also say what differs from a scanner export
  dcmpipe dcms2e -o out.dcm --par x.PAR run1
"""


def dcms2e_recipe(folder, par_path, output, strict, diffs, fsync=False) -> dict:
    folder = Path(folder).resolve()
    step = {"transform": "dcms2e", "strict": strict, "diffs": diffs}
    if fsync:
        step["fsync"] = True
    if par_path:
        step["par"] = str(Path(par_path).resolve())
    if output:
        step["output"] = str(Path(output).resolve())
    return {"recipe": {"name": "dcms2e"},
            "step": [{"read": "files", "path": [str(folder)], "settle": 0.0}, step]}


@click.command("dcms2e", help=DCMS2E_HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("--par", "par_path", type=click.Path(exists=True, dir_okay=False), help="PAR file (default DIR.PAR)")
@click.option("-o", "output", type=click.Path(dir_okay=False), help="output file (default DIR.dcm)")
@click.option("--strict", is_flag=True, help="pass dciodvfy: 1-based private dimension indices, no zero vector")
@click.option("--diffs", is_flag=True, help="print what differs from a scanner export, and why")
@click.option("--fsync", is_flag=True,
              help="flush the output to disk before it gets its name (slower; survives a power loss)")
@click.option("-q", "quiet", is_flag=True, help="quiet: only errors")
@click.option("-v", "verbose", is_flag=True, help="say what is written")
@click.option("--dry-run", is_flag=True, help="check the command line and show what would be written")
@click.option("--print-recipe", is_flag=True, help="print the equivalent TOML recipe and exit")
@click.option("--debug", "-d", is_flag=True, help="show tracebacks")
def dcms2e_command(folder, par_path, output, strict, diffs, fsync, quiet, verbose, dry_run, print_recipe, debug):
    from dcmpipe.cli import run_tool

    run_tool(dcms2e_recipe(folder, par_path, output, strict, diffs, fsync), print_recipe=print_recipe, dry_run=dry_run,
             jobs=1, quiet=quiet, verbose=verbose, debug=debug)


@hookimpl
def dcmpipe_register_commands(cli):
    cli.add_command(dcms2e_command)
