"""The plan of dcmcleanup: what happens to each file of a folder filled from a scanner.

Pure planning, nothing is changed here: :func:`plan_folder` lists the files,
reads DICOM headers (the host's fast reader) and PAR headers, finds empty files
and exact duplicates (same size, same hash, compared byte for byte again just
before a deletion), and gives every file one :class:`Action`.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from dcmpipe.naming import component, number

RAW_DATA_STORAGE = "1.2.840.10008.5.1.4.1.1.66"
MEDIA_DIRECTORY = "1.2.840.10008.1.3.10"
PRESENTATION_STATE = "1.2.840.10008.5.1.4.1.1.11."
PHILIPS_PRIVATE_SOP = "1.3.46.670589.11.0.0.12."
PHILIPS_CREATOR = "Philips Imaging DD 001"
PAIRED = {".par": ".rec", ".rec": ".par"}
HEADER_AND_DATA = {".par", ".rec", ".xml", ".v41", ".sin", ".lab", ".raw", ".data", ".list", ".spar", ".sdat"}
DEFAULT_LEFTOVERS = ["Thumbs.db", "desktop.ini", "*.tmp", "~$*", "LOCKFILE", "*.lck"]

TAGS = {
    "SOPClassUID": 0x00080016, "SeriesInstanceUID": 0x0020000E, "SeriesNumber": 0x00200011,
    "SeriesDescription": 0x0008103E, "ProtocolName": 0x00181030, "InstanceNumber": 0x00200013,
    "PhilipsCreator": 0x20010010, "PhilipsAcquisition": 0x2001107B,
    "SOPInstanceUID": 0x00080018,
}


@dataclass
class Action:
    """What happens to one file: ``rename``, ``extras`` (move to the sub-folder), ``delete``, ``keep``."""

    path: Path
    kind: str = "keep"
    target: Path | None = None
    reason: str = ""
    examcard: bool = False  # a Raw Data Storage object: extract its ExamCard, if it holds one, first
    keeper: Path | None = None  # for a duplicate: the file it duplicates
    keeper_target: Path | None = None  # where that file will be after the run
    header: dict | None = None
    dicom: bool = False
    extra: dict = field(default_factory=dict)

    def line(self, root: Path | None = None) -> str:
        def show(p):
            if p is None:
                return ""
            try:
                return str(Path(p).relative_to(root)) if root else str(p)
            except ValueError:
                return str(p)

        src = show(self.path)
        if self.kind == "rename":
            text = f"rename  {src} -> {show(self.target)}"
        elif self.kind == "extras":
            text = f"move    {src} -> {show(self.target)}"
        elif self.kind == "delete":
            text = f"delete  {src}"
        else:
            text = f"keep    {src}"
        return text + (f"  ({self.reason})" if self.reason else "")


@dataclass
class PlanOptions:
    recursive: bool = False
    extras: str = "extras"
    leftovers: tuple = tuple(DEFAULT_LEFTOVERS)
    rename: bool = True
    examcards: bool = True
    delete_empty: bool = True
    delete_duplicates: bool = True
    settle: float = 5.0


def list_files(root: Path, recursive: bool, extras: str) -> list[Path]:
    """Regular, non-hidden files under ``root`` (not in its extras folder), sorted by folder then name."""
    found, stack = [], [root]
    while stack:
        folder = stack.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            continue
        subfolders = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    if recursive and not (folder == root and entry.name == extras):
                        subfolders.append(Path(entry.path))
                elif entry.is_file(follow_symlinks=False):
                    found.append(Path(entry.path))
            except OSError:
                continue
        stack.extend(reversed(subfolders))
    return found


def file_hash(path: Path) -> str:
    digest = hashlib.blake2b(digest_size=32)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def duplicates(paths: list[Path], sizes: dict) -> dict[Path, Path]:
    """{duplicate: the file it duplicates}: same folder, same size, same hash (the first of a set is kept).

    Only files of one folder count: a copy a user put in another folder on purpose is left alone.
    """
    by_size = defaultdict(list)
    for p in paths:
        if sizes[p] > 0:
            by_size[p.parent, sizes[p]].append(p)
    found = {}
    for same_size in by_size.values():
        if len(same_size) < 2:
            continue
        by_hash = defaultdict(list)
        for p in same_size:
            try:
                by_hash[file_hash(p)].append(p)
            except OSError:
                continue
        for group in by_hash.values():
            for p in group[1:]:
                found[p] = group[0]
    return found


_PAR_FIELD = re.compile(r"^\.\s+(Acquisition nr|Protocol name|Reconstruction nr)\s*:\s*(.*?)\s*$", re.M)


def par_fields(path: Path) -> dict | None:
    """Acquisition number and protocol name of a PAR file; None if it is not a console PAR."""
    try:
        with open(path, "rb") as f:
            head = f.read(64 * 1024).decode("latin-1")
    except OSError:
        return None
    if "DATA DESCRIPTION FILE" not in head:
        return None
    fields = {k: v for k, v in _PAR_FIELD.findall(head)}
    if "Acquisition nr" not in fields:
        return None
    return fields


def _int(value):
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


def acquisition(header: dict):
    if header.get(TAGS["PhilipsCreator"]) == PHILIPS_CREATOR:
        acq = _int(header.get(TAGS["PhilipsAcquisition"]))
        if acq is not None:
            return acq
    # Other makers: (0020,0012) is often 1 for every series; the Series Number tells series apart.
    return _int(header.get(TAGS["SeriesNumber"]))


def series_stem(header: dict) -> str:
    acq = acquisition(header)
    desc = header.get(TAGS["SeriesDescription"]) or header.get(TAGS["ProtocolName"]) or "series"
    return f"{number(acq, 2) if acq is not None else 'na'}_{component(desc, fallback='series')}"


def plan_folder(root: Path, options: PlanOptions, now: float | None = None) -> list[Action]:
    from dcmpipe.errors import NotDicomError
    from dcmpipe.header import read_header

    root = Path(root)
    extras_root = root / options.extras
    now = time.time() if now is None else now
    paths = list_files(root, options.recursive, options.extras)
    actions: dict[Path, Action] = {p: Action(p) for p in paths}
    sizes, fresh = {}, set()
    for p in paths:
        try:
            st = p.stat()
        except OSError as exc:
            actions[p].reason = f"cannot be read: {exc.strerror}"
            sizes[p] = -1
            continue
        sizes[p] = st.st_size
        if now - st.st_mtime < options.settle:
            fresh.add(p)
            actions[p].reason = "modified in the last seconds (still arriving?); left for the next run"
    live = [p for p in paths if p not in fresh and sizes[p] >= 0]

    # Empty files and exact duplicates first: they are neither renamed nor moved.
    if options.delete_empty:
        for p in live:
            if sizes[p] == 0:
                actions[p].kind, actions[p].reason = "delete", "empty file"
    dups = duplicates(live, sizes) if options.delete_duplicates else {}

    # Read headers: DICOM objects and PAR files.
    tags = frozenset(TAGS.values())
    series = defaultdict(list)
    pars = {}
    for p in live:
        a = actions[p]
        if a.kind == "delete":
            continue
        try:
            header = read_header(p, tags)
        except NotDicomError:
            if p.suffix.lower() == ".par":
                fields = par_fields(p)
                if fields is not None:
                    pars[p] = fields
            continue
        a.header, a.dicom = header, True
        a.extra["sop"] = str(header.sop_class_uid or header.get(TAGS["SOPClassUID"]) or "")  # file meta first

    # A file is deleted as a duplicate only if the files that share its stem (PAR/REC, XML/REC ...)
    # are duplicates of the files that share its copy's stem: a header is never orphaned.
    stems = defaultdict(list)
    for p in paths:
        if p.suffix.lower() in HEADER_AND_DATA:
            stems[p.parent, p.stem.lower()].append(p)

    def whole_set(p: Path, keeper: Path) -> bool:
        if p.suffix.lower() not in HEADER_AND_DATA:
            return True
        for q in stems[p.parent, p.stem.lower()]:
            if q == p:
                continue
            k = dups.get(q)
            if k is None or k.parent != keeper.parent or k.stem.lower() != keeper.stem.lower():
                return False
        return True

    def partner(p: Path) -> Path | None:
        other = PAIRED.get(p.suffix.lower())
        if other is None:
            return None
        for ext in (other.upper(), other):
            q = p.with_suffix(ext)
            if q in actions:
                return q
        return None

    for p, keeper in dups.items():
        if not whole_set(p, keeper):
            continue
        a = actions[p]
        a.kind, a.keeper, a.reason = "delete", keeper, f"exact duplicate of {keeper.relative_to(root)}"

    # What goes to the extras folder; what is renamed.
    occupied = {str(p) for p in paths}
    for p in live:
        a = actions[p]
        if a.kind != "keep":
            continue
        sop = a.extra.get("sop", "")
        extra_reason = None
        if a.dicom:
            if sop == RAW_DATA_STORAGE:
                a.examcard = options.examcards
                extra_reason = "Raw Data Storage object" + ("; its ExamCard, if any, extracted first" if a.examcard else "")
            elif sop.startswith(PHILIPS_PRIVATE_SOP):
                extra_reason = "Philips private object"
            elif sop == MEDIA_DIRECTORY:
                extra_reason = "DICOMDIR (it lists the old file names)"
            elif sop.startswith(PRESENTATION_STATE):
                extra_reason = "presentation state"
            elif not sop:
                a.reason = "DICOM without SOP Class UID"
            else:
                series[(str(a.header.get(TAGS["SeriesInstanceUID"], "")), p.parent)].append(p)
        elif any(fnmatch.fnmatch(p.name, pattern) for pattern in options.leftovers):
            extra_reason = "console or system leftover"
        elif p in pars or partner(p) in pars:
            pass
        else:
            a.reason = "not DICOM"
        if extra_reason:
            a.kind, a.reason = "extras", extra_reason
            a.target = _extras_target(extras_root / p.relative_to(root), p, occupied)
            occupied.add(str(a.target))

    if options.rename:
        _plan_dicom_names(series, actions, occupied)
        _plan_par_names(pars, actions, occupied, partner)
    for p, keeper in dups.items():  # where the kept copy will be when the duplicate is deleted
        a = actions[p]
        if a.kind == "delete" and a.keeper is not None:
            a.keeper_target = actions[keeper].target or keeper
    return [actions[p] for p in paths]


def _extras_target(target: Path, source: Path, occupied: set) -> Path:
    """``target``, or ``NAME_2`` ... when a different file (from an earlier clean-up) holds that name."""
    from dcmpipe.safefile import same_content

    n, candidate = 1, target
    while str(candidate) in occupied or (os.path.lexists(candidate) and not (
            candidate.is_file() and same_content(source, candidate))):
        n += 1
        candidate = target.with_name(f"{target.stem}_{n}{target.suffix}")
    return candidate


def _free(folder: Path, stem: str, ext: str, occupied: set, own: Path) -> Path:
    n = 1
    while True:
        candidate = folder / (f"{stem}{ext}" if n == 1 else f"{stem}_{n}{ext}")
        if candidate == own or str(candidate) not in occupied:
            return candidate
        n += 1


def _assign(a: Action, target: Path, occupied: set) -> None:
    occupied.add(str(target))
    if target == a.path:
        a.reason = "already named"
    else:
        a.kind, a.target = "rename", target


def _plan_dicom_names(series: dict, actions: dict, occupied: set) -> None:
    stems = {}
    by_stem = defaultdict(list)
    for key, files in series.items():
        stem = series_stem(actions[files[0]].header)
        stems[key] = stem
        by_stem[(stem, key[1])].append(key)
    for (stem, _folder), keys in by_stem.items():
        if len(keys) > 1:  # different series, same acquisition and description: add the series number
            for key in keys:
                number_ = _int(actions[series[key][0]].header.get(TAGS["SeriesNumber"]))
                stems[key] = f"{stem}_s{number_ if number_ is not None else 'na'}"
    # Files that already have their name keep it: claim those names first.
    planned = []
    for key in sorted(series, key=lambda k: (str(k[1]), stems[k])):
        files = series[key]
        several = len(files) > 1
        for n, p in enumerate(sorted(files, key=lambda f: (_int(actions[f].header.get(TAGS["InstanceNumber"])) or 0,
                                                       f.name)), start=1):
            stem = stems[key]
            if several:
                inst = _int(actions[p].header.get(TAGS["InstanceNumber"]))
                stem += "_" + number(inst if inst is not None else n, 4)
            planned.append((p, stem))
    wanted = {p: p.parent / f"{stem}.dcm" for p, stem in planned}
    for p, target in wanted.items():
        if p == target:
            _assign(actions[p], target, occupied)
    for p, stem in planned:
        if p == wanted[p]:
            continue
        occupied.discard(str(p))  # its own current name is free for it
        target = _free(p.parent, stem, ".dcm", occupied, p)
        occupied.add(str(p))
        _assign(actions[p], target, occupied)


def _plan_par_names(pars: dict, actions: dict, occupied: set, partner) -> None:
    for par, fields in sorted(pars.items()):
        rec = partner(par)
        a_par = actions[par]
        if a_par.kind != "keep":
            continue
        if rec is None or actions[rec].kind != "keep":
            a_par.reason = "PAR without its REC file: left as it is"
            continue
        acq = _int(fields.get("Acquisition nr"))
        stem = f"{number(acq, 2) if acq is not None else 'na'}_{component(fields.get('Protocol name'), fallback='series')}"
        n = 1
        while True:  # one free stem for both files
            s = stem if n == 1 else f"{stem}_{n}"
            t_par, t_rec = par.parent / f"{s}{par.suffix}", rec.parent / f"{s}{rec.suffix}"
            ok = all(t == own or str(t) not in occupied for t, own in ((t_par, par), (t_rec, rec)))
            if ok:
                break
            n += 1
        _assign(a_par, t_par, occupied)
        _assign(actions[rec], t_rec, occupied)
