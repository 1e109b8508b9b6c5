"""dcmcleanup: tidy a folder a technologist filled from the scanner console.

Steps (see docs/plugins/dcmcleanup.md):

* read ``cleanup``: plan the whole folder first (what is renamed, moved to the
  extras sub-folder, deleted or kept), show the plan and ask, then yield one
  item per file with its action;
* export ``cleanup``: carry out each item's action: rename DICOM files and
  PAR/REC pairs to ``ACQ_Description`` names, extract the ExamCard of Raw Data
  Storage objects into the folder (dcmexamcard's code), move extraneous files
  (Raw Data Storage objects, DICOMDIR, presentation states, console leftovers)
  into the sub-folder, delete empty files and exact duplicates (compared byte
  for byte just before).  Nothing is overwritten; moves go through
  ``dcmpipe.safefile.transfer``.

The ``dcmpipe cleanup`` command (alias ``dcmcleanup``) builds a recipe of these two steps.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import click

from dcmpipe import Exporter, Item, Reader, Skip, hookimpl, option

from ._cleanup_plan import DEFAULT_LEFTOVERS


@dataclass(frozen=True)
class CleanupOptions:
    path: list[Path] = option(help="folders to clean up (relative to the recipe's folder)")
    recursive: bool = option(False, help="also clean sub-folders (each file stays in its own folder)")
    extras: str = option("extras", help="name of the sub-folder for extraneous files")
    leftovers: list[str] = option(factory=lambda: list(DEFAULT_LEFTOVERS),
                                  help="file names (glob patterns) of console or system leftovers, moved to extras")
    rename: bool = option(True, help="rename DICOM files and PAR/REC pairs to ACQ_Description names")
    examcards: bool = option(True, help="extract the ExamCard of Raw Data Storage objects into the folder")
    delete_empty: bool = option(True, help="delete empty files")
    delete_duplicates: bool = option(True, help="delete exact duplicates (byte for byte) of another file")
    settle: float = option(5.0, help="leave files modified less than this many seconds ago alone")
    ask: bool = option(True, help="show the plan and ask before changing anything")


class CleanupPlan(Reader):
    """Plan the clean-up of whole folders, show the plan, ask, then yield each file with its action."""

    id = "cleanup"
    Options = CleanupOptions

    def read(self):
        from ._cleanup_plan import PlanOptions, plan_folder, TAGS

        from dcmpipe import DcmpipeError
        from dcmpipe.naming import component

        o = self.options
        if component(o.extras, fallback="") != o.extras:
            raise DcmpipeError(f"extras: {o.extras!r} is not a plain folder name (letters, digits, ._+-)")
        plan_options = PlanOptions(recursive=o.recursive, extras=o.extras, leftovers=tuple(o.leftovers),
                                   rename=o.rename, examcards=o.examcards, delete_empty=o.delete_empty,
                                   delete_duplicates=o.delete_duplicates, settle=o.settle)
        plans = []
        for root in o.path:
            root = Path(root)
            if not root.is_dir():
                item = Item(source=root, extra={"relpath": root.name, "root": str(root.parent)})
                item.status, item.reason = "failed", "not a folder"
                yield item
                continue
            plans.append((root, plan_folder(root, plan_options)))
        self.context.total = sum(len(actions) for _, actions in plans)
        changes = [(root, a) for root, actions in plans for a in actions if a.kind != "keep"]
        if not self.context.dry_run:
            if not changes:
                self.context.log.warning("cleanup: nothing to change in %s", ", ".join(str(r) for r, _ in plans))
            elif o.ask and not self._confirm(plans, changes):
                self.context.log.warning("cleanup: nothing changed")
                return
        tags = frozenset(TAGS.values())
        for root, actions in plans:
            for a in actions:
                item = Item(source=a.path, extra={"relpath": str(a.path.relative_to(root)), "root": str(root),
                                                  "cleanup": a})
                if a.dicom:
                    item.header, item.wanted = a.header, tags
                elif a.kind != "delete":
                    item.status, item.reason = "bad", a.reason or "not DICOM"
                yield item

    def _confirm(self, plans, changes) -> bool:
        out = sys.stdout
        for root, actions in plans:
            out.write(f"Clean-up plan for {root}:\n")
            for a in actions:
                if a.kind != "keep":
                    out.write(f"  {a.line(root)}\n")
            kept = sum(a.kind == "keep" for a in actions)
            counts = {k: sum(a.kind == k for a in actions) for k in ("rename", "extras", "delete")}
            out.write(f"  {counts['rename']} to rename, {counts['extras']} to move to extras, "
                      f"{counts['delete']} to delete, {kept} left as they are\n")
        out.flush()
        try:
            return click.confirm("Go ahead?", default=False, err=True)
        except (click.exceptions.Abort, EOFError):
            return False


class CleanupExport(Exporter):
    """Carry out each file's clean-up action: rename, ExamCard then extras, delete, keep."""

    id = "cleanup"
    accepts_bad = True

    def __init__(self, options, context):
        super().__init__(options, context)
        self.counts = {"renamed": 0, "moved to extras": 0, "deleted": 0, "ExamCard files written": 0}

    @staticmethod
    def _action(item):
        action = item.extra.get("cleanup")
        if action is None:
            raise Skip("not planned by the cleanup reader")
        return action, Path(item.extra.get("root", action.path.parent))

    def describe(self, item, destination):
        action, root = self._action(item)
        line = action.line(root)
        if action.kind == "extras" and action.examcard:
            line += "; " + self._examcard_plan(action, root)
        return line

    def _examcard_plan(self, action, root) -> str:
        from ._examcard_blobs import BlobError, examcard, examcard_stem, free_target, read_raw

        try:
            raw = read_raw(action.path)
            card = examcard(raw)
        except BlobError as exc:
            return f"no ExamCard extracted: {exc}"
        if card is None:
            return "no ExamCard in it"
        path, present = free_target(root, examcard_stem(card[0], raw), ".ExamCard", card[1])
        return f"ExamCard {path.relative_to(root)}" + (" (already there)" if present else " to write")

    def export(self, item, destination):
        from dcmpipe.safefile import transfer

        action, root = self._action(item)
        log = item.extra.setdefault("log", [])
        if action.kind == "rename":
            done = transfer(action.path, action.target, "move")
            log.append(f"{action.path} -> {action.target} ({done})")
            self.counts["renamed"] += 1
            return [action.target]
        if action.kind == "extras":
            written = []
            if action.examcard:
                written += self._extract(action, root, log)
            done = transfer(action.path, action.target, "move")
            log.append(f"{action.path} -> {action.target} ({done})")
            self.counts["moved to extras"] += 1
            return written + [action.target]
        if action.kind == "delete":
            self._delete(action)
            log.append(f"{action.path} deleted ({action.reason})")
            item.extra["handled"] = True
            self.counts["deleted"] += 1
            return []
        return []

    def _extract(self, action, root, log) -> list:
        from ._examcard_blobs import BlobError, examcard, examcard_stem, read_raw, write_unique

        try:
            raw = read_raw(action.path)
            card = examcard(raw)
        except BlobError as exc:
            self.context.log.warning("%s: no ExamCard extracted (%s); moved to %s all the same",
                                     action.path, exc, action.target.parent)
            return []
        if card is None:
            return []
        path, status = write_unique(root, examcard_stem(card[0], raw), ".ExamCard", card[1])
        log.append(f"{action.path}: ExamCard {path} ({status})")
        self.counts["ExamCard files written"] += status == "written"
        return [path]

    @staticmethod
    def _delete(action) -> None:
        from dcmpipe.safefile import same_content

        path = action.path
        if action.keeper is None:  # an empty file
            if os.path.getsize(path) != 0:
                raise Skip("no longer empty: kept")
            os.unlink(path)
            return
        for copy in dict.fromkeys(p for p in (action.keeper_target, action.keeper) if p is not None):
            try:
                if os.path.samefile(copy, path):
                    continue
                if same_content(copy, path):
                    os.unlink(path)
                    return
            except FileNotFoundError:
                continue
        raise Skip(f"its copy {action.keeper} is gone or differs now: kept")

    def close(self):
        done = {k: v for k, v in self.counts.items() if v}
        if done:
            self.context.log.warning("cleanup: " + ", ".join(f"{v} {k}" for k, v in done.items()))


