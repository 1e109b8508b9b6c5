"""Philips Enhanced MR as PAR/REC material: general information, one record per frame, pixel access.

Shared by the dcm2par and dcms2e plugins (not a plugin itself).  Sources of
every value: ../shared/philips/SPEC.md sections 1.2, 1.3 and 1.5.
"""

from __future__ import annotations

import math
import mmap
import os
import struct
import sys
import threading
from pathlib import Path

from dcmpipe import DcmpipeError

from . import _philips_par as par

ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"
MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
NATIVE_SYNTAXES = {"1.2.840.10008.1.2.1", "1.2.840.10008.1.2"}

# Private creators (SPEC 7): blocks are looked up by creator, never hard-coded.
DD001 = (0x2001, "Philips Imaging DD 001")
MR001 = (0x2005, "Philips MR Imaging DD 001")
MR005 = (0x2005, "Philips MR Imaging DD 005")


class PhilipsError(DcmpipeError):
    """A file that cannot be converted; the message names the file and what is missing."""


def _blocks(ds, group: int) -> dict:
    """{creator name: block} of one group of ``ds`` (a pydicom Dataset, kept on it, or a LeanDataset)."""
    lean = getattr(ds, "_raw", None)  # the host's LeanDataset: its tags, no room for a cache
    cache = None if lean is not None else ds.__dict__.setdefault("_dcmpipe_blocks", {})
    blocks = None if cache is None else cache.get(group)
    if blocks is None:
        blocks = {}
        low, high = (group << 16) | 0x10, (group << 16) | 0xFF
        for tag in (lean if lean is not None else ds._dict):
            if low <= tag <= high:
                value = ds[tag].value
                if isinstance(value, bytes):
                    value = value.decode("latin-1")
                blocks.setdefault(str(value).strip(), tag & 0xFF)
        if cache is not None:
            cache[group] = blocks
    return blocks


def private_tag(ds, creator: tuple, offset: int):
    """The full tag of a private element in ``ds`` (a pydicom Dataset), or None if its block is absent."""
    group, name = creator
    block = _blocks(ds, group).get(name)
    return None if block is None else (group << 16) | (block << 8) | offset


def pget(ds, creator: tuple, offset: int, default=None):
    """The value of a private element by creator and offset (0x00-0xFF)."""
    tag = private_tag(ds, creator, offset)
    if tag is None:
        return default
    element = ds.get(tag)
    if element is None or element.value is None or element.value == "":
        return default
    return element.value


def _get(ds, keyword, default=None):
    element = ds.get(keyword) if isinstance(keyword, int) else getattr(ds, keyword, None)
    if element is None:
        return default
    if isinstance(keyword, int):
        element = element.value
    if element is None or element == "":
        return default
    return element


def _num(value, default=0.0) -> float:
    if value is None or value == "":
        return default
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = value[0] if len(value) else default
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def _flag(value) -> str:
    text = str(value or "").strip().upper()
    return "0" if text in ("", "N", "NO") else "1"


def _code(value, names, what: str, where) -> int:
    text = str(value or "").strip().upper()
    try:
        return names.index(text)
    except ValueError:
        raise PhilipsError(f"{where}: unknown {what} {text!r}") from None


def _date(text) -> str:
    text = str(text or "")
    return f"{text[0:4]}.{text[4:6]}.{text[6:8]}" if len(text) >= 8 else text


def _time(text) -> str:
    text = str(text or "").replace(":", "")
    return f"{text[0:2]}:{text[2:4]}:{text[4:6]}" if len(text) >= 6 else text


def release_of(ds) -> int:
    """The major software release (3 for '3.2.3', 5 for '5.7.1'); 3 when unknown."""
    versions = _get(ds, "SoftwareVersions", "")
    text = str(versions if isinstance(versions, str) else versions[0])
    digits = ""
    for char in text.strip().lstrip("Rr"):
        if not char.isdigit():
            break
        digits += char
    return int(digits) if digits else 3


# -- checks ---------------------------------------------------------------------


