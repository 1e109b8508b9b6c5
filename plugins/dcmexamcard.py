"""dcmexamcard: the ExamCard and the other Philips blobs of Raw Data Storage objects.

Philips consoles store a study's ExamCard, and per series the scan's parameter
blocks, as blobs inside Raw Data Storage objects (the ``XX_`` files of an
export).  This plugin offers:

* export ``examcard``: write the ExamCard as ``<ExamCard name>.ExamCard``, in
  the console's own export format (the SOAP document the console writes when
  an ExamCard is exported), and print (or write as text) every other blob:
  parameter blocks as ``name type count values``, text as text, the rest as a
  hex dump;
* the ``dcmpipe dcmexamcard FILES...`` command, a recipe of ``read files`` and
  this step.

The formats: ../shared/philips/SPEC.md section 6; the code in ``_examcard_blobs.py``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import click

from dcmpipe import Exporter, hookimpl, option

from ._examcard_blobs import RAW_DATA_STORAGE, BlobError


@dataclass(frozen=True)
class ExamCardOptions:
    dest: Path | None = option(None, help="folder for the .ExamCard files (and blob texts); default: the item's"
                                          " destination if a route step set one, else the file's own folder")
    blobs: Literal["none", "print", "text"] = option(
        "none", help="the other blobs: 'print' to standard output, 'text' as SERIES_PROTOCOL.blobs.txt"
                     " beside the ExamCards, 'none' to leave them")
    strict: bool = option(True, help="a file that is not a Raw Data Storage object is an error;"
                                     " false: such files pass untouched")


class ExamCardExport(Exporter):
    """The ExamCard of Philips Raw Data Storage objects as NAME.ExamCard; the other blobs as text."""

    id = "examcard"
    Options = ExamCardOptions
    tags = ("SOPClassUID",)

    def _folder(self, item, destination) -> Path:
        if self.options.dest is not None:
            return Path(self.options.dest)
        if destination is not None:
            return Path(destination)
        return Path(item.source).parent

    def _raw(self, item):
        from ._examcard_blobs import read_raw

        sop = item.get("SOPClassUID")
        if sop != RAW_DATA_STORAGE:
            if not self.options.strict:
                return None
            raise BlobError(f"not a Raw Data Storage object (SOP class {sop or 'missing'})")
        if item.source is None:
            raise BlobError("no file to read (network items are not supported)")
        return read_raw(item.source)

    def describe(self, item, destination):
        from ._examcard_blobs import examcard, examcard_stem, free_target

        try:
            raw = self._raw(item)
        except BlobError as exc:
            return f"examcard: {item}: error: {exc}"
        if raw is None:
            return f"examcard: {item}: not a Raw Data Storage object, left alone"
        folder = self._folder(item, destination)
        parts = []
        card = examcard(raw)
        if card is not None:
            path, present = free_target(folder, examcard_stem(card[0], raw), ".ExamCard", card[1])
            parts.append(f"{path} (already there)" if present else f"write {path}")
        others = [b.name for b in raw.blobs if b.name != "ExamCardBlob"]
        if others and self.options.blobs != "none":
            parts.append(f"{self.options.blobs} {len(others)} blobs")
        return f"examcard: {item}: " + ("; ".join(parts) or "nothing to extract")

    def export(self, item, destination):
        from ._examcard_blobs import describe_object, examcard, examcard_stem, write_unique
        from dcmpipe.naming import component

        raw = self._raw(item)
        if raw is None:
            return []
        if not raw.blobs:
            raise BlobError("the blob sequence (2005,1132) is empty")
        folder = self._folder(item, destination)
        written = []
        card = examcard(raw)
        if card is not None:
            path, status = write_unique(folder, examcard_stem(card[0], raw), ".ExamCard", card[1])
            item.extra.setdefault("log", []).append(f"{item.source}: ExamCard {path} ({status})")
            written.append(path)
        if self.options.blobs != "none":
            lines = describe_object(raw)
            if lines and self.options.blobs == "print":
                out = sys.stdout
                out.write(f"### {item.source}\n" + "\n".join(lines) + "\n")
                out.flush()
            elif lines:
                stem = component(f"{raw.series_number}_{raw.protocol}", fallback="blobs", limit=120)
                path, status = write_unique(folder, stem, ".blobs.txt", ("\n".join(lines) + "\n").encode("utf-8"))
                item.extra.setdefault("log", []).append(f"{item.source}: blobs {path} ({status})")
                written.append(path)
        return written


@hookimpl
def dcmpipe_exporters():
    return [ExamCardExport]


# -- the `dcmpipe dcmexamcard` command ----------------------------------------

HELP = """Extract the ExamCard from Philips Raw Data Storage objects; print their other blobs.

\b
The study's ExamCard object (an XX_ file, protocol "ExamCard") becomes
OUTDIR/<ExamCard name>.ExamCard, the format the console writes when it exports
an ExamCard.  An identical file already there counts as done; a different one
is never overwritten: the new card gets a _2 suffix.  Every other blob of a
series object (parameter blocks, coil state, prescan responses) is printed as
text: parameter blocks as "name type count values" (a run of equal values as
"0 x 24"), text as text, the rest as a hex dump.

\b
Examples:
  dcmpipe dcmexamcard XX_0001                  ExamCard into ./, blobs printed
  dcmpipe dcmexamcard -o cards DICOM/XX_*      ExamCards into cards/
  dcmpipe dcmexamcard --blobs text -o txt XX_*  blobs as SERIES_PROTOCOL.blobs.txt
  dcmpipe dcmexamcard --blobs none XX_0001     only the ExamCard
  dcmpipe dcmexamcard --print-recipe XX_0001   the recipe this command runs
"""


def examcard_recipe(files, outdir, blobs, recurse) -> dict:
    read = {"read": "files", "path": [str(Path(f).resolve()) for f in files], "recursive": recurse, "settle": 0.0}
    export = {"export": "examcard", "dest": str(Path(outdir).resolve()), "blobs": blobs}
    return {"recipe": {"name": "dcmexamcard"}, "step": [read, export]}


@click.command("dcmexamcard", help=HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("files", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--outdir", default=".", show_default=True, type=click.Path(file_okay=False),
              help="folder for the .ExamCard files (and blob texts)")
@click.option("--blobs", type=click.Choice(["print", "text", "none"]), default="print", show_default=True,
              help="the other blobs: print them, write them as text files in OUTDIR, or leave them")
@click.option("-R", "recurse", is_flag=True, help="descend into folders given as FILES")
@click.option("-q", "quiet", is_flag=True, help="quiet: only errors")
@click.option("-v", "verbose", is_flag=True, help="say what is written")
@click.option("--dry-run", is_flag=True, help="show what would be written; write nothing")
@click.option("--print-recipe", is_flag=True, help="print the equivalent TOML recipe and exit")
@click.option("--debug", is_flag=True, help="show tracebacks")
def examcard_command(files, outdir, blobs, recurse, quiet, verbose, dry_run, print_recipe, debug):
    from dcmpipe.cli import run_tool

    data = examcard_recipe(files, outdir, blobs, recurse)
    # One process: the blobs are printed in the order of the files.
    run_tool(data, print_recipe=print_recipe, dry_run=dry_run, jobs=1, quiet=quiet, verbose=verbose, debug=debug)


@hookimpl
def dcmpipe_register_commands(cli):
    cli.add_command(examcard_command)
