"""dcminfo: what is in a set of DICOM files, at a glance; and renaming files by tag values.

Steps (docs/plugins/dcminfo.md has examples):

* transform ``info-values``: the selected tags of each file as text (searching
  inside sequences when asked), or an Enhanced file's per-frame values;
* export ``info-table``: the tags equal in every file, then a table of the
  ones that differ, one row per file (or per frame);
* name ``tag-values``: a new file name from tag values, for all files or none;
* export ``rename``: rename each file in its own folder, never overwriting.

``dcmpipe info`` offers the original tool's four forms with its letters.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import click

from dcmpipe import DcmpipeError, Exporter, Namer, Skip, Transform, hookimpl, option
from dcmpipe.plugins._dcmls_common import check_tags, shown

_NUMBER_OF_FRAMES = 0x00280008
_SOP = "1.2.840.10008.5.1.4.1.1."
# Enhanced and legacy-converted multi-frame classes: their per-frame values live in functional groups
ENHANCED_CLASSES = frozenset(_SOP + s for s in (
    "4.1", "4.3", "4.4", "2.1", "2.2", "128.1", "130", "6.2", "12.1.1", "12.2.1", "13.1.3", "20", "77.1.6"))
DEFAULT_TAGS = (
    "PatientName", "PatientID", "StudyDate", "StudyDescription", "SeriesNumber", "SeriesDescription",
    "ProtocolName", "Modality", "Manufacturer", "MagneticFieldStrength", "ImageType", "Rows", "Columns",
    "PixelSpacing", "SliceThickness", "RepetitionTime", "EchoTime", "FlipAngle", "NumberOfFrames",
    "InstanceNumber",
)


# -- transform: the values of each file --------------------------------------------------------------


@dataclass(frozen=True)
class InfoValuesOptions:
    tags: list[str] = option(factory=lambda: list(DEFAULT_TAGS),
                             help="tags to show: keywords or numbers (0008,103e); '*' for every top-level element")
    search_all: bool = option(False, help="every occurrence of each tag, inside sequences too (-s); "
                                          "otherwise the top level, and in multi-frame files the first found")
    frames: bool = option(False, help="the per-frame functional group values of Enhanced (multi-frame) files")

    def __post_init__(self):
        check_tags(self.tags, allow_all=True)


class InfoValues(Transform):
    """The selected tags of each file as text, or an Enhanced file's per-frame values."""

    id = "info-values"
    Options = InfoValuesOptions
    tags = DEFAULT_TAGS
    parallel = True

    def __init__(self, options, context):
        super().__init__(options, context)
        from dcmpipe.plugins._dcmls_common import name, number, parse_tags

        self.all = any(t.strip() == "*" for t in options.tags)
        self.tag_list = parse_tags([t for t in options.tags if t.strip() != "*"])
        self.names = {t: name(t) for t in self.tag_list}
        self.numbers = {self.names[t]: number(t) for t in self.tag_list}
        declared = set(parse_tags(list(DEFAULT_TAGS)))
        self.lean = frozenset(self.tag_list) | {_NUMBER_OF_FRAMES} if not set(self.tag_list) <= declared else None

    def transform(self, item):
        import warnings

        with warnings.catch_warnings():  # pydicom's remarks on odd values (as it converts them) are noise here
            warnings.simplefilter("ignore")
            return self._transform(item)

    def _transform(self, item):
        from dcmpipe.header import read_header
        from dcmpipe.plugins._dcminfo_values import frame_table, occurrences, read_dataset
        from dcmpipe.plugins._dcmls_common import name, number, text

        values: dict[str, str] = {}
        numbers = dict(self.numbers)
        ds = None
        if self.all:
            header = read_header(item.data_source(), None)
            for tag in sorted(header):
                label = name(tag)
                values[label] = text(header[tag])
                numbers[label] = number(tag)
        if self.tag_list:
            header = read_header(item.data_source(), self.lean) if self.lean is not None else None
            found_in = header if header is not None else item.header  # holds every declared tag present
            frames = found_in.get(_NUMBER_OF_FRAMES)
            sop = getattr(found_in, "sop_class_uid", None)
            nested = sop in ENHANCED_CLASSES or (isinstance(frames, int) and frames > 1)
            for tag in self.tag_list:
                label = self.names[tag]
                if self.options.search_all:
                    ds = ds if ds is not None else read_dataset(item.data_source())
                    found = occurrences(ds, tag, first=False)
                    if found:
                        values[label] = " | ".join(found)
                    continue
                value = found_in.get(tag)
                if value is not None:
                    values[label] = text(value)
                    continue
                if not nested:
                    continue
                # an Enhanced or multi-frame file: the first occurrence inside a sequence (functional groups)
                ds = ds if ds is not None else read_dataset(item.data_source())
                found = occurrences(ds, tag, first=True)
                if found:
                    values[label] = found[0]
        info = {"values": values, "numbers": numbers}
        if self.options.frames:
            ds = ds if ds is not None else read_dataset(item.data_source())
            shared, frames = frame_table(ds)
            info.update(shared=shared, frames=frames)
        item.extra["info"] = info
        return item