def check_philips_enhanced_top(ds, where) -> None:
    """The checks that need only the top level: Philips, Enhanced MR, stacks, native pixel data."""
    sop = str(_get(ds, "SOPClassUID", ""))
    manufacturer = str(_get(ds, "Manufacturer", "")).strip()
    if "PHILIPS" not in manufacturer.upper():
        raise PhilipsError(f"{where}: not a Philips file (Manufacturer {manufacturer!r})")
    if sop != ENHANCED_MR:
        raise PhilipsError(f"{where}: not Enhanced MR Image Storage (SOP Class {sop or 'missing'})")
    if not pget(ds, DD001, 0x5F):
        raise PhilipsError(f"{where}: Philips Enhanced MR without MR Stack Sequence (2001,105F) of "
                           "'Philips Imaging DD 001'")
    syntax = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "1.2.840.10008.1.2.1"))
    if syntax not in NATIVE_SYNTAXES:
        raise PhilipsError(f"{where}: compressed pixel data (transfer syntax {syntax}) is not supported")


def check_philips_enhanced(ds, where) -> None:
    """Refuse, in one line, what is not a Philips Enhanced MR object with the private groups needed."""
    check_philips_enhanced_top(ds, where)
    if "PerFrameFunctionalGroupsSequence" not in ds or not ds.PerFrameFunctionalGroupsSequence:
        raise PhilipsError(f"{where}: Philips Enhanced MR without Per-frame Functional Groups Sequence (5200,9230)")
    if private_tag(ds.PerFrameFunctionalGroupsSequence[0], MR005, 0x0F) is None:
        raise PhilipsError(f"{where}: Philips Enhanced MR without private per-frame group (2005,140F) of "
                           "'Philips MR Imaging DD 005'")


# -- general information (SPEC 1.2) ----------------------------------------------


def _stacks(ds) -> list:
    return list(pget(ds, DD001, 0x5F) or [])


def general_info(ds, release: int | None = None) -> dict:
    """The 35 general-information values as the console prints them."""
    release = release_of(ds) if release is None else release
    stack = _stacks(ds)[0]
    shared = ds.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in ds else None
    shared_private = pget(shared, MR005, 0x0E) if shared is not None else None
    y_res = _get(shared_private[0], "NumberOfPhaseEncodingSteps") if shared_private else None
    if y_res is None:
        y_res = _get(ds, "NumberOfPhaseEncodingSteps", _get(ds, 0x00189231, 0))

    def s(offset, creator=MR001):
        return pget(stack, creator, offset, 0.0)

    tr = pget(ds, MR001, 0x30, 0.0)
    tr = list(tr) if isinstance(tr, (list, tuple)) or type(tr).__name__ == "MultiValue" else [tr]
    venc = pget(ds, DD001, 0x1A, [0.0, 0.0, 0.0])
    venc = list(venc) if not isinstance(venc, (int, float)) else [venc] * 3
    exam_date = _get(ds, "PerformedProcedureStepStartDate") or _get(ds, "StudyDate", "")
    exam_time = _get(ds, "PerformedProcedureStepStartTime") or _get(ds, "StudyTime", "")
    position = str(_get(ds, "PatientPosition", "")).strip().upper()
    values = [
        str(_get(ds, "PatientName", "")),
        str(_get(ds, "StudyDescription") or _get(ds, "PerformedProcedureStepDescription", "")),
        str(_get(ds, "ProtocolName", "")),
        f"{_date(exam_date)} / {_time(exam_time)}",
        "Image   MRSERIES",
        "%d" % _num(_get(ds, "AcquisitionNumber")),
        "%d" % _num(pget(ds, DD001, 0x1D)),
        par.scan_duration(_num(_get(ds, "AcquisitionDuration", pget(ds, MR001, 0x33))), release),
        "%d" % _num(pget(ds, DD001, 0x17)),
        "%d" % _num(pget(ds, DD001, 0x14)),
        "%d" % _num(pget(ds, DD001, 0x18)),
        "%d" % _num(pget(ds, DD001, 0x81)),
        "%d" % _num(pget(ds, MR001, 0x21)),
        par.POSITIONS.get(position, position),
        par.PREP_DIR.get(str(pget(stack, MR001, 0x7B, "")).strip().upper(), ""),
        str(pget(ds, DD001, 0x20, "")).strip(),
        "%d  %d" % (_num(pget(ds, MR001, 0x1D)), _num(y_res)),
        str(pget(ds, MR001, 0x6F, "")).strip(),
        par.fmt_float_list([_num(v) for v in tr], "%.3f", "", "  ") if release < 5
        else par.fmt_float_list([_num(v) for v in tr], "%.3f"),
        par.fmt_float_list([_num(s(o)) for o in (0x74, 0x75, 0x76)], "%.3f"),
        "%.3f" % _num(pget(ds, DD001, 0x22)),
        par.fmt_float_list([_num(s(o)) for o in (0x71, 0x72, 0x73)], "%.3f"),
        par.fmt_float_list([_num(s(o)) for o in (0x78, 0x79, 0x7A)], "%.3f"),
        _flag(pget(ds, MR001, 0x16)),
        _flag(pget(ds, MR001, 0x2F)),
        par.fmt_float_list([_num(v) for v in venc], "%.6f"),
        _flag(pget(ds, MR001, 0x1C)),
        _flag(pget(ds, DD001, 0x21)),
        "%d" % _num(pget(ds, DD001, 0x13)),
        _flag(pget(ds, DD001, 0x12)),
        _flag(pget(ds, MR001, 0x14)),
        "%.4f" % _num(pget(ds, DD001, 0x11)),
        "%d" % _num(pget(ds, MR005, 0x14)),
        "%d" % _num(pget(ds, MR005, 0x15)),
        "%d" % _num(pget(ds, MR005, 0x28)),
    ]
    return dict(zip(par.GENERAL_KEYS, values))


