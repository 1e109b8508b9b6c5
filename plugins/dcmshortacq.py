"""dcmshortacq: drop the partial last dynamic of an Enhanced MR fMRI file (a run stopped early).

The frames of the last temporal position, their per-frame functional groups
and pixel data are removed; Number of Frames, Philips' Number of Dynamic Scans
(2001,1081) and Number of Temporal Positions (0020,0105) are updated; all UIDs
are kept.  The original is kept as ``<file>.orig`` (an existing backup is never
overwritten: the file is then left alone), and the new file is written to a
temporary name in the same folder, synced and renamed over the original.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import click

from dcmpipe import DcmpipeError, Exporter, Skip, hookimpl, option

from ._enhanced_common import files_recipe, require_enhanced, without_path

log = logging.getLogger("dcmpipe")

TEMPORAL_INDEX = 0x00209128
TEMPORAL_ID = 0x00200100
NUMBER_OF_TEMPORAL_POSITIONS = 0x00200105
DYNAMIC_SCANS = 0x20011081


@dataclass
class Plan:
    """What shortening a file means: ``dynamic`` (the partial one) has ``have`` of ``expected`` frames."""

    path: Path
    dynamics: int
    expected: int
    dynamic: int | None = None
    have: int = 0
    keep: list | None = None

    @property
    def partial(self) -> bool:
        return self.dynamic is not None

    def line(self) -> str:
        if not self.partial:
            return (f"{self.path}: no partial dynamic ({self.dynamics} dynamics of {self.expected} frames); "
                    f"left untouched")
        return (f"{self.path}: last dynamic (temporal position {self.dynamic}) has {self.have} of {self.expected} "
                f"frames: dropped; {len(self.keep)} frames, {self.dynamics - 1} dynamics left")


def temporal_positions(ds, path) -> list:
    """Temporal position of every frame: Temporal Position Index, else Philips' private dynamic (0020,0100)."""
    from dcmpipe import enhanced as E

    out = []
    for f in range(len(ds.PerFrameFunctionalGroupsSequence)):
        content = E.frame_item(ds, f, 0x00209111)  # Frame Content Sequence
        value = E.element_value(content.get(TEMPORAL_INDEX)) if content is not None else None
        if value is None:
            private = E.frame_item(ds, f, E.PRIVATE_FG, E.PHILIPS_MR_DD005)
            value = E.element_value(private.get(TEMPORAL_ID)) if private is not None else None
        if value is None:
            raise E.EnhancedError(f"{path}: frame {f + 1} has no temporal position: lacks Temporal Position Index "
                                  f"(0020,9128) and Philips' dynamic (0020,0100)")
        out.append(int(value))
    return out


def plan(ds, path) -> Plan:
    """Find the partial last dynamic of an Enhanced MR data set (read with pixels or not)."""
    from collections import Counter

    from dcmpipe import enhanced as E

    if "PerFrameFunctionalGroupsSequence" not in ds:
        raise E.EnhancedError(f"{path}: lacks the Per-frame Functional Groups Sequence (5200,9230)")
    times = temporal_positions(ds, path)
    counts = Counter(times)
    order = sorted(counts)
    expected = counts[order[0]]
    result = Plan(path=Path(path), dynamics=len(order), expected=expected)
    if len(order) < 2:
        return result
    early = {t: counts[t] for t in order[:-1]}
    if len(set(early.values())) > 1:
        counts_text = ", ".join(f"{t}: {n}" for t, n in early.items())
        raise E.EnhancedError(f"{path}: dynamics have different frame counts ({counts_text}): not a run stopped early")
    last = order[-1]
    if counts[last] > expected:
        raise E.EnhancedError(f"{path}: the last dynamic has {counts[last]} frames, the others {expected}")
    if counts[last] < expected:
        result.dynamic, result.have = last, counts[last]
        result.keep = [f for f, t in enumerate(times) if t != last]
    return result


def _set_count(item, tag: int, creator: str | None, value: int) -> None:
    from dcmpipe import enhanced as E

    element = E.find_private(item, tag, creator)
    if element is not None and element.value not in (None, ""):
        element.value = str(value) if element.VR in ("IS", "DS") else value