# -- export: the table ------------------------------------------------------------------------------


@dataclass(frozen=True)
class InfoTableOptions:
    width: int = option(200, help="table width in characters; wider tables are folded into several (-w)")
    full_paths: bool = option(False, help="show files with their full paths (-f); otherwise as found under the "
                                          "folder or file given")
    output: Path | None = option(None, help="file to write the table to (default: standard output); never "
                                            "overwritten")

    def __post_init__(self):
        if self.width < 20:
            raise ValueError("option 'width': give at least 20 characters")
        if self.output is not None and os.path.lexists(self.output):
            raise ValueError(f"option 'output': {self.output} already exists; a table never overwrites a file")


class InfoTable(Exporter):
    """Tags equal in every file, then a table of the tags that differ (one row per file or frame)."""

    id = "info-table"
    Options = InfoTableOptions
    accepts_bad = True
    main_process = True  # the table is written once, by one process

    def __init__(self, options, context):
        super().__init__(options, context)
        self.rows: list[tuple[str, dict]] = []
        self.bad: list[tuple[str, str]] = []

    def _label(self, item) -> str:
        if self.options.full_paths:
            return str(Path(item.source).resolve()) if item.source is not None else str(item)
        return item.extra.get("relpath") or (item.source.name if item.source is not None else str(item))

    def export(self, item, destination):
        item.extra["handled"] = True
        if item.status == "bad":
            self.bad.append((self._label(item), item.reason))
            return []
        if "info" not in item.extra:
            raise DcmpipeError("the info-table export needs the info-values transform before it")
        self.rows.append((self._label(item), item.extra["info"]))
        return []

    def describe(self, item, destination):
        return f"info-table: would show {item}"

    def close(self):
        import multiprocessing

        if multiprocessing.parent_process() is not None or (not self.rows and not self.bad):
            return  # a worker process's copy of the step: the main process writes the table
        from dcmpipe.plugins._dcmls_common import Output

        target = self.options.output
        out = Output(None if target is None else self.context.resolve(target))
        try:
            out.write(self.table())
        finally:
            out.close(keep=not self.context.dry_run)

    def table(self) -> str:
        from dcmpipe.plugins._dcminfo_values import render

        width = self.options.width
        parts = []
        frames = any("frames" in info for _, info in self.rows)
        if frames:
            for label, info in self.rows:
                parts.append(_frames_section(label, info, width))
        elif self.rows:
            columns: list[str] = []
            numbers: dict[str, str] = {}
            for _, info in self.rows:
                for col in info["values"]:
                    if col not in numbers:
                        columns.append(col)
                numbers.update(info["numbers"])
            for col in numbers:  # asked for but absent everywhere: still listed
                if col not in columns:
                    columns.append(col)
            rows = [(label, info["values"]) for label, info in self.rows]
            count = len(rows)
            title = f"{rows[0][0]}:" if count == 1 else f"Same in all {count} files:"
            parts.append(render(rows, columns, width, title, numbers))
        if self.bad:
            parts.append(f"Not DICOM ({len(self.bad)}):\n" + "".join(f"  {label}: {reason}\n"
                                                                    for label, reason in self.bad))
        return "\n".join(parts)