# -- one record per frame (SPEC 1.3, 1.5) -------------------------------------------


def _fg(frame, shared, sequence: str):
    """The item of functional group ``sequence``: per-frame first, then shared."""
    for holder in (frame, shared):
        if holder is not None and sequence in holder:
            seq = holder[sequence].value
            if seq:
                return seq[0]
    return None


def _fgv(frame, shared, sequence: str, keyword: str, default=None):
    item = _fg(frame, shared, sequence)
    if item is None:
        return default
    return _get(item, keyword, default)


def frame_records(ds, where) -> list[dict]:
    """One PAR image record per frame, in frame order (``index`` = frame number, 0-based)."""
    frames = ds.PerFrameFunctionalGroupsSequence
    shared = ds.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in ds else None
    stacks = _stacks(ds)
    rows, columns, bits = int(ds.Rows), int(ds.Columns), int(ds.BitsAllocated)
    top_spacing = _get(ds, "SpacingBetweenSlices")
    stack_values = []
    for stack in stacks:
        stack_values.append({
            "angulation_ap": _num(pget(stack, MR001, 0x71)), "angulation_fh": _num(pget(stack, MR001, 0x72)),
            "angulation_rl": _num(pget(stack, MR001, 0x73)),
            "slice_orientation": par.VIEW_AXIS.get(str(pget(stack, MR001, 0x81, "")).strip().upper(), 0),
        })
    records = []
    for number, frame in enumerate(frames):
        p_seq = pget(frame, MR005, 0x0F)
        if not p_seq:
            raise PhilipsError(f"{where}: frame {number + 1} has no private per-frame group (2005,140F)")
        p = p_seq[0]
        content = _fg(frame, None, "FrameContentSequence")
        stack_id = _get(content, "StackID", "1") if content is not None else "1"
        try:
            stack = stack_values[int(str(stack_id).strip()) - 1]
        except (ValueError, IndexError):
            stack = stack_values[0]
        spacing = _fgv(frame, shared, "PixelMeasuresSequence", "PixelSpacing") or _get(p, "PixelSpacing")
        if spacing is None:
            raise PhilipsError(f"{where}: frame {number + 1} has no Pixel Spacing")
        row_spacing, col_spacing = float(spacing[0]), float(spacing[1])
        thickness = _num(_fgv(frame, shared, "PixelMeasuresSequence", "SliceThickness", _get(p, "SliceThickness")))
        between = _fgv(frame, shared, "PixelMeasuresSequence", "SpacingBetweenSlices")
        if between is None:
            between = _get(p, "SpacingBetweenSlices", top_spacing)
        ipp = _fgv(frame, shared, "PlanePositionSequence", "ImagePositionPatient")
        iop = _fgv(frame, shared, "PlaneOrientationSequence", "ImageOrientationPatient")
        if ipp is None or iop is None:
            raise PhilipsError(f"{where}: frame {number + 1} has no Plane Position/Orientation")
        ipp = [float(v) for v in ipp]
        iop = [float(v) for v in iop]
        half_x = col_spacing * (columns - 1) / 2
        half_y = row_spacing * (rows - 1) / 2
        centre = [ipp[k] + iop[k] * half_x + iop[3 + k] * half_y for k in range(3)]
        frame_type = _fg(frame, shared, "MRImageFrameTypeSequence")
        contrast = str(_get(frame_type, "AcquisitionContrast", "UNKNOWN") if frame_type is not None
                       else _get(ds, "AcquisitionContrast", "UNKNOWN")).strip().upper()
        label = str(pget(p, MR005, 0x29, "")).strip().upper()
        trigger = _get(p, "TriggerTime")
        if trigger is None:
            trigger = _fgv(frame, shared, "CardiacSynchronizationSequence", "NominalCardiacTriggerDelayTime", 0)
        percent = _fgv(frame, shared, "MRFOVGeometrySequence", "PercentSampling", _get(ds, "PercentSampling", 100))
        record = {
            "slice": int(_num(pget(p, DD001, 0x0A, _get(content, "InStackPositionNumber", 1)))),
            "echo": int(_num(_get(p, "EchoNumbers", 1))),
            "dynamic": int(_num(_get(p, "TemporalPositionIdentifier",
                                     _get(content, "TemporalPositionIndex", 1) if content is not None else 1))),
            "phase": int(_num(pget(p, DD001, 0x08, 1))),
            "type": _code(pget(p, MR001, 0x11, "M"), par.IMAGE_TYPES, "image type (2005,1011)", where),
            "sequence": _code(pget(p, MR001, 0x6E, "UNSPECIFIED"), par.SEQUENCES,
                              "scanning sequence (2005,106E)", where),
            "index": number,
            "bits": bits,
            "scan_percentage": int(_num(percent, 100)),
            "recon_x": columns, "recon_y": rows,
            "rescale_intercept": _num(_fgv(frame, shared, "PixelValueTransformationSequence", "RescaleIntercept",
                                           _get(p, "RescaleIntercept", 0))),
            "rescale_slope": _num(_fgv(frame, shared, "PixelValueTransformationSequence", "RescaleSlope",
                                       _get(p, "RescaleSlope", 1)), 1.0),
            "scale_slope": _num(pget(p, MR001, 0x0E), 1.0),
            "window_center": _round(_fgv(frame, shared, "FrameVOILUTSequence", "WindowCenter",
                                         _get(p, "WindowCenter", 0))),
            "window_width": _round(_fgv(frame, shared, "FrameVOILUTSequence", "WindowWidth",
                                        _get(p, "WindowWidth", 0))),
            **{k: stack[k] for k in ("angulation_ap", "angulation_fh", "angulation_rl")},
            "offcentre_ap": centre[1], "offcentre_fh": centre[2], "offcentre_rl": centre[0],
            "thickness": thickness,
            "gap": (_num(between) - thickness) if between is not None else 0.0,
            "display_orientation": par.DISPLAY.index(str(pget(p, MR001, 0x04, "NONE")).strip().upper())
            if str(pget(p, MR001, 0x04, "NONE")).strip().upper() in par.DISPLAY else 0,
            "slice_orientation": stack["slice_orientation"],
            "fmri_status": int(_num(pget(p, MR001, 0x63, 0))),
            "ed_es": par.ED_ES.get(str(pget(p, DD001, 0x07, "U")).strip().upper(), 2),
            "spacing_x": col_spacing, "spacing_y": row_spacing,
            "echo_time": _num(_get(p, "EchoTime", _fgv(frame, shared, "MREchoSequence", "EffectiveEchoTime", 0))),
            "dyn_time": _num(pget(p, MR001, 0xA0, 0)),
            "trigger_time": _num(trigger),
            "b_factor": _num(pget(p, DD001, 0x03, _fgv(frame, shared, "MRDiffusionSequence", "DiffusionBValue", 0))),
            "averages": int(_num(_get(p, "NumberOfAverages", 1))),
            "flip_angle": _num(_get(p, "FlipAngle", 0)),
            "heart_rate": int(_num(_get(p, "HeartRate", 0))),
            "rr_low": int(_num(_get(p, "LowRRValue", 0))),
            "rr_high": int(_num(_get(p, "HighRRValue", 0))),
            "turbo": int(_num(_get(p, "EchoTrainLength", 0))),
            "inversion_delay": _num(_get(p, "InversionTime", 0)),
            "b_number": int(_num(pget(p, MR005, 0x12, 1))),
            "gradient_number": int(_num(pget(p, MR005, 0x13, 1))),
            "contrast": par.CONTRASTS.index(contrast) if contrast in par.CONTRASTS else par.CONTRASTS.index("UNKNOWN"),
            "anisotropy": par.ANISOTROPY.get(str(_get(p, "DiffusionAnisotropyType", "")).strip().upper(), 0),
            "diffusion_ap": _num(pget(p, MR001, 0xB1, 0)),
            "diffusion_fh": _num(pget(p, MR001, 0xB2, 0)),
            "diffusion_rl": _num(pget(p, MR001, 0xB0, 0)),
            "label": 2 if label == "LABEL" else 1,
        }
        records.append(record)
    return records