def frame_bytes(ds, path) -> int:
    """Bytes per frame; EnhancedError when the Pixel Data is missing or shorter than the frames need."""
    from dcmpipe import enhanced as E

    bits = int(ds.get("BitsAllocated", 0) or 0)
    if bits % 8 or not bits or "PixelData" not in ds:
        raise E.EnhancedError(f"{path}: lacks byte-aligned Pixel Data (Bits Allocated {bits or 'missing'})")
    size = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1) or 1) * bits // 8
    nframes = len(ds.PerFrameFunctionalGroupsSequence)
    have = len(ds.PixelData)
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if (syntax is None or not syntax.is_compressed) and have < nframes * size:
        raise E.EnhancedError(f"{path}: Pixel Data has {have} bytes, {nframes} frames need {nframes * size} "
                              f"(truncated?)")
    return size


def shortened(ds, path, p: Plan):
    """The data set without the partial dynamic (modified in place)."""
    from pydicom.sequence import Sequence

    from dcmpipe import enhanced as E

    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if syntax is not None and syntax.is_compressed:
        raise E.EnhancedError(f"{path}: compressed pixel data ({syntax.name}): decompress it first (dcmdjpeg, "
                              f"gdcmconv --raw)")
    size = frame_bytes(ds, path)
    pixels = memoryview(ds.PixelData)
    data = b"".join(pixels[k * size:(k + 1) * size] for k in p.keep)
    if len(data) % 2:
        data += b"\0"
    items = ds.PerFrameFunctionalGroupsSequence
    ds.PerFrameFunctionalGroupsSequence = Sequence([items[k] for k in p.keep])
    ds.PixelData = data
    ds.NumberOfFrames = len(p.keep)
    left = p.dynamics - 1
    places = [ds]
    shared = ds.get(0x52009229)  # Shared Functional Groups Sequence
    groups = [shared.value[0]] if shared is not None and shared.value else []
    for group in groups + list(ds.PerFrameFunctionalGroupsSequence):
        places.append(group)
        for tag in (0x2005140E, E.PRIVATE_FG):
            seq = E.find_private(group, tag, E.PHILIPS_MR_DD005)
            if seq is not None and seq.VR == "SQ":
                places.extend(seq.value)
    for place in places:
        _set_count(place, NUMBER_OF_TEMPORAL_POSITIONS, None, left)
        _set_count(place, DYNAMIC_SCANS, E.PHILIPS_DD001, left)
    return ds


def _encode(ds) -> bytes:
    import io

    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=False)
    return buf.getvalue()


def replace_keeping_backup(path: Path, data: bytes, suffix: str = ".orig") -> Path:
    """Keep ``path`` as ``path + suffix`` (never over an existing file), then put ``data`` at ``path`` atomically."""
    from dcmpipe.safefile import PART_SUFFIX, transfer

    path = Path(path)
    backup = path.with_name(path.name + suffix)
    if os.path.lexists(backup):
        raise DcmpipeError(f"a backup {backup.name} already exists; file left untouched (move the backup away first)")
    tmp = path.with_name(f".{path.name}.{os.getpid()}{PART_SUFFIX}")
    try:
        with open(tmp, "xb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(path, backup)  # fails if the name is taken: never overwrites
        except FileExistsError:
            raise DcmpipeError(f"a backup {backup.name} already exists; file left untouched") from None
        except OSError:  # no hard links here: a verified copy
            transfer(path, backup, "copy")
        os.replace(tmp, path)
        try:
            fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:
            pass
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)
    return backup


