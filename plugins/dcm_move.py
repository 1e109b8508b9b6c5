"""dcm_move: sort DICOM files into study / series folders, or rename them.

Steps (see docs/plugins/dcm_move.md for the naming scheme with examples):

* transform ``modality``: keep only some modalities (``-m``);
* transform ``confirm-study``: ask once per study before touching it (no ``-a``);
* route ``patient-history``: ``#-#<folder>`` in Additional Patient History;
* route ``fixed`` / ``in-place``: the destination folder / each file's own folder;
* name ``hierarchical`` / ``flat`` / ``unmove``: the new names;
* export ``dicom``: move or copy (never overwrite), ``info`` file, ``bad/``.

The ``dcmpipe move`` command builds a recipe of these steps from the
original tool's switches.
"""

from __future__ import annotations

import os
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import click

from dcmpipe import Exporter, Namer, Router, Skip, Transform, hookimpl, option
from dcmpipe.naming import component, number

PHILIPS_CREATOR = "Philips Imaging DD 001"
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"

# SOP classes per modality letter code of the original -m switch.
_SOP = "1.2.840.10008.5.1.4.1.1."
MODALITY_CLASSES = {
    "MR": {_SOP + s for s in ("4", "4.1", "4.2", "4.3", "4.4")},
    "CT": {_SOP + s for s in ("2", "2.1", "2.2")},
    "US": {_SOP + s for s in ("6.1", "6", "6.2")},
    "USMF": {_SOP + s for s in ("3.1", "3")},
    "CR": {_SOP + "1"},
    "NM": {_SOP + s for s in ("20", "5")},
    "SC": {_SOP + s for s in ("7", "7.1", "7.2", "7.3", "7.4")},
}
MODALITY_TAG = {"MR": "MR", "CT": "CT", "US": "US", "USMF": "US", "CR": "CR", "NM": "NM", "SC": "OT"}

NAME_TAGS = (
    "StudyID", "StudyInstanceUID", "SeriesInstanceUID", "SeriesNumber", "SeriesDescription",
    "SOPInstanceUID", "SOPClassUID", "InstanceNumber", "ImagePositionPatient", "ImageOrientationPatient",
    "TemporalPositionIdentifier", "NumberOfTemporalPositions", "EchoNumbers", "TriggerTime",
    "CardiacNumberOfImages", "ImageType", 0x20010010, 0x2001100A,
)
INFO_TAGS = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "StudyID",
    "StudyDescription", "AccessionNumber", "ReferringPhysicianName", "InstitutionName", "StudyInstanceUID",
    "SeriesNumber", "SeriesDescription", "ProtocolName", "SeriesDate", "SeriesTime", "Modality",
    "BodyPartExamined", "Manufacturer", "ManufacturerModelName", "MagneticFieldStrength",
    "SeriesInstanceUID",
)
WIDTH = {"series": 4, "slice": 3, "dynamic": 4, "echo": 2, "phase": 3, "instance": 5}


# -- transforms -------------------------------------------------------------


@dataclass(frozen=True)
class ModalityOptions:
    keep: list[Literal["MR", "CT", "US", "USMF", "CR", "NM", "SC"]] = option(
        help="modalities to keep (MR CT US USMF CR NM SC), by SOP class; others are left in place"
    )


class Modality(Transform):
    """Keep only files of the given modalities; the others stay where they are."""

    id = "modality"
    Options = ModalityOptions
    tags = ("SOPClassUID", "Modality")

    def transform(self, item):
        sop = item.get("SOPClassUID", "")
        for code in self.options.keep:
            if sop in MODALITY_CLASSES[code] or (not sop and item.get("Modality") == MODALITY_TAG[code]):
                return item
        raise Skip(f"modality {item.get('Modality') or '?'} not selected")