def _round(value) -> int:
    number = _num(value)
    return int(math.floor(number + 0.5))


# -- pixel data without pydicom: the frames' bytes where they lie in the file ---------


def pixel_data_offset(path: Path, nbytes: int, explicit: bool = True) -> int:
    """The file offset of the Pixel Data value of length ``nbytes`` (native, uncompressed)."""
    size = os.path.getsize(path)
    header = 12 if explicit else 8
    padded = nbytes + (nbytes & 1)
    with open(path, "rb") as fh:  # the usual case: Pixel Data is the last element
        fh.seek(max(0, size - padded - header))
        tag = fh.read(header)
    if (len(tag) == header and tag[:4] == b"\xe0\x7f\x10\x00"
            and struct.unpack_from("<I", tag, header - 4)[0] == padded):
        return size - padded
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        length = struct.pack("<I", nbytes + (nbytes & 1))
        candidates = ([b"\xe0\x7f\x10\x00OW\x00\x00" + length, b"\xe0\x7f\x10\x00OB\x00\x00" + length]
                      if explicit else [b"\xe0\x7f\x10\x00" + length])
        for needle in candidates:
            at = mm.rfind(needle)
            if at >= 0 and at + len(needle) + nbytes <= size:
                return at + len(needle)
    raise PhilipsError(f"{path}: pixel data of {nbytes} bytes not found (truncated file?)")