def _frames_section(label: str, info: dict, width: int) -> str:
    from dcmpipe.plugins._dcminfo_values import render

    frames = info.get("frames") or []
    if not frames:
        return f"{label}: no per-frame functional groups (not an Enhanced multi-frame file)\n" + render(
            [(label, info["values"])], list(info["values"]) or [], width, "", info["numbers"]).lstrip("\n")
    constant = {**info["values"], **info["shared"]}
    rows = [(f"frame {n}", {**constant, **frame}) for n, frame in enumerate(frames, 1)]
    columns = list(dict.fromkeys([*constant, *(k for f in frames for k in f)]))
    text = render(rows, columns, width, f"{label}: {len(frames)} frames; the same in every frame:", info["numbers"])
    return text.replace("\nfile ", "\nframe", 1) if "\nfile " in text else text


# -- renaming ---------------------------------------------------------------------------------------------


class RenameRefusedError(DcmpipeError):
    """A file cannot get its new name; then no file is renamed."""


@dataclass(frozen=True)
class TagValuesOptions:
    tags: list[str] = option(help="tags whose values, joined with '_', make the new file name")
    extension: str = option(".dcm", help="added to every name")

    def __post_init__(self):
        if not self.tags:
            raise ValueError("option 'tags': give at least one tag")
        check_tags(self.tags)
        if "/" in self.extension or "\\" in self.extension or self.extension in (".", ".."):
            raise ValueError(f"option 'extension': {self.extension!r} must be a plain suffix like '.dcm'")


class TagValues(Namer):
    """A name from tag values (safe characters only), for every file of the run or for none."""

    id = "tag-values"
    Options = TagValuesOptions
    group = "run"

    def name_group(self, items):
        from dcmpipe.header import read_header
        from dcmpipe.naming import component
        from dcmpipe.plugins._dcmls_common import name, parse_tags, text

        tags = parse_tags(self.options.tags)
        wanted = frozenset(tags)
        names, problems = [], {}
        for index, item in enumerate(items):
            header = read_header(item.data_source(), wanted)
            missing = [name(t) for t in tags if header.get(t) is None or text(header.get(t)).strip() == ""]
            if missing:
                problems[index] = f"has no {', '.join(missing)}"
                names.append(None)
                continue
            names.append("_".join(component(text(header[t])) for t in tags) + self.options.extension)
        targets: dict[tuple, int] = {}
        for index, (item, new) in enumerate(zip(items, names)):
            if new is None:
                continue
            folder = item.source.parent
            key = (str(folder), new)
            if key in targets:
                other = items[targets[key]]
                problems[index] = f"would get the name {new}, as {other.source.name} would"
                problems.setdefault(targets[key], f"would get the name {new}, as {item.source.name} would")
                continue
            targets[key] = index
            target = folder / new
            if os.path.lexists(target) and not _same_file(target, item.source):
                problems[index] = f"would get the name {new}, which another file already has"
        if problems:
            self.context.log.error("nothing renamed: %d of %d files cannot be renamed (see below)",
                                   len(problems), len(items))
            out = []
            for index, item in enumerate(items):
                if index in problems:
                    out.append(RenameRefusedError(f"not renamed: {problems[index]}"))
                else:
                    out.append(Skip("not renamed: other files cannot be renamed"))
            return out
        return names


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


@dataclass(frozen=True)
class RenameOptions:
    show: bool = option(False, help="print 'old -> new' for every file renamed")


class Rename(Exporter):
    """Rename each file to its new name in its own folder; never overwrite."""

    id = "rename"
    Options = RenameOptions

    def _target(self, item) -> Path:
        if item.name is None or item.source is None:
            raise DcmpipeError("the rename export needs a name step before it")
        return item.source.parent / item.name

    def export(self, item, destination):
        from dcmpipe.safefile import transfer

        target = self._target(item)
        if target == item.source:
            item.extra["handled"] = True
            item.extra["log"] = [f"{shown(item.source)}: already named {item.name}"]
            return []
        transfer(item.source, target, "move")
        item.extra["log"] = [f"{shown(item.source)} -> {target.name}"]
        if self.options.show:
            click.echo(item.extra["log"][0])
        return [target]

    def describe(self, item, destination):
        target = self._target(item)
        return f"{shown(item.source)} -> {target.name}" + (" (already so named)" if target == item.source else "")