class ConfirmStudy(Transform):
    """Ask once per study (patient, study, series count) before moving it."""

    id = "confirm-study"
    group = "study"
    tags = ("PatientName", "PatientID", "StudyID", "StudyDate", "StudyDescription", "SeriesInstanceUID")

    def __init__(self, options, context):
        super().__init__(options, context)
        self.no_more_answers = False

    def transform_group(self, items):
        first = items[0]
        series = len({i.get("SeriesInstanceUID") for i in items})
        question = (
            f"Study {first.get('StudyID') or '?'} of {first.get('StudyDate') or '?'}"
            f" '{first.get('StudyDescription') or ''}': patient {first.get('PatientName') or '?'}"
            f" (ID {first.get('PatientID') or '?'}), {series} series, {len(items)} files. Process? [y/n] "
        )
        if self.context.dry_run:
            return items
        if self.no_more_answers:
            answer = ""
        else:
            sys.stderr.write(question)
            sys.stderr.flush()
            answer = sys.stdin.readline() if sys.stdin else ""
            if not answer:
                self.no_more_answers = True
                sys.stderr.write("\n")
                self.context.log.warning("no answer (end of input): studies left in place; use -a to process all")
        if answer.strip().lower() in ("y", "yes"):
            return items
        for item in items:
            item.reason = "study not confirmed"
        return []


# -- routers ----------------------------------------------------------------


@dataclass(frozen=True)
class PatientHistoryOptions:
    marker: str = option("#-#", help="text before the folder name in Additional Patient History (0010,21B0)")


class PatientHistory(Router):
    """'#-#<folder>' in Additional Patient History sends the files there."""

    id = "patient-history"
    Options = PatientHistoryOptions
    tags = ("AdditionalPatientHistory",)

    def __init__(self, options, context):
        super().__init__(options, context)
        self.checked: dict[str, Path | None] = {}

    def route(self, item):
        text = item.get("AdditionalPatientHistory")
        marker = self.options.marker
        if not text or marker not in str(text):
            return None
        after = str(text).split(marker, 1)[1].split()
        wanted = after[0] if after else ""  # the folder runs to the first white space
        if wanted not in self.checked:
            folder = Path(wanted).expanduser()
            if wanted and folder.is_dir() and os.access(folder, os.W_OK | os.X_OK):
                self.checked[wanted] = folder
            else:
                why = "is not a folder" if not folder.is_dir() else "is not writable"
                self.context.log.warning(
                    "%s: location %r from Additional Patient History %s; using the normal destination",
                    item, wanted, why)
                self.checked[wanted] = None
        return self.checked[wanted]


@dataclass(frozen=True)
class FixedOptions:
    dest: Path = option(help="destination folder")


class Fixed(Router):
    """Every item goes to one destination folder."""

    id = "fixed"
    Options = FixedOptions

    def route(self, item):
        return self.options.dest


class InPlace(Router):
    """Every file stays in its own folder (for renaming in place)."""

    id = "in-place"

    def route(self, item):
        return item.source.parent if item.source is not None else None


# -- namers -----------------------------------------------------------------


@dataclass(frozen=True)
class NameOptions:
    series_description: bool = option(False, help="add _SeriesDescription to the series part (-S)")
    extension: str = option("", help="file name extension, for example '.dcm' (-d)")
    breakdown: bool = option(True, help="number files by slice plus dynamic/echo/phase; false: by Instance Number (-n)")


def _float_tuple(value):
    if value is None:
        return None
    try:
        values = tuple(float(v) for v in (value if isinstance(value, (list, tuple)) else [value]))
    except (TypeError, ValueError):
        return None
    return values