# -- writing PAR/REC ---------------------------------------------------------------------


def read_header(path: Path):
    """The pydicom data set without pixel data; a one-line error for what pydicom cannot read."""
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    try:
        return dcmread(path, stop_before_pixels=True)
    except InvalidDicomError:
        raise PhilipsError(f"{path}: not a DICOM file") from None
    except (OSError, EOFError, ValueError, struct.error) as exc:
        raise PhilipsError(f"{path}: cannot read the DICOM header ({exc})") from None


def frame_bytes(ds) -> int:
    return int(ds.Rows) * int(ds.Columns) * int(ds.BitsAllocated) // 8


def _streamed_file(target: Path, chunks, fsync: bool = False) -> str:
    """Write ``chunks`` (bytes-like) to ``target`` through a temporary file; never overwrite."""
    return _commit_temp(_write_temp(target, chunks, fsync=fsync), target, sync_dir=fsync)


def _write_temp(target: Path, chunks, size: int | None = None, fsync: bool = False) -> Path:
    """Write ``chunks`` to a new temporary file beside ``target``; return its path.

    ``size``: the bytes that will be written, if known: the file is allocated at once (no room fails
    before anything is written, and ext4 writes a preallocated file back with less work per page).
    ``fsync``: the file is on disk when this returns (its pages are sent to the disk as they are
    written, so the final fsync waits less); otherwise the system writes it back when it likes.
    """
    from dcmpipe.safefile import PART_SUFFIX, makedirs

    target = Path(target)
    makedirs(target.parent)
    tmp = target.parent / f".{target.name}.{os.getpid()}.{threading.get_ident()}{PART_SUFFIX}"
    try:
        with open(tmp, "xb", buffering=0) as out:
            preallocate(out.fileno(), size)
            written = flushed = 0
            for chunk in chunks:
                if isinstance(chunk, list):  # buffers written in one system call per 1,024 (no copy here)
                    written += write_gathered(out.fileno(), chunk)
                else:
                    view = memoryview(chunk).cast("B")
                    written += view.nbytes
                    while view:  # unbuffered: a write may take only part of the chunk
                        view = view[out.write(view):]
                if fsync and written - flushed >= 8 << 20 and hasattr(os, "posix_fadvise"):
                    # Start writing these pages to disk now (Linux): the final fsync waits less.
                    os.posix_fadvise(out.fileno(), flushed, written - flushed, os.POSIX_FADV_DONTNEED)
                    flushed = written
            if size and written != size:  # never a tail of preallocated zeros
                os.ftruncate(out.fileno(), written)
            if fsync:
                os.fsync(out.fileno())
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise
    return tmp


