"""dcmls: list folders like ``ls -lR``, with the DICOM fields of every DICOM file.

* export ``listing``: one line (or TSV row, or JSON object) per file: mode,
  owner, group, size, date and name, plus the chosen header fields of DICOM
  files; other files are listed as ``ls`` lists them.  Rows are written as
  items arrive (memory stays flat), to standard output or to a file that
  appears, complete, when the run ends.

``dcmpipe ls [PATH...]`` is a recipe of the ``files`` reader and this export.
"""

from __future__ import annotations

import json
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import click

from dcmpipe import DcmpipeError, Exporter, hookimpl, option
from dcmpipe.plugins._dcmls_common import Output, check_tags, name, parse_tags, plain, shown, text

DEFAULT_TAGS = (
    "SeriesDate", "SeriesTime", "StudyDescription", "SeriesDescription", "PatientName", "PatientID",
    "ProtocolName", "SeriesNumber", "PerformedProcedureStepDescription",
)
BLOCK = 1000  # rows aligned together in text output: at most one folder's worth, at most this many
_MONTHS = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()
_SIX_MONTHS = 182.5 * 24 * 3600


@dataclass(frozen=True)
class ListingOptions:
    output: Path | None = option(None, help="file to write the listing to (default: standard output); never overwritten")
    format: Literal["text", "tsv", "json"] = option(
        "text", help="text: aligned columns like ls -l; tsv: a header line and tab-separated rows; json: an array")
    tags: list[str] = option(factory=lambda: list(DEFAULT_TAGS),
                             help="header fields of DICOM files, as keywords or numbers (0008,103e)")

    def __post_init__(self):
        check_tags(self.tags)
        if self.output is not None and os.path.lexists(self.output):
            raise ValueError(f"option 'output': {self.output} already exists; a listing never overwrites a file")


class _Owners:
    """User and group names by id, looked up once each."""

    def __init__(self):
        self.users: dict[int, str] = {}
        self.groups: dict[int, str] = {}

    def user(self, uid: int) -> str:
        if uid not in self.users:
            try:
                import pwd

                self.users[uid] = pwd.getpwuid(uid).pw_name
            except (KeyError, ImportError):
                self.users[uid] = str(uid)
        return self.users[uid]

    def group(self, gid: int) -> str:
        if gid not in self.groups:
            try:
                import grp

                self.groups[gid] = grp.getgrgid(gid).gr_name
            except (KeyError, ImportError):
                self.groups[gid] = str(gid)
        return self.groups[gid]


def ls_date(mtime: float, now: float) -> str:
    """The date as ``ls -l`` shows it: time of day if recent, else the year."""
    t = time.localtime(mtime)
    day = f"{_MONTHS[t.tm_mon - 1]} {t.tm_mday:2d}"
    if now - _SIX_MONTHS < mtime <= now + 60:
        return f"{day} {t.tm_hour:02d}:{t.tm_min:02d}"
    return f"{day}  {t.tm_year}"