def shorten_file(path, suffix: str = ".orig", dry_run: bool = False) -> Plan:
    """Drop the partial last dynamic of ``path``; return the plan (``partial`` False: nothing was done)."""
    from dcmpipe import enhanced as E

    path = Path(path)
    if path.suffix == ".gz":
        raise E.EnhancedError(f"{path}: a gzipped file: gunzip it first")
    ds = E.read_dataset(path, pixels=True)
    if str(ds.get("SOPClassUID", "")) != E.ENHANCED_MR:
        raise E.EnhancedError(f"{path}: not an Enhanced MR image")
    p = plan(ds, path)
    frame_bytes(ds, path)  # a truncated file is reported even when it has no partial dynamic
    if not p.partial or dry_run:
        return p
    data = _encode(shortened(ds, path, p))
    # Read the result back before replacing anything.
    check = E.read_dataset(data, pixels=True)
    if int(check.NumberOfFrames) != len(p.keep) or len(check.PerFrameFunctionalGroupsSequence) != len(p.keep):
        raise E.EnhancedError(f"{path}: the shortened file did not read back; nothing changed")
    replace_keeping_backup(path, data, suffix)
    return p


@dataclass(frozen=True)
class ShortacqOptions:
    backup_suffix: str = option(".orig", help="the original is kept as <file><suffix>; never overwritten")


class Shortacq(Exporter):
    """Drop the partial last dynamic of an Enhanced MR file in place, keeping a backup."""

    id = "shortacq"
    Options = ShortacqOptions
    tags = ("SOPClassUID",)
    main_process = True

    def describe(self, item, destination):
        from dcmpipe.enhanced import EnhancedError

        try:
            require_enhanced(item)
            p = shorten_file(item.source, self.options.backup_suffix, dry_run=True)
        except (EnhancedError, DcmpipeError) as exc:
            return f"shortacq: {item}: cannot: {without_path(exc, item.source)}"
        if not p.partial:
            return f"shortacq: {p.line()}"
        return (f"shortacq: {item}: would drop temporal position {p.dynamic} ({p.have} of {p.expected} frames), "
                f"keeping the original as {item.source.name}{self.options.backup_suffix}")

    def export(self, item, destination):
        from dcmpipe.enhanced import EnhancedError

        require_enhanced(item)
        try:
            p = shorten_file(item.source, self.options.backup_suffix)
        except EnhancedError as exc:
            raise without_path(exc, item.source) from None
        click.echo(p.line())
        if not p.partial:
            raise Skip("no partial dynamic")
        return [item.source]


@hookimpl
def dcmpipe_exporters():
    return [Shortacq]


HELP = """Drop the partial last dynamic of Enhanced MR fMRI FILES (a run stopped early).

\b
When the last temporal position of a file has fewer frames than the others,
the file is rewritten without it: frames, functional groups, Number of
Frames, Number of Temporal Positions and Philips' Number of Dynamic Scans.
The original is kept as FILE.orig (never overwritten: with an existing backup
the file is left alone); the new file is written under a temporary name and
renamed.  A file without a partial dynamic is left untouched (exit 0).

\b
Examples:
  dcmpipe dcmshortacq bold.dcm
  dcmpipe dcmshortacq --dry-run run1.dcm run2.dcm   say what would be done
  dcmpipe dcmshortacq --backup-suffix .full bold.dcm
"""


@click.command("dcmshortacq", help=HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("files", nargs=-1, required=True, type=click.Path())
@click.option("--backup-suffix", default=".orig", show_default=True, help="backup name: FILE + this suffix")
@click.option("-q", "--quiet", is_flag=True, help="only errors")
@click.option("-v", "--verbose", is_flag=True, help="say what happens to every file")
@click.option("--dry-run", is_flag=True, help="say what would be done; change nothing")
@click.option("--print-recipe", is_flag=True, help="print the equivalent TOML recipe and exit")
@click.option("--debug", is_flag=True, help="show tracebacks")
def dcmshortacq_command(files, backup_suffix, quiet, verbose, dry_run, print_recipe, debug):
    from dcmpipe.cli import run_tool

    step = {"export": "shortacq"}
    if backup_suffix != ".orig":
        step["backup_suffix"] = backup_suffix
    data = files_recipe("dcmshortacq", files, step, exclude=[f"*{backup_suffix}"])
    run_tool(data, print_recipe=print_recipe, dry_run=dry_run, jobs=1, quiet=quiet, verbose=verbose, debug=debug)


@hookimpl
def dcmpipe_register_commands(cli):
    cli.add_command(dcmshortacq_command)