def preallocate(fd: int, size: int | None) -> None:
    """Allocate ``size`` bytes of the new file ``fd`` now, where the system can (ext4 then writes the
    pages back with less work each); a failure is left to the writes to report."""
    if size and hasattr(os, "posix_fallocate"):
        try:
            os.posix_fallocate(fd, 0, size)
        except OSError:  # not supported here, or no room: the writes will say
            pass


def write_gathered(fd: int, buffers: list, offset: int | None = None) -> int:
    """Write ``buffers`` (memoryviews) one after the other, as few system calls as the system allows
    (``writev`` at the file's position, or ``pwritev`` at ``offset``); the number of bytes written."""
    total = 0
    limit = getattr(os, "IOV_MAX", None) or 1024
    for first in range(0, len(buffers), limit):
        group = buffers[first:first + limit]
        want = sum(b.nbytes for b in group)
        done = os.writev(fd, group) if offset is None else os.pwritev(fd, group, offset + total)
        if done < want:  # a partial write: the rest from where it stopped
            rest = memoryview(b"".join(group))[done:]
            while rest:
                step = os.write(fd, rest) if offset is None else os.pwrite(fd, rest, offset + total + done)
                rest, done = rest[step:], done + step
        total += want
    return total


def _commit_temp(tmp: Path, target: Path, sync_dir: bool = False) -> str:
    """Move a temporary file of ``_write_temp`` to ``target`` (never overwriting); the temporary is gone after.

    ``sync_dir``: the new name is on disk too when this returns (the folder is fsynced).
    """
    from dcmpipe.safefile import transfer

    try:
        done = transfer(tmp, target, "move")
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)
    if sync_dir:
        folder = os.open(Path(target).parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    return "written" if done == "moved" else done


def rec_chunks(path: Path, offset: int, size: int, order, chunk_bytes: int = 4 << 20, mapped: bool = True):
    """The frames of ``path`` (``size`` bytes each from ``offset``) in ``order``, a few MB at a time.

    Each chunk is a list of buffers for ``_write_temp`` to write with writev.  The file is
    memory-mapped and the buffers are views of it: no copy here, and one system call per 1,024
    frames, so a thread writing the REC seldom needs the interpreter lock (with one read per run of
    frames, a BOLD file's REC took 1,600 reads, each waiting for the lock when the PAR was being
    formatted).  The pages of a chunk are dropped from this process when the next is asked for: the
    memory held stays about a chunk.  ``mapped=False``, or where mapping fails: the frames a chunk
    needs are read into one buffer, in file order, one read per run of consecutive frames.
    """
    import numpy as np

    order = np.asarray(order, dtype=np.int64)
    per_chunk = max(1, chunk_bytes // max(size, 1))
    fd = os.open(path, os.O_RDONLY)
    try:
        if len(order) and (order.min() < 0 or offset + (int(order.max()) + 1) * size > os.fstat(fd).st_size):
            raise PhilipsError(f"{path}: pixel data ends early (truncated file?)")
        view = _map_frames(fd, offset, size * (int(order.max()) + 1)) if mapped and len(order) and size else None
    except BaseException:
        os.close(fd)
        raise
    if view is not None:
        os.close(fd)  # the mapping keeps the file
        yield from _mapped_chunks(view, size, order, per_chunk)
        return
    try:
        yield from _read_chunks(path, fd, offset, size, order, per_chunk)
    finally:
        os.close(fd)


def _map_frames(fd: int, offset: int, length: int):
    """``length`` bytes of the file from ``offset``, memory-mapped read-only (a memoryview), or None."""
    start = offset // mmap.ALLOCATIONGRANULARITY * mmap.ALLOCATIONGRANULARITY
    try:
        mapping = mmap.mmap(fd, offset - start + length, access=mmap.ACCESS_READ, offset=start)
    except (OSError, ValueError, OverflowError):
        return None
    return memoryview(mapping)[offset - start:]


def _mapped_chunks(view, size: int, order, per_chunk: int):
    import numpy as np

    mapping = view.obj
    for first in range(0, len(order), per_chunk):
        if first and hasattr(mapping, "madvise"):  # the last chunk is written: its pages may go
            mapping.madvise(mmap.MADV_DONTNEED)
        part = order[first:first + per_chunk]
        # One buffer per run of frames that follow each other in the file (the whole chunk when in order).
        breaks = np.flatnonzero(np.diff(part) != 1) + 1
        starts = np.concatenate(([0], breaks)).tolist()
        ends = np.concatenate((breaks, [len(part)])).tolist()
        frames = part.tolist()
        yield [view[frames[a] * size:(frames[b - 1] + 1) * size] for a, b in zip(starts, ends)]


def _read_chunks(path: Path, fd: int, offset: int, size: int, order, per_chunk: int):
    import numpy as np

    source = bytearray(min(per_chunk, max(len(order), 1)) * size)
    view = memoryview(source)
    for start in range(0, len(order), per_chunk):
        part = order[start:start + per_chunk]
        wanted = np.sort(part)  # sorted, each frame once (not np.unique: it imports numpy.ma, 20 ms)
        wanted = wanted[np.concatenate(([True], wanted[1:] != wanted[:-1]))]
        breaks = np.flatnonzero(np.diff(wanted) != 1) + 1
        filled = 0
        for run in np.split(wanted, breaks):
            want = len(run) * size
            got = os.preadv(fd, [view[filled:filled + want]], offset + int(run[0]) * size)
            if got != want:
                raise PhilipsError(f"{path}: pixel data ends early (truncated file?)")
            filled += want
        if len(wanted) == len(part) and np.array_equal(wanted, part):
            yield view[:filled]  # already in order
        else:  # the frames' buffers in order: writev puts them together
            yield [view[k * size:(k + 1) * size] for k in np.searchsorted(wanted, part).tolist()]


def load(path: Path):
    """(header data set, frame records in frame order, pixel data offset) of a Philips Enhanced MR file."""
    ds, columns, offset = load_columns(path)
    columns["index"] = None
    names = list(columns)
    lists = [list(range(len(next(c for c in columns.values() if c is not None)))) if c is None else c.tolist()
             for c in columns.values()]
    return ds, [dict(zip(names, row)) for row in zip(*lists)], offset


def load_columns(path: Path):
    """(header data set, PAR columns {name: Col} in frame order, pixel data offset) of a Philips Enhanced MR file.

    The ``index`` column is None: it is the row each frame goes to, known once the rows are ordered.
    """
    from . import _philips_fast as fast

    path = Path(path)
    try:
        quick = fast.read_fast(path)
    except PhilipsError:
        raise
    except Exception:  # anything the lean reader does not expect: pydicom reads it
        quick = None
    if quick is not None:
        ds, values, offset = quick
        del quick
        check_philips_enhanced_top(ds, path)
        columns = fast.columns_from_values(ds, values, path)
        del values  # the raw columns are no longer needed: keep the peak low
        return ds, columns, offset
    ds = read_header(path)
    check_philips_enhanced(ds, path)
    records = frame_records(ds, path)
    nframes = int(ds.NumberOfFrames)
    if nframes != len(records):
        raise PhilipsError(f"{path}: Number of Frames {nframes} but {len(records)} per-frame items")
    syntax = str(ds.file_meta.TransferSyntaxUID)
    offset = pixel_data_offset(path, frame_bytes(ds) * nframes, explicit=syntax != "1.2.840.10008.1.2")
    columns = {name: fast.Col.of([r[name] for r in records]) for name in par.COLUMNS}
    columns["index"] = None
    return ds, columns, offset


class Background:
    """``function(*args)`` run in a thread; ``result()`` waits and returns its value or raises its error.

    While such a thread runs, the interpreter switches threads every 0.5 ms instead of 5: the thread
    spends its time in system calls (writing, copying), and after each it must get the interpreter
    lock back from the main thread, which is formatting text meanwhile; waiting up to 5 ms each
    time made writing a REC two to four times slower.
    """

    _lock = threading.Lock()
    _running = 0
    _interval = None

    def __init__(self, function, *args):
        self._value = self._error = None
        with Background._lock:
            if Background._running == 0:
                Background._interval = sys.getswitchinterval()
                sys.setswitchinterval(min(Background._interval, 0.0005))
            Background._running += 1
        self._thread = threading.Thread(target=self._run, args=(function, args), daemon=True)
        self._thread.start()

    def _run(self, function, args):
        try:
            self._value = function(*args)
        except BaseException as exc:  # handed to the caller by result()
            self._error = exc
        finally:
            with Background._lock:
                Background._running -= 1
                if Background._running == 0:
                    sys.setswitchinterval(Background._interval)

    def result(self, raise_error: bool = True):
        """The value, or its error raised; ``raise_error=False``: just wait for the end (before cleaning up)."""
        self._thread.join()
        if self._error is not None and raise_error:
            raise self._error
        return self._value


def convert(path: Path, outdir: Path, stem: str | None = None, version: str = "4.2",
            fsync: bool = False) -> list[Path]:
    """Write ``outdir/stem.PAR`` and ``.REC`` for one Philips Enhanced MR file; return both paths.

    Each file is written under a temporary name and renamed when complete, the REC first, so a PAR
    is never there without its whole REC (after a crash of the program; after a power loss only with
    ``fsync``, which also waits until both files are on disk).
    """
    from dcmpipe.safefile import TargetExistsError, write_atomic

    from . import _philips_fast as fast

    path = Path(path)
    if version not in par.VERSIONS:
        raise ValueError(f"PAR version must be one of {', '.join(par.VERSIONS)}, not {version!r}")
    ds, columns, offset = load_columns(path)
    stem = stem or path.stem
    par_path, rec_path = Path(outdir) / f"{stem}.PAR", Path(outdir) / f"{stem}.REC"
    order = fast.row_order(str(pget(ds, MR001, 0x6F, "")).strip().upper() == "3D", columns)
    # The REC is written (system calls and numpy copies: little of the interpreter lock) while the PAR
    # text is formatted, unless a PAR is in the way: then it is compared first, so that nothing is
    # written when it differs.
    writer = None
    if not par_path.exists():
        writer = Background(_write_temp, rec_path, rec_chunks(path, offset, frame_bytes(ds), order),
                            frame_bytes(ds) * len(order), fsync)
    try:
        lines = fast.image_lines(columns, order, version)
        del columns
        text = par.par_text(general_info(ds), lines, version, dataset_name=str(Path(outdir) / stem))
        del lines
    except BaseException:
        if writer is not None:
            tmp = writer.result(raise_error=False)
            if tmp is not None and os.path.lexists(tmp):
                os.unlink(tmp)
        raise
    if writer is None:
        if par_path.read_bytes() != text:
            raise TargetExistsError(par_path)
        _streamed_file(rec_path, rec_chunks(path, offset, frame_bytes(ds), order), fsync)
        write_atomic(par_path, text, fsync=fsync)
        return [par_path, rec_path]
    # The PAR goes to disk while the REC is still being written; it is renamed into place last, so a
    # PAR is never there without its complete REC.
    try:
        par_tmp = _write_temp(par_path, [text], len(text), fsync)
    except BaseException:
        tmp = writer.result(raise_error=False)
        if tmp is not None and os.path.lexists(tmp):
            os.unlink(tmp)
        raise
    try:
        _commit_temp(writer.result(), rec_path, sync_dir=fsync)
    except BaseException:
        os.unlink(par_tmp)
        raise
    _commit_temp(par_tmp, par_path, sync_dir=fsync)
    return [par_path, rec_path]