# -- the command ----------------------------------------------------------------------------------------

INFO_HELP = """Show what is in DICOM files: the tags equal in all, then a table of the ones that differ.

\b
Four forms, as the original dcminfo:
  dcmpipe info [-t TAGS [-x]] [-s] [-f] [-w WIDTH] [--frames] FILES...
  dcmpipe info -r TAGS [-c] [-q] FILES...     rename files to their tag values
  dcmpipe info -l [-k] FILE                   every element's name and tag
  dcmpipe info -a FILE                        every element and its value
TAGS are colon-separated keywords (SeriesDescription) or numbers (0008,103e);
'*' stands for every top-level element. A folder stands for the files in it.
The default tags can be set in ~/.dcminforc ('Tags t1 t2 ...', 'MaxWidth N')
or in dcminfo.toml in the config folder (tags = [...], max_width = N).

\b
Examples:
  dcmpipe info exam/*                      default tags of every file
  dcmpipe info -t EchoTime:0018,0087 -x .  only these two tags
  dcmpipe info --frames enhanced.dcm       which frame values vary
  dcmpipe info -r SeriesNumber:InstanceNumber -c *   check the new names
  dcmpipe info -a IM_0001 | less
"""


def info_recipe(files, tags, search_all, frames, full_paths, width) -> dict:
    return {"recipe": {"name": "dcminfo"}, "step": [
        {"read": "files", "path": [str(f) for f in files], "recursive": True, "settle": 0.0},
        {"transform": "info-values", "tags": tags, "search_all": search_all, "frames": frames},
        {"export": "info-table", "width": width, "full_paths": full_paths},
    ]}


def rename_recipe(files, tags, show=True) -> dict:
    return {"recipe": {"name": "dcminfo rename"}, "step": [
        {"read": "files", "path": [str(f) for f in files], "recursive": False, "settle": 0.0},
        {"name": "tag-values", "tags": tags},
        {"export": "rename", "show": show},
    ]}


def _split(values) -> list[str]:
    return [t for v in values for t in v.replace(";", ":").split(":") if t.strip()]


@click.command("info", help=INFO_HELP, context_settings={"help_option_names": ["-h", "--help"],
                                                         "max_content_width": 100})
