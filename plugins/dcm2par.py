"""dcm2par: Philips Enhanced MR DICOM -> PAR/REC as the scanner console writes them.

Step: export ``dcm2par`` (one ``<stem>.PAR`` + ``<stem>.REC`` per Enhanced MR
file).  Command: ``dcmpipe dcm2par [-o OUTDIR] [--version 4|4.1|4.2] FILES...``.
The rules are in ../shared/philips/SPEC.md section 1; docs/plugins/dcm2par.md
says what was checked byte for byte against the console and what is inferred.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import click

from dcmpipe import Exporter, hookimpl, option


@dataclass(frozen=True)
class Dcm2parOptions:
    version: Literal["4", "4.1", "4.2"] = option("4.2", help="PAR version to write: 4, 4.1 or 4.2 (the console's)")
    outdir: Path | None = option(
        None, help="folder for the PAR/REC files; default: the route step's destination, else beside the input")
    fsync: bool = option(False, help="flush both files to disk before they get their names (slower; survives a "
                         "power loss)")


class Dcm2par(Exporter):
    """Philips Enhanced MR -> <stem>.PAR + <stem>.REC, byte for byte as the console writes them."""

    id = "dcm2par"
    Options = Dcm2parOptions
    tags = ("SOPClassUID", "Manufacturer")
    parallel = True

    def _target(self, item, destination) -> tuple[Path, str]:
        if item.source is None:
            raise ValueError("dcm2par needs files (not data received from the network)")
        outdir = self.options.outdir or destination or item.source.parent
        stem = item.source.stem
        if item.name:
            name = Path(item.name)
            outdir, stem = Path(outdir) / name.parent, name.stem if name.suffix.lower() in (".dcm", ".par") else name.name
        return Path(outdir), stem

    def describe(self, item, destination):
        outdir, stem = self._target(item, destination)
        return f"dcm2par: {item.source} -> {outdir / stem}.PAR/.REC (V{self.options.version})"

    def export(self, item, destination):
        from dcmpipe.plugins._philips_dicom import PhilipsError, convert

        outdir, stem = self._target(item, destination)
        try:
            paths = convert(item.source, outdir, stem, self.options.version, self.options.fsync)
        except PhilipsError as exc:  # the runner names the file already
            raise PhilipsError(str(exc).removeprefix(f"{item.source}: ")) from None
        item.extra.setdefault("log", []).append(f"{item.source} -> {paths[0]}, {paths[1].name}")
        return paths


@hookimpl
def dcmpipe_exporters():
    return [Dcm2par]


DCM2PAR_HELP = """Convert Philips Enhanced MR DICOM files to PAR/REC (V4.2 by default).

\b
Each FILE becomes STEM.PAR + STEM.REC in OUTDIR (default: beside FILE),
latin-1 with CRLF line ends, in the console's layout and row order; for
the console exports checked so far the result is byte-identical except
for the '# Dataset name' line (the console writes its export path there).
Nothing is overwritten: an identical file counts as done, a different
one is an error.  Each file gets its name only when it is complete;
--fsync also waits until both are on disk (slower; for a power loss).

\b
Examples:
  dcmpipe dcm2par DTI.dcm                     DTI.PAR + DTI.REC beside DTI.dcm
  dcmpipe dcm2par -o parrec/ *.dcm            all files into parrec/
  dcmpipe dcm2par --version 4.1 T1.dcm        an older PAR version for old readers
  dcmpipe dcm2par --print-recipe -o out a.dcm the recipe this command runs
"""


def dcm2par_recipe(files, outdir, version, fsync=False) -> dict:
    read = {"read": "files", "path": [str(Path(f).resolve()) for f in files], "settle": 0.0}
    export = {"export": "dcm2par", "version": version}
    if fsync:
        export["fsync"] = True
    if outdir:
        export["outdir"] = str(Path(outdir).resolve())
    return {"recipe": {"name": "dcm2par"}, "step": [read, export]}


@click.command("dcm2par", help=DCM2PAR_HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "outdir", type=click.Path(file_okay=False), help="folder for the PAR/REC files")
@click.option("--version", "version", type=click.Choice(["4", "4.1", "4.2"]), default="4.2", show_default=True,
              help="PAR version")
@click.option("--fsync", is_flag=True, help="flush the files to disk before naming them (slower; survives a power loss)")
@click.option("--jobs", "-j", type=click.IntRange(1), default=1, show_default=True,
              help="processes sharing the work, this one included")
@click.option("-q", "quiet", is_flag=True, help="quiet: only errors")
@click.option("-v", "verbose", is_flag=True, help="say what is written")
@click.option("--dry-run", is_flag=True, help="show what would be written; write nothing")
@click.option("--print-recipe", is_flag=True, help="print the equivalent TOML recipe and exit")
@click.option("--debug", "-d", is_flag=True, help="show tracebacks")
def dcm2par_command(files, outdir, version, fsync, jobs, quiet, verbose, dry_run, print_recipe, debug):
    from dcmpipe.cli import run_tool

    run_tool(dcm2par_recipe(files, outdir, version, fsync), print_recipe=print_recipe, dry_run=dry_run, jobs=jobs,
             quiet=quiet, verbose=verbose, debug=debug)


@hookimpl
def dcmpipe_register_commands(cli):
    cli.add_command(dcm2par_command)