@hookimpl
def dcmpipe_readers():
    return [CleanupPlan]


@hookimpl
def dcmpipe_exporters():
    return [CleanupExport]


# -- the `dcmpipe cleanup` command --------------------------------------------

HELP = """Tidy folders a technologist filled from the scanner (default: the current folder).

\b
A plan is made for the whole folder first, shown, and carried out only after
you answer y (or with -y):
  - DICOM files are renamed ACQ_SeriesDescription.dcm (one file per series,
    Enhanced MR) or ACQ_SeriesDescription_INST.dcm (classic, one per image);
    PAR/REC pairs ACQ_Protocol.PAR/.REC (ACQ: the acquisition number);
  - ExamCards are extracted from Raw Data Storage objects into the folder
    as <ExamCard name>.ExamCard (like dcmpipe dcmexamcard);
  - extraneous files (Raw Data Storage objects, DICOMDIR, presentation states,
    console leftovers such as Thumbs.db) are moved to the sub-folder extras/;
  - only empty files and exact duplicates (compared byte for byte) are deleted.
Nothing is ever overwritten; everything else stays as it is.

\b
Examples:
  dcmpipe cleanup                     plan for ./, ask, then do it
  dcmpipe cleanup --dry-run /data/s1  only show what would happen
  dcmpipe cleanup -y -R /data/s1      no question; sub-folders too
  dcmpipe cleanup --keep-duplicates   delete nothing but empty files
  dcmpipe cleanup --print-recipe      the recipe this command runs
"""