@click.argument("files", nargs=-1, type=click.Path())
@click.option("-t", "tags", multiple=True, metavar="TAGS", help="add these tags (colon-separated; '*' for all)")
@click.option("-x", "exclusive", is_flag=True, help="with -t: only the -t tags, not the default list")
@click.option("-s", "search_all", is_flag=True, help="every occurrence, inside sequences too (default: first found)")
@click.option("-f", "full_paths", is_flag=True, help="show full paths")
@click.option("-w", "width", type=click.IntRange(20), default=None, help="table width (default 200, or MaxWidth)")
@click.option("--frames", is_flag=True, help="Enhanced files: one row per frame, with the per-frame values")
@click.option("-r", "rename", metavar="TAGS", help="rename files to their TAGS values joined with _, plus .dcm")
@click.option("-c", "check", is_flag=True, help="with -r: only check and print the new names")
@click.option("-q", "quiet", is_flag=True, help="with -r: say nothing on success")
@click.option("-l", "list_elements", is_flag=True, help="list every element's name and tag, sorted by tag")
@click.option("-k", "by_keyword", is_flag=True, help="with -l: sort by name")
@click.option("-a", "dump_all", is_flag=True, help="every element with its value; sequences indented")
@click.option("--jobs", "-j", type=click.IntRange(1), default=None, help="processes sharing the work (default: cores)")
@click.option("-v", "verbose", is_flag=True, help="the run's summary line")
@click.option("--print-recipe", is_flag=True, help="print the equivalent TOML recipe and exit")
@click.option("--debug", is_flag=True, help="show tracebacks")
def info_command(files, tags, exclusive, search_all, full_paths, width, frames, rename, check, quiet,
                 list_elements, by_keyword, dump_all, jobs, verbose, print_recipe, debug):
    from dcmpipe.cli import run_tool

    forms = [bool(rename), list_elements, dump_all]
    if sum(forms) > 1:
        raise click.UsageError("-r, -l and -a are different forms: give one of them")
    if not files:
        raise click.UsageError("give one or more FILES")
    table_switches = tags or exclusive or search_all or full_paths or width or frames
    if any(forms) and table_switches:
        raise click.UsageError("-t, -x, -s, -f, -w and --frames belong to the table form (no -r, -l or -a)")
    if exclusive and not tags:
        raise click.UsageError("-x needs -t: the tags to show instead of the default list")
    if (check or quiet) and not rename:
        raise click.UsageError("-c and -q go with -r")
    if by_keyword and not list_elements:
        raise click.UsageError("-k goes with -l")
    if list_elements or dump_all:
        _whole_file_form(files, list_elements, by_keyword)
        return
    if rename:
        names = _split([rename])
        _validate(names, "-r")
        run_tool(rename_recipe(files, names, show=not quiet), print_recipe=print_recipe, dry_run=check, jobs=1,
                 quiet=True, verbose=verbose, debug=debug)
        return
    from dcmpipe.plugins._dcminfo_values import load_settings

    try:
        settings_tags, settings_width, _ = load_settings()
    except ValueError as exc:
        raise DcmpipeError(str(exc)) from None
    base = [] if exclusive else list(settings_tags or DEFAULT_TAGS)
    extra = _split(tags)
    _validate([t for t in extra if t != "*"], "-t")
    if settings_tags:
        _validate(settings_tags, "the settings file's Tags")
    chosen = list(dict.fromkeys(["*"] if "*" in extra else base + extra))
    data = info_recipe(files, chosen, search_all, frames, full_paths, width or settings_width or 200)
    run_tool(data, print_recipe=print_recipe, jobs=jobs, quiet=not verbose, verbose=verbose, debug=debug)


def _validate(tags: list[str], where: str) -> None:
    from dcmpipe.plugins._dcmls_common import parse_tags

    try:
        parse_tags(tags)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=where) from None


def _debug() -> bool:
    from dcmpipe.cli import STATE

    return bool(STATE.get("debug"))


def _whole_file_form(files, list_elements: bool, by_keyword: bool) -> None:
    import warnings

    from dcmpipe import NotDicomError
    from dcmpipe.header import read_header
    from dcmpipe.plugins._dcminfo_values import dump, element_list, read_dataset

    failed = 0
    for n, path in enumerate(files):
        try:
            read_header(path, frozenset())  # a clear one-line reason for a file that is not DICOM
            ds = read_dataset(path, pixels=True)
        except NotDicomError as exc:
            click.echo(f"dcmpipe: error: {exc}", err=True)
            failed += 1
            continue
        except Exception as exc:  # noqa: BLE001 - damage pydicom finds past the header: one line, go on
            if _debug():
                raise
            detail = (str(exc).splitlines() or [type(exc).__name__])[0][:120]
            click.echo(f"dcmpipe: error: {path}: unreadable DICOM file ({detail})", err=True)
            failed += 1
            continue
        if len(files) > 1:
            click.echo(("\n" if n else "") + f"==> {path} <==")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lines = element_list(ds, by_keyword) if list_elements else dump(ds)
        try:
            click.echo("\n".join(lines))
        except BrokenPipeError:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            return
    if failed:
        sys.exit(1)


@hookimpl
def dcmpipe_transforms():
    return [InfoValues]


@hookimpl
def dcmpipe_exporters():
    return [InfoTable, Rename]


@hookimpl
def dcmpipe_namers():
    return [TagValues]


@hookimpl
def dcmpipe_register_commands(cli):
    cli.add_command(info_command)