class Listing(Exporter):
    """A listing like ls -lR, with header fields of DICOM files, streamed as files arrive."""

    id = "listing"
    Options = ListingOptions
    tags = DEFAULT_TAGS
    accepts_bad = True
    main_process = True  # one stream, in item order

    def __init__(self, options, context):
        super().__init__(options, context)
        self.tag_list = parse_tags(options.tags)
        # tags beyond the declared ones: read just these (the lean reader) rather than the whole header
        self.extra_tags = frozenset(self.tag_list) if not set(self.tag_list) <= set(parse_tags(DEFAULT_TAGS)) else None
        self.names = [name(t) for t in self.tag_list]
        self.owners = _Owners()
        self.now = time.time()
        self.rows: list[tuple[str, list[str]]] = []
        self.folder: str | None = None
        self.shown: set[str] = set()  # folders whose header was written (one entry per folder)
        self.count = 0
        self._out = None

    @property
    def out(self):
        if self._out is None:
            _check_main_process()
            target = self.options.output
            self._out = Output(None if target is None else self.context.resolve(target))
            if self.options.format == "tsv":
                self._out.write("\t".join(["path", "mode", "owner", "group", "size", "mtime", "dicom", *self.names])
                                + "\n")
            elif self.options.format == "json":
                self._out.write("[")
        return self._out

    def export(self, item, destination):
        out = self.out
        if out.broken:  # nobody reads any more: drop the rows, finish quietly
            item.extra["handled"] = True
            return []
        path = item.source
        st = os.lstat(path)
        dicom = item.status == "ok"
        values = None
        if dicom and self.extra_tags is not None:
            from dcmpipe.header import read_header

            header = read_header(item.data_source(), self.extra_tags)
            values = [header.get(t) for t in self.tag_list]
        elif dicom:
            values = [item.get(t) for t in self.tag_list]
        fmt = self.options.format
        if fmt == "text":
            self._text_row(path, st, values, item.extra.get("root"))
        elif fmt == "tsv":
            self._tsv_row(path, st, values, item)
        else:
            self._json_row(path, st, values, item)
        item.extra["handled"] = True  # listed: a non-DICOM file counts as dealt with
        return []

    def describe(self, item, destination):
        return f"listing: would list {item}"

    # -- the three formats ----------------------------------------------------

    def _ls_fields(self, st) -> list[str]:
        return [stat.filemode(st.st_mode), self.owners.user(st.st_uid), self.owners.group(st.st_gid),
                str(st.st_size), ls_date(st.st_mtime, self.now)]

    def _text_row(self, path: Path, st, values, root: str | None) -> None:
        folder = str(path.parent)
        if folder != self.folder:
            self._flush_text()
            # folders holding only folders have no file of their own: show them on the way down
            chain = [path.parent]
            while root and str(chain[-1]).startswith(root + os.sep) and str(chain[-1].parent) not in self.shown:
                chain.append(chain[-1].parent)
            for where in reversed(chain):
                if str(where) in self.shown and where != path.parent:
                    continue
                self._flush_text()
                self.out.write(("\n" if self.folder is not None else "") + shown(where) + ":\n")
                self.folder = str(where)
                self.shown.add(str(where))
                self._folder_rows(where)
        elif len(self.rows) >= BLOCK:
            self._flush_text()
        fields = self._ls_fields(st) + [path.name]
        if values is not None:
            fields += [text(v) or "-" for v in values]
        self.rows.append(fields)

    def _folder_rows(self, folder: Path) -> None:
        """The subfolders of a folder, listed first (ls -lR lists them among the files)."""
        try:
            entries = sorted((e for e in os.scandir(folder) if not e.name.startswith(".")), key=lambda e: e.name)
        except OSError:
            return
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    self.rows.append(self._ls_fields(entry.stat(follow_symlinks=False)) + [entry.name])
            except OSError:
                continue

    def _flush_text(self) -> None:
        if self.rows:
            self.out.write(_align(self.rows, self.names))
            self.rows = []

    def _tsv_row(self, path: Path, st, values, item) -> None:
        fields = [shown(path)] + self._ls_fields(st)[:4] + [_iso(st.st_mtime), "yes" if values is not None else "no"]
        fields += [text(v) for v in values] if values is not None else [""] * len(self.names)
        self.out.write("\t".join(f.replace("\t", " ") for f in fields) + "\n")

    def _json_row(self, path: Path, st, values, item) -> None:
        mode, owner, group, size, _ = self._ls_fields(st)
        record = {"path": shown(path), "mode": mode, "owner": owner, "group": group, "size": st.st_size,
                  "mtime": _iso(st.st_mtime), "dicom": values is not None}
        if values is not None:
            record["tags"] = {n: plain(v) for n, v in zip(self.names, values)}
        else:
            record["reason"] = item.reason
        self.out.write(("\n" if self.count == 0 else ",\n") + json.dumps(record, ensure_ascii=False))
        self.count += 1

    def close(self):
        if self._out is None:
            if self.options.format == "text" or _in_worker():
                return
            _ = self.out  # an empty listing is still a valid TSV or JSON document
        if self.options.format == "text":
            self._flush_text()
        elif self.options.format == "json":
            self.out.write("\n]\n" if self.count else "]\n")
        self._out.close(keep=not self.context.dry_run)