def _int(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _first(value):
    return value[0] if isinstance(value, (list, tuple)) and value else value


@dataclass
class _Record:
    """What naming needs of one file: from a source item or a file already at the destination."""

    get: object


def _study_part(get) -> str:
    return component(get("StudyID"), fallback="") or component(get("StudyInstanceUID"), fallback="unknown")


def _series_part(get, with_description: bool) -> str:
    series = number(get("SeriesNumber"), WIDTH["series"]) if get("SeriesNumber") is not None else "unknown"
    if with_description and get("SeriesDescription"):
        series += "_" + component(get("SeriesDescription"))
    return series


def plan_series(records: list[_Record], breakdown: bool) -> list[str]:
    """File name stems (without extension) for the files of one series.

    ``records`` holds every file of the series that is known: the ones to name
    and the ones already at the destination, so that a re-run after a crash
    numbers the rest exactly as the first run would have.
    """
    if not breakdown:
        stems = [number(r.get("InstanceNumber"), WIDTH["instance"]) if r.get("InstanceNumber") is not None
                 else component(r.get("SOPInstanceUID")) for r in records]
        return _disambiguate(records, stems)
    # slice number: Philips private slice number, else rank along the slice normal
    slices: list = [None] * len(records)
    positions = {}
    for n, r in enumerate(records):
        if str(r.get(0x20010010) or "").strip() == PHILIPS_CREATOR and _int(r.get(0x2001100A)) is not None:
            slices[n] = _int(r.get(0x2001100A))
            continue
        ipp, iop = _float_tuple(r.get("ImagePositionPatient")), _float_tuple(r.get("ImageOrientationPatient"))
        if ipp and iop and len(ipp) == 3 and len(iop) == 6:
            normal = (iop[1] * iop[5] - iop[2] * iop[4], iop[2] * iop[3] - iop[0] * iop[5], iop[0] * iop[4] - iop[1] * iop[3])
            positions[n] = round(sum(p * q for p, q in zip(ipp, normal)), 2)
    ranks = {d: k for k, d in enumerate(sorted(set(positions.values())), start=1)}
    for n, distance in positions.items():
        slices[n] = ranks[distance]
    for n, r in enumerate(records):
        if slices[n] is None:
            slices[n] = _int(r.get("InstanceNumber"))
    dynamics = [_int(_first(r.get("TemporalPositionIdentifier"))) for r in records]
    echoes = [_int(_first(r.get("EchoNumbers"))) for r in records]
    several_dynamics = len(set(dynamics) - {None}) > 1 or any(
        (_int(r.get("NumberOfTemporalPositions")) or 0) > 1 for r in records)
    several_echoes = len(set(echoes) - {None}) > 1
    cardiac = any((_int(r.get("CardiacNumberOfImages")) or 0) > 1 for r in records)
    phases: list = [None] * len(records)
    if cardiac:
        by_place = defaultdict(set)
        for n, r in enumerate(records):
            t = _float_tuple(r.get("TriggerTime"))
            if t is not None:
                by_place[slices[n], dynamics[n], echoes[n]].add(round(t[0], 2))
        order = {place: {t: k for k, t in enumerate(sorted(ts), start=1)} for place, ts in by_place.items()}
        for n, r in enumerate(records):
            t = _float_tuple(r.get("TriggerTime"))
            if t is not None:
                phases[n] = order[slices[n], dynamics[n], echoes[n]][round(t[0], 2)]
    stems = []
    for n, r in enumerate(records):
        if slices[n] is None:
            stems.append(component(r.get("SOPInstanceUID")))
            continue
        stem = number(slices[n], WIDTH["slice"])
        if several_dynamics and dynamics[n] is not None:
            stem += "_d" + number(dynamics[n], WIDTH["dynamic"])
        if several_echoes and echoes[n] is not None:
            stem += "_e" + number(echoes[n], WIDTH["echo"])
        if cardiac and phases[n] is not None:
            stem += "_p" + number(phases[n], WIDTH["phase"])
        stems.append(stem)
    return _disambiguate(records, stems)


def _image_type(record) -> str:
    value = record.get("ImageType")
    return component(value[2], fallback="") if isinstance(value, (list, tuple)) and len(value) > 2 else ""


def _instance(record) -> str:
    value = record.get("InstanceNumber")
    return "i" + number(value, WIDTH["instance"]) if value is not None else ""


def _uid(record) -> str:
    return component(record.get("SOPInstanceUID"))


def _disambiguate(records, stems):
    """Files that would share a name get the image type, then the instance number, then the UID.

    A suffix is added to a clashing group only when it tells its files apart
    (or every file has one), so the result does not depend on the order of files.
    """
    for suffix_of in (_image_type, _instance, _uid):
        by_stem = defaultdict(list)
        for n, stem in enumerate(stems):
            by_stem[stem].append(n)
        clashes = [ns for ns in by_stem.values() if len(ns) > 1]
        if not clashes:
            break
        for ns in clashes:
            suffixes = {n: suffix_of(records[n]) for n in ns}
            if len(set(suffixes.values())) > 1 or all(suffixes.values()):
                for n in ns:
                    if suffixes[n]:
                        stems[n] = f"{stems[n]}_{suffixes[n]}"
    return stems


class Hierarchical(Namer):
    """STUDY/SERIES[_Description]/SLICE[_dDYN][_eECHO][_pPHASE][.ext]."""

    id = "hierarchical"
    Options = NameOptions
    group = "series"
    tags = NAME_TAGS
    flat = False

    def folder_and_prefix(self, get) -> tuple[str, str]:
        study, series = _study_part(get), _series_part(get, self.options.series_description)
        if self.flat:
            return "", f"{study}_{series}_"
        return f"{study}/{series}/", ""

    def name_group(self, items):
        out = [None] * len(items)
        live = []
        for n, item in enumerate(items):
            if item.get("SOPClassUID") == DICOMDIR_SOP_CLASS:
                out[n] = Skip("DICOMDIR, left in place")
            else:
                live.append(n)
        if not live:
            return out
        held = [n for n in live if items[n].extra.get("hold")]
        if held:
            reason = Skip(f"series still arriving ({len(held)} of its files modified in the last seconds);"
                          " left for the next run")
            return [reason if n in live else o for n, o in enumerate(out)]
        first = items[live[0]]
        folder, prefix = self.folder_and_prefix(first.get)
        records = [_Record(items[n].get) for n in live]
        known = {items[n].get("SOPInstanceUID") for n in live}
        records += self._existing(first, folder, prefix, {items[n].source for n in live}, known)
        stems = plan_series(records, self.options.breakdown)
        for k, n in enumerate(live):
            out[n] = f"{folder}{prefix}{stems[k]}{self.options.extension}"
            # where the series' info file goes: next to its files, named by the series in flat mode
            items[n].extra["series_info"] = f"{prefix.rstrip('_')}.info" if prefix else "info"
        return out

    def _existing(self, first, folder: str, prefix: str, sources: set, known: set) -> list[_Record]:
        """Files of this series already at the destination (from an earlier, interrupted run)."""
        if first.destination is None:
            return []
        where = Path(first.destination, folder)
        try:
            names = [n for n in os.listdir(where) if n.startswith(prefix) and not n.startswith(".")]
        except OSError:
            return []
        from dcmpipe.errors import NotDicomError
        from dcmpipe.header import read_header
        from dcmpipe.steps import tag_of

        tags = frozenset(tag_of(t) for t in NAME_TAGS)
        series_uid = first.get("SeriesInstanceUID")
        found = []
        for name in names:
            path = where / name
            if path in sources or not path.is_file():
                continue
            try:
                header = read_header(path, tags)
            except NotDicomError:
                continue
            if header.get(tag_of("SeriesInstanceUID")) == series_uid and \
                    header.get(tag_of("SOPInstanceUID")) not in known:  # a copy of a source file
                found.append(_Record(lambda key, default=None, h=header: h.get(tag_of(key), default)))
        return found


class Flat(Hierarchical):
    """STUDY_SERIES[_Description]_SLICE[_dDYN][_eECHO][_pPHASE][.ext], all in one folder."""

    id = "flat"
    flat = True


@dataclass(frozen=True)
class UnmoveOptions:
    extension: str = option("", help="file name extension, for example '.dcm' (-d)")


class Unmove(Namer):
    """SOPInstanceUID[.ext]: undo a sort, all files in one folder."""

    id = "unmove"
    Options = UnmoveOptions
    tags = ("SOPInstanceUID", "SOPClassUID")

    def name(self, item):
        if item.get("SOPClassUID") == DICOMDIR_SOP_CLASS:
            raise Skip("DICOMDIR, left in place")
        return component(item.get("SOPInstanceUID")) + self.options.extension


# -- exporter ---------------------------------------------------------------


@dataclass(frozen=True)
class DicomExportOptions:
    mode: Literal["move", "copy"] = option("move", help="move the files (default) or copy them")
    info: bool = option(True, help="write an 'info' file per series folder, with the hierarchical and flat namers"
                                   " (it holds patient data: PHI)")
    bad_dir: Path | None = option(None, help="folder for files that are not DICOM; left out: they stay in place")


class DicomExport(Exporter):
    """Move or copy each file to DESTINATION/NAME; never overwrite; non-DICOM files to bad_dir."""

    id = "dicom"
    Options = DicomExportOptions
    accepts_bad = True

    def __init__(self, options, context):
        super().__init__(options, context)
        self.infos_done: set = set()
        self.folders_seen: set = set()

    def _target(self, item, destination):
        if item.status == "bad":
            if self.options.bad_dir is None:
                return None  # left in place
            return self.options.bad_dir / item.extra.get("relpath", item.source.name)
        if destination is None:
            raise ValueError("no destination: the recipe needs a route step")
        if item.name is None:
            raise ValueError("no name: the recipe needs a name step")
        return os.path.join(destination, item.name)

    def describe(self, item, destination):
        target = self._target(item, destination)
        if target is None or (item.source is not None and str(item.source) == str(target)):
            return f"keep {item.source}" + (f" (not DICOM: {item.reason})" if item.status == "bad" else "")
        verb = "bad " if item.status == "bad" else ""
        return f"{verb}{self.options.mode} {item.source} -> {target}"

    def export(self, item, destination):
        from dcmpipe.safefile import remove_stale_parts, transfer

        target = self._target(item, destination)
        if target is None:
            item.extra.setdefault("log", []).append(f"{item.source}: not DICOM ({item.reason}), left in place")
            return []
        folder = os.path.dirname(target)
        if folder not in self.folders_seen:
            self.folders_seen.add(folder)
            remove_stale_parts(folder)
        done = transfer(item.source, target, self.options.mode)
        item.extra.setdefault("log", []).append(f"{item.source} -> {target} ({done})")
        if self.options.info and item.status == "ok":
            self._write_info(item, target)
        return [Path(target)]

    def _write_info(self, item, target: Path) -> None:
        from dcmpipe.header import read_header
        from dcmpipe.safefile import TargetExistsError, write_atomic
        from dcmpipe.steps import tag_of

        key = (os.path.dirname(target), item.get("SeriesInstanceUID"))
        info_name = item.extra.get("series_info")  # set by the hierarchical and flat namers
        if info_name is None or key in self.infos_done or str(item.source) == str(target):
            return
        self.infos_done.add(key)
        target = Path(target)
        info_path = target.parent / info_name
        # Read once per series, from the file just written: the header stage need not carry these tags.
        header = read_header(target, frozenset(tag_of(k) for k in INFO_TAGS))
        lines = ["# dcmpipe info file: this file holds patient data (PHI); handle it like the images."]
        for keyword in INFO_TAGS:
            value = header.get(tag_of(keyword))
            if isinstance(value, (list, tuple)):
                value = "\\".join(str(v) for v in value)
            lines.append(f"{keyword}: {'' if value is None else value}")
        try:
            write_atomic(info_path, ("\n".join(lines) + "\n").encode("utf-8"))
        except TargetExistsError:
            self.context.log.warning("%s exists with other content (another series?); left as it is", info_path)


@hookimpl
def dcmpipe_transforms():
    return [Modality, ConfirmStudy]


@hookimpl
def dcmpipe_routers():
    return [PatientHistory, Fixed, InPlace]


@hookimpl
def dcmpipe_namers():
    return [Hierarchical, Flat, Unmove]


@hookimpl
def dcmpipe_exporters():
    return [DicomExport]


# -- the `dcmpipe move` command ----------------------------------------------

MOVE_HELP = """Sort DICOM files into DESTDIR/STUDY/SERIES/SLICE (dcm_move).

\b
Files are moved (or copied with -c) into one folder per study (Study ID) and
series (Series Number); each file is named by its slice number, plus the
dynamic, echo or cardiac phase where a series has several.  Non-DICOM files
go to DESTDIR/bad/.  Nothing is ever overwritten: an identical file already
at the target counts as done, so re-running after a crash finishes the job.

\b
Examples:
  dcmpipe move -a sorted                 sort ./ into sorted/, no questions
  dcmpipe move -s /data/in -R -c -S out  copy recursively, series folders with descriptions
  dcmpipe move -r -d -a                  rename files in place, flat names, .dcm
  dcmpipe move -m MR --dry-run -a out    show what would happen to the MR files
  dcmpipe move --print-recipe -a out     print the recipe this command runs
  dcmpipe move --gui -s /data/in         the same as a web page (dcmpipe movegui)
"""


def move_recipe(destdir, source, recurse, modality, all_studies, copy, rename, flat, unmove, series_desc,
                dcm_ext, no_breakdown, no_info, ignore_location, keep_bad, wait) -> dict:
    """The recipe (as a dict) that the `move` switches stand for."""
    source = Path(source).resolve()
    dest = Path(destdir or ".").resolve()
    flat = flat or rename
    read = {"read": "files", "path": [str(source)], "recursive": recurse, "settle": wait,
            "exclude": ["info", "*.info"]}
    if not rename and not keep_bad:
        read["prune"] = [str(dest / "bad")]
    steps = [read]
    if modality:
        steps.append({"transform": "modality", "keep": [modality]})
    if not all_studies:
        steps.append({"transform": "confirm-study"})
    if rename:
        steps.append({"route": "in-place"})
    else:
        if not ignore_location:
            steps.append({"route": "patient-history"})
        steps.append({"route": "fixed", "dest": str(dest)})
    namer = "unmove" if unmove else ("flat" if flat else "hierarchical")
    name = {"name": namer, "extension": ".dcm" if dcm_ext else ""}
    if not unmove:
        name.update(series_description=series_desc, breakdown=not no_breakdown)
    steps.append(name)
    export = {"export": "dicom", "mode": "copy" if copy else "move", "info": not (no_info or unmove)}
    if not keep_bad and not rename:
        export["bad_dir"] = str(dest / "bad")
    steps.append(export)
    return {"recipe": {"name": "dcm_move"}, "step": steps}


@click.command("move", help=MOVE_HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("destdir", required=False, type=click.Path(file_okay=False))
@click.option("-s", "source", default=".", show_default=True, type=click.Path(exists=True, file_okay=False),
              help="source folder")
@click.option("-R", "recurse", is_flag=True, help="recurse into subfolders of the source")
@click.option("-m", "modality", type=click.Choice(sorted(MODALITY_CLASSES), case_sensitive=False),
              help="only this modality")
@click.option("-a", "all_studies", is_flag=True, help="process all studies; otherwise ask once per study")
@click.option("-c", "copy", is_flag=True, help="copy instead of move")
@click.option("-r", "rename", is_flag=True, help="rename in place (implies -f)")
@click.option("-f", "flat", is_flag=True, help="flat names: STUDY_SERIES_SLICE in one folder")
@click.option("-u", "unmove", is_flag=True, help="unmove: name files by SOP Instance UID")
@click.option("-S", "series_desc", is_flag=True, help="add the SeriesDescription to the series folder name")
@click.option("-d", "dcm_ext", is_flag=True, help="add .dcm to file names")
@click.option("-n", "no_breakdown", is_flag=True, help="no echo/phase/dynamic breakdown: number by Instance Number")
@click.option("-i", "no_info", is_flag=True, help="do not write an info file per series")
@click.option("-l", "ignore_location", is_flag=True, help="ignore the location (#-#folder) in the header")
@click.option("-b", "keep_bad", is_flag=True, help="leave non-DICOM files in place instead of moving them to bad/")
@click.option("-q", "quiet", is_flag=True, help="quiet: only errors and the summary")
@click.option("-v", "verbose", is_flag=True, help="say what happens to every file")
@click.option("--wait", type=float, default=5.0, show_default=True, metavar="SECONDS",
              help="leave files modified less than SECONDS ago (still arriving) for the next run")
@click.option("--jobs", "-j", type=click.IntRange(1), default=None, help="processes sharing the work, this one included (default: cores)")
@click.option("--dry-run", is_flag=True, help="show what would happen; change nothing")
@click.option("--print-recipe", is_flag=True, help="print the equivalent TOML recipe and exit")
@click.option("--debug", is_flag=True, help="show tracebacks")
@click.option("--gui", is_flag=True, help="open this command as a web page (dcmpipe movegui), the switches given filled in")
def move_command(destdir, source, recurse, modality, all_studies, copy, rename, flat, unmove, series_desc,
                 dcm_ext, no_breakdown, no_info, ignore_location, keep_bad, quiet, verbose, wait, jobs, dry_run,
                 print_recipe, debug, gui):
    from dcmpipe.cli import run_tool

    if gui:
        ctx = click.get_current_context()
        given = {k: v for k, v in ctx.params.items() if ctx.get_parameter_source(k).name != "DEFAULT"}
        gui_command = ctx.find_root().command.get_command(ctx, "movegui")
        if gui_command is None:
            raise click.UsageError("--gui needs the movegui plugin")
        return ctx.invoke(gui_command, values=given)
    if rename and destdir:
        raise click.UsageError("-r renames in place: give no DESTDIR")
    if rename and unmove:
        raise click.UsageError("-r and -u exclude each other")
    data = move_recipe(destdir, source, recurse, modality and modality.upper(), all_studies, copy, rename, flat,
                       unmove, series_desc, dcm_ext, no_breakdown, no_info, ignore_location, keep_bad, wait)
    run_tool(data, print_recipe=print_recipe, dry_run=dry_run, jobs=jobs, quiet=quiet, verbose=verbose,
             debug=debug)


@hookimpl
def dcmpipe_register_commands(cli):
    cli.add_command(move_command)