def cleanup_recipe(dirs, recurse, extras, keep_empty, keep_duplicates, no_rename, no_examcards, yes, wait) -> dict:
    read = {"read": "cleanup", "path": list(dict.fromkeys(str(Path(d).resolve()) for d in (dirs or ["."]))), "recursive": recurse,
            "extras": extras, "rename": not no_rename, "examcards": not no_examcards,
            "delete_empty": not keep_empty, "delete_duplicates": not keep_duplicates, "settle": wait,
            "ask": not yes}
    return {"recipe": {"name": "cleanup"}, "step": [read, {"export": "cleanup"}]}


@click.command("cleanup", help=HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("dirs", nargs=-1, type=click.Path(exists=True, file_okay=False))
@click.option("-y", "--yes", "yes", is_flag=True, help="do it without asking")
@click.option("-R", "recurse", is_flag=True, help="also clean sub-folders (files stay in their folder)")
@click.option("--extras", default="extras", show_default=True, metavar="NAME",
              help="sub-folder for extraneous files")
@click.option("--keep-empty", is_flag=True, help="do not delete empty files")
@click.option("--keep-duplicates", is_flag=True, help="do not delete exact duplicates")
@click.option("--no-rename", is_flag=True, help="do not rename DICOM files and PAR/REC pairs")
@click.option("--no-examcards", is_flag=True, help="do not extract ExamCards")
@click.option("--wait", type=float, default=5.0, show_default=True, metavar="SECONDS",
              help="leave files modified less than SECONDS ago (still arriving) alone")
@click.option("-q", "quiet", is_flag=True, help="quiet: only errors and questions")
@click.option("-v", "verbose", is_flag=True, help="say what happens to every file")
@click.option("--dry-run", is_flag=True, help="show what would happen; change nothing")
@click.option("--print-recipe", is_flag=True, help="print the equivalent TOML recipe and exit")
@click.option("--debug", is_flag=True, help="show tracebacks")
def cleanup_command(dirs, yes, recurse, extras, keep_empty, keep_duplicates, no_rename, no_examcards, wait, quiet,
                    verbose, dry_run, print_recipe, debug):
    from dcmpipe.cli import run_tool
    from dcmpipe.naming import component

    if component(extras, fallback="") != extras:
        raise click.BadParameter("a plain folder name (letters, digits, ._+-)", param_hint="--extras")
    data = cleanup_recipe(dirs, recurse, extras, keep_empty, keep_duplicates, no_rename, no_examcards, yes, wait)
    # One process: the plan was made for the whole folder and is carried out in order.
    run_tool(data, print_recipe=print_recipe, dry_run=dry_run, jobs=1, quiet=quiet, verbose=verbose, debug=debug)


@hookimpl
def dcmpipe_register_commands(cli):
    cli.add_command(cleanup_command)
    cli.add_command(cleanup_command, name="dcmcleanup")