def _align(rows: list[list[str]], names: list[str]) -> str:
    """One block of text rows: the folder's files, columns padded to the widest value."""
    table = list(rows)
    if any(len(r) > 6 for r in rows):
        table.insert(0, ["mode", "owner", "group", "size", "date", "name", *names])
    widths: list[int] = []
    for row in table:
        for i, cell in enumerate(row):
            if i == len(widths):
                widths.append(0)
            widths[i] = max(widths[i], len(cell))
    lines = []
    for row in table:
        cells = []
        for i, cell in enumerate(row):
            last = i == len(row) - 1
            if i == 3:  # size: right-aligned, as ls does
                cells.append(cell.rjust(widths[i]))
            else:
                cells.append(cell if last else cell.ljust(widths[i]))
        lines.append((" ".join(cells[:6]) + ("  " + "  ".join(cells[6:]) if len(cells) > 6 else "")).rstrip())
    return "\n".join(lines) + "\n"


def _iso(mtime: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(mtime))


def _in_worker() -> bool:
    import multiprocessing

    return multiprocessing.parent_process() is not None


def _check_main_process() -> None:
    if _in_worker():
        raise DcmpipeError("the listing export writes one stream and cannot run in a worker process")


# -- the command ----------------------------------------------------------------

LS_HELP = """List files like ls -lR, with the DICOM fields of every DICOM file.

\b
For each file: mode, owner, group, size, date and name; for DICOM files also
SeriesDate SeriesTime StudyDescription SeriesDescription PatientName PatientID
ProtocolName SeriesNumber PerformedProcedureStepDescription (or the --tags
you choose).  Other files are listed as ls lists them.  Folders are listed
recursively; hidden files are not listed.

\b
Examples:
  dcmpipe ls                              the current folder, recursively
  dcmpipe ls /data/incoming --format tsv > list.tsv
  dcmpipe ls . --tags SeriesNumber:EchoTime:0018,0087
  dcmpipe ls exam --format json | jq '.[] | select(.dicom) | .tags.SeriesDescription'
  dcmpipe ls exam -o exam-listing.txt     write the listing to a file (never overwritten)
"""


def ls_recipe(paths, fmt, tags, output, recursive) -> dict:
    listing = {"export": "listing", "format": fmt}
    if tags is not None:
        listing["tags"] = tags
    if output is not None:
        listing["output"] = str(output)
    return {"recipe": {"name": "dcmls"}, "step": [
        {"read": "files", "path": [str(p) for p in paths], "recursive": recursive, "settle": 0.0},
        listing,
    ]}


@click.command("ls", help=LS_HELP, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--format", "-F", "fmt", type=click.Choice(["text", "tsv", "json"]), default="text", show_default=True,
              help="text: aligned columns; tsv and json for scripts")
@click.option("--tags", "-t", "tags", metavar="TAGS",
              help="the DICOM fields to show, colon-separated keywords or numbers (0008,103e)")
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="write the listing to this file (never overwritten)")
@click.option("--no-recursive", "flat", is_flag=True, help="do not descend into subfolders")
@click.option("--jobs", "-j", type=click.IntRange(1), default=None,
              help="processes sharing the work, this one included (default: cores)")
@click.option("-q", "--quiet", is_flag=True, help="only errors")
@click.option("-v", "--verbose", is_flag=True, help="the run's summary line, and what happens to every file")
@click.option("--print-recipe", is_flag=True, help="print the equivalent TOML recipe and exit")
@click.option("--debug", is_flag=True, help="show tracebacks")
def ls_command(paths, fmt, tags, output, flat, jobs, quiet, verbose, print_recipe, debug):
    from dcmpipe.cli import run_tool

    tag_list = None
    if tags is not None:
        try:
            parse_tags([tags])
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--tags") from None
        tag_list = [t for t in tags.replace(";", ":").split(":") if t.strip()]
    data = ls_recipe(paths or ["."], fmt, tag_list, output, not flat)
    run_tool(data, print_recipe=print_recipe, jobs=jobs, quiet=not verbose, verbose=verbose, debug=debug)


@hookimpl
def dcmpipe_exporters():
    return [Listing]


@hookimpl
def dcmpipe_register_commands(cli):
    cli.add_command(ls_command)
