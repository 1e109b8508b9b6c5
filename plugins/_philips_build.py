"""dcms2e's builder: classic Philips MR files of dynamic 1 + PAR/REC -> one Philips-style Enhanced MR file.

A re-arrangement of what the classic files and the PAR already carry
(../shared/philips/SPEC.md 2.4).  Memory: the classic files (one dynamic) as
pydicom objects, one template per classic file, and the REC memory-mapped;
the per-frame items are encoded from byte templates (only the values that
change are encoded per frame) and written one at a time, the pixel data is
copied from the REC a few megabytes at a time.
"""

from __future__ import annotations

import copy
import functools
import io
import os
import struct
from datetime import datetime, timedelta
from pathlib import Path

from . import _philips_par as par
from ._philips_dicom import (DD001, ENHANCED_MR, MR001, MR005, MR_IMAGE, PhilipsError, _streamed_file, private_tag,
                             rec_chunks, rec_ranges)

MR004 = (0x2005, "Philips MR Imaging DD 004")
MR006 = (0x2005, "Philips MR Imaging DD 006")

# Classic top-level attributes that become per-frame values (in the private per-frame item 140F).
PER_IMAGE_PUBLIC = [
    0x00080008, 0x00080018, 0x00080023, 0x00080033, 0x00180010, 0x00180020, 0x00180021, 0x00180023,
    0x00180050, 0x00180081, 0x00180082, 0x00180083, 0x00180084, 0x00180085, 0x00180086, 0x00180088,
    0x00180091, 0x00181081, 0x00181082, 0x00181083, 0x00181084, 0x00181088, 0x00181251, 0x00181310,
    0x00181314, 0x00200012, 0x00200013, 0x00200032, 0x00200100, 0x00200105, 0x00280030, 0x00281050,
    0x00281051, 0x00281052, 0x00281053, 0x00281054,
]
PER_IMAGE_PRIVATE = [
    (DD001, o) for o in (0x01, 0x02, 0x03, 0x04, 0x06, 0x07, 0x08, 0x09, 0x0A, 0x0B, 0xF1)
] + [
    (MR001, o) for o in (0x04, 0x0B, 0x0C, 0x0D, 0x0E, 0x11, 0x61, 0x63, 0x6E, 0xA0, 0xA1, 0xA8, 0xB0, 0xB1, 0xB2)
] + [(MR005, o) for o in (0x12, 0x13, 0x29)] + [(MR006, o) for o in (0x61, 0x68, 0x72, 0x73, 0x96)]
# Classic-only attributes the Enhanced object does not keep at top level (SPEC 2.4, R5.7 pair).
DROP_PUBLIC = [
    0x00080022, 0x00080032, 0x00081032, 0x00081140, 0x00180024, 0x00180080, 0x00180089, 0x00180093,
    0x00180094, 0x00181060, 0x00181100, 0x00181250, 0x00181312, 0x00181316, 0x00181318, 0x00189087,
    0x00189089, 0x00200037, 0x00200060, 0x00201041, 0x00281055, 0x00409096, 0x00189073,
]
DROP_PRIVATE = [(DD001, o) for o in (0x4E, 0x77, 0x7A)] + [
    (MR001, o) for o in (0x00, 0x01, 0x02, 0x08, 0x09, 0x0A, 0x0F, 0x10)
] + [(MR005, o) for o in (0x04, 0x06, 0x09, 0x0A, 0x0B, 0x0F)]
# Values of the classic private item 140F that go to functional groups, not to the top level.
FG_ONLY = {0x00089007, 0x00189009, 0x00189041, 0x00189043, 0x00189044, 0x00189047, 0x00189048, 0x00189075,
           0x00189080, 0x00189085, 0x00189147, 0x00189169, 0x00189171, 0x00189176, 0x00189232}

DIFFS = """\
What differs from an Enhanced MR file the scanner would export, and why (SPEC.md 2.4):
- SOP Instance UID, and the private SOP Instance UIDs of frames of dynamics > 1: new UIDs (the scanner
  derives them from its own counters).
- Dimension Organization UID: new.
- Referenced Image Sequence (localizers) and Referenced Image Evidence: dropped (the classic files'
  references point at classic objects).
- Instance Creation Date/Time, Implementation Class UID / Version Name: this program's.
- Frames of dynamics > 1 are clones of the dynamic-1 frame of the same slice/echo/type/label, updated
  from the PAR row: dynamic number, Temporal Position Index, dynamic scan begin time, rescale
  slope/intercept, MR scale slope, window center/width, fMRI status, instance number (classic number +
  (dynamic - 1) x images per dynamic), frame acquisition date-time and content time (dynamic-1 value
  + begin time difference).
- Rescale slope/intercept of dynamics > 1 come from the PAR (5 decimals) unless the PAR prints the same
  value as for dynamic 1, in which case the classic file's full-precision value is kept.
- MR Max/Min FP (2005,100B/100C) of dynamics > 1: estimated from the REC values,
  (max PV x RS + RI) / (RS x SS); the scanner's value lies within one step (1/SS) above.
- Window center/width of dynamics > 1: the PAR's values (equal to the scanner's DICOM values).
"""
STRICT_DIFFS = """\
- --strict: private dimension indices (label type, image type) renumbered to 1-based ranks (Philips
  writes the 0-based enumeration code, which dciodvfy rejects); Velocity Encoding Direction 0\\0\\0
  removed (dciodvfy: not a unit vector).
"""


UID_ROOT = "1.2.826.0.1.3680043.8.498."  # pydicom's root, as pydicom.uid.generate_uid() uses it
_UID_RANGE = 10 ** (64 - len(UID_ROOT))


def _uid() -> str:
    """A new random UID under ``UID_ROOT`` (as generate_uid() makes them, without its per-call checks)."""
    import secrets

    return f"{UID_ROOT}{secrets.randbelow(_UID_RANGE)}"[:64]


def _ds_text(value: float) -> str:
    """A DS value of at most 16 characters."""
    for digits in range(15, 5, -1):
        text = f"{value:.{digits}g}"
        if len(text) <= 16:
            return text
    return f"{value:.6g}"


@functools.lru_cache(maxsize=4096)
def _dt_plus(text: str, seconds: float) -> str:
    """A DICOM DT/TM-like ``YYYYMMDDHHMMSS.FF`` text shifted by ``seconds``; keeps the fraction digits."""
    base, _, fraction = text.partition(".")
    stamp = datetime.strptime(base[:14], "%Y%m%d%H%M%S") + timedelta(seconds=float("0." + (fraction or "0")))
    stamp += timedelta(seconds=seconds)
    digits = max(len(fraction), 2) if fraction else 0
    out = stamp.strftime("%Y%m%d%H%M%S")
    if digits:
        out += "." + f"{stamp.microsecond:06d}"[:digits]
    return out


ITEM_START = b"\xfe\xff\x00\xe0\xff\xff\xff\xff"
ITEM_END = b"\xfe\xff\x0d\xe0\x00\x00\x00\x00"

# -- encoding explicit VR little endian elements by hand (the per-frame values) -------------------

_PAD = {"UI": b"\0"}


@functools.lru_cache(maxsize=1024)
def _head(tag: int, vr: str) -> bytes:
    return struct.pack("<HH2s", tag >> 16, tag & 0xFFFF, vr.encode())


_BINARY = {"FL": struct.Struct("<f"), "FD": struct.Struct("<d"), "SS": struct.Struct("<h"), "UL": struct.Struct("<I")}
_LENGTH = struct.Struct("<H")


def _element(tag: int, vr: str, value) -> bytes:
    """One explicit VR little endian element (short-length VRs only)."""
    return _encoder(tag, vr)(value)


@functools.lru_cache(maxsize=1024)
def _encoder(tag: int, vr: str):
    """A function value -> the bytes of one explicit VR little endian element ``tag``, ``vr`` (short VRs)."""
    head = _head(tag, vr)
    if vr in _BINARY:
        code = _BINARY[vr].format[-1]
        single = struct.Struct("<4s2sH" + code)
        width = _BINARY[vr].size

        def binary(value):
            if isinstance(value, (list, tuple)):
                return head + _LENGTH.pack(width * len(value)) + struct.pack("<%d%s" % (len(value), code), *value)
            return single.pack(head[:4], head[4:], width, value)

        return binary
    pad = _PAD.get(vr, b" ")

    def text(value):
        data = str(value).encode("latin-1")
        if len(data) & 1:
            data += pad
        return head + _LENGTH.pack(len(data)) + data

    return text


@functools.lru_cache(maxsize=1024)
def _memo_encoder(tag: int, vr: str):
    """``_encoder(tag, vr)`` that encodes each distinct text value once (window values, dynamic numbers repeat)."""
    encode = _encoder(tag, vr)
    memo = {}

    def encode_text(value):
        if type(value) is not str:
            return encode(value)
        encoded = memo.get(value)
        if encoded is None:
            if len(memo) > 100_000:
                memo.clear()
            encoded = memo[value] = encode(value)
        return encoded

    return encode_text


def _encode(ds) -> bytes:
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_dataset(fp, ds)
    return fp.getvalue()


def _undefined_lengths(ds) -> None:
    """Sequences and items of ``ds`` with undefined lengths, so frame templates can be spliced."""
    for element in ds:
        if element.VR == "SQ":
            element.is_undefined_length = True
            for item in element.value:
                item.is_undefined_length_sequence_item = True
                _undefined_lengths(item)


class _Template:
    """A per-frame item as bytes, split around the elements that change from frame to frame."""

    MARK = 0x7FFF0000

    def __init__(self, item, variable: dict):
        """``variable``: name -> (dataset inside ``item`` holding it, tag, VR)."""
        self.order = []
        markers = {}
        for number, (name, (holder, tag, vr)) in enumerate(variable.items()):
            marker = f"@@{number:04d}@@"
            holder.add_new(tag, "LO" if vr not in ("UL", "FL", "FD", "SS") else vr, None)
            if vr in ("UL", "FL", "FD", "SS"):
                holder[tag].VR = "LO"
            holder[tag].value = marker
            markers[name] = (tag, vr, _element(tag, "LO", marker))
        _undefined_lengths(item)
        data = _encode(item)
        pieces = []
        position = 0
        found = sorted((data.index(encoded), name) for name, (tag, vr, encoded) in markers.items())
        for at, name in found:
            pieces.append(data[position:at])
            position = at + len(markers[name][2])
            self.order.append((name, markers[name][0], markers[name][1]))
        pieces.append(data[position:])
        self.pieces = pieces

    def render(self, values: dict) -> bytes:
        """The item's bytes; values still the very objects of ``self.base`` reuse their encoding."""
        base = self.base
        cache = self.__dict__.get("encoded")
        if cache is None:
            cache = self.encoded = {name: _element(tag, vr, base[name]) for name, tag, vr in self.order if name in base}
            self.encoders = [(name, _memo_encoder(tag, vr) if vr not in _BINARY else _encoder(tag, vr), piece)
                             for (name, tag, vr), piece in zip(self.order, self.pieces[1:])]
            self.skeleton = [piece for piece in self.pieces for _ in (0, 1)][:-1]  # pieces at even places
        out = self.skeleton.copy()
        out[1::2] = [cache[name] if name in cache and values[name] is base[name] else encode(values[name])
                     for name, encode, piece in self.encoders]
        return b"".join(out)


# -- reading and checking the inputs --------------------------------------------------------------


def _pvalue(ds, creator, offset, default=None):
    tag = private_tag(ds, creator, offset)
    if tag is None or tag not in ds:
        return default
    value = ds[tag].value
    return default if value in (None, "") else value


def _key_of_classic(ds) -> tuple:
    return (int(_pvalue(ds, DD001, 0x0A, 1)), int(ds.get("EchoNumbers", 1) or 1), int(_pvalue(ds, DD001, 0x08, 1)),
            par.IMAGE_TYPES.index(str(_pvalue(ds, MR001, 0x11, "M")).strip().upper()),
            par.SEQUENCES.index(str(_pvalue(ds, MR001, 0x6E, "UNSPECIFIED")).strip().upper()),
            int(_pvalue(ds, MR005, 0x12, 1)), int(_pvalue(ds, MR005, 0x13, 1)),
            2 if str(_pvalue(ds, MR005, 0x29, "")).strip().upper() == "LABEL" else 1)


def _key_of_record(r: dict) -> tuple:
    return (r["slice"], r["echo"], r["phase"], r["type"], r["sequence"], r["b_number"], r["gradient_number"],
            r["label"])


def read_classic(folder: Path, files: list | None = None) -> list:
    """The classic files (``files``, else every visible file of ``folder``) as (path, data set)."""
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    if files is None:
        files = [p for p in Path(folder).iterdir() if p.is_file() and not p.name.startswith(".")]
    files = sorted(Path(p) for p in files)
    out = []
    for path in files:
        try:
            ds = dcmread(path)
        except (InvalidDicomError, OSError, EOFError, ValueError, struct.error) as exc:
            raise PhilipsError(f"{path}: not a readable DICOM file ({exc})") from None
        out.append((path, ds))
    if not out:
        raise PhilipsError(f"{folder}: no classic DICOM files")
    return out


def check_inputs(classic: list, parsed: par.ParFile, rec_path: Path, folder) -> dict:
    """Every check of SPEC 2.4 before anything is written; returns {key: PAR record} of dynamic 1."""
    problems = []
    first = classic[0][1]
    for path, ds in classic:
        if str(ds.get("SOPClassUID", "")) != MR_IMAGE:
            raise PhilipsError(f"{path}: not a classic MR Image Storage file (SOP Class {ds.get('SOPClassUID')})")
        if "PHILIPS" not in str(ds.get("Manufacturer", "")).upper():
            raise PhilipsError(f"{path}: not a Philips file (Manufacturer {str(ds.get('Manufacturer', ''))!r})")
        if private_tag(ds, MR005, 0x0F) is None or not ds[private_tag(ds, MR005, 0x0F)].value:
            raise PhilipsError(f"{path}: no private group (2005,140F) of 'Philips MR Imaging DD 005' with the "
                               "enhanced attributes (older releases do not write it)")
        if ds.SeriesInstanceUID != first.SeriesInstanceUID:
            raise PhilipsError(f"{path}: another series than {classic[0][0].name} (Series Instance UID differs)")
    dynamics = {int(ds.get("TemporalPositionIdentifier", 1) or 1) for _, ds in classic}
    if dynamics != {1}:
        problems.append(f"the classic files hold dynamics {sorted(dynamics)}, expected only dynamic 1")
    acq = str(parsed.get("Acquisition nr", "")).strip()
    if acq and str(first.get("AcquisitionNumber", "")).strip() != acq:
        problems.append(f"acquisition number differs: classic {first.get('AcquisitionNumber')}, PAR {acq}")
    for name in ("Rows", "Columns"):
        key = "recon_y" if name == "Rows" else "recon_x"
        values = {r[key] for r in parsed.records}
        if values != {int(first.get(name))}:
            problems.append(f"{name} differ: classic {first.get(name)}, PAR {sorted(values)}")
    if {r["bits"] for r in parsed.records} != {int(first.BitsAllocated)}:
        problems.append("bits per pixel differ between the classic files and the PAR")
    dyn1 = {_key_of_record(r): r for r in parsed.records if r["dynamic"] == 1}
    slices_par = {r["slice"] for r in parsed.records}
    slices_classic = {int(_pvalue(ds, DD001, 0x0A, 1)) for _, ds in classic}
    if slices_par != slices_classic:
        problems.append(f"slice count differs: classic {len(slices_classic)}, PAR {len(slices_par)}")
    if len(dyn1) != len(classic):
        problems.append(f"{len(classic)} classic files but {len(dyn1)} PAR images of dynamic 1")
    if problems:
        raise PhilipsError(f"{folder}: " + "; ".join(problems) + "; nothing written")
    size = parsed.image_bytes()
    rec_size = rec_path.stat().st_size
    needed = (max(r["index"] for r in parsed.records) + 1) * size
    if rec_size < needed:
        raise PhilipsError(f"{rec_path}: {rec_size} bytes, the PAR needs {needed} (truncated REC); nothing written")
    with open(rec_path, "rb") as fh:
        for path, ds in classic:
            record = dyn1.get(_key_of_classic(ds))
            if record is None:
                raise PhilipsError(f"{path}: no PAR image of dynamic 1 with its slice/echo/type/label; nothing written")
            fh.seek(record["index"] * size)
            if fh.read(size) != bytes(ds.PixelData[:size]):
                raise PhilipsError(f"{path}: pixel data differs from REC image {record['index']} of dynamic 1 "
                                   "(not the same acquisition?); nothing written")
            rs, ri = float(ds.get("RescaleSlope", 1)), float(ds.get("RescaleIntercept", 0))
            ss = float(_pvalue(ds, MR001, 0x0E, 1.0))
            if (abs(rs - record["rescale_slope"]) > 1e-5 * max(1, abs(rs)) + 1e-5
                    or abs(ri - record["rescale_intercept"]) > 1e-5 * max(1, abs(ri)) + 1e-5
                    or abs(ss - record["scale_slope"]) > 1e-5 * abs(ss) + 1e-9):
                raise PhilipsError(f"{path}: rescale slope/intercept or scale slope differ from the PAR's dynamic 1; "
                                   "nothing written")
    return dyn1


# -- building ----------------------------------------------------------------------------------------


def _copied(element):
    """A copy of a data element that can be changed without changing ``element`` (values are replaced, never
    changed in place, except the items of sequences: those are copied deeply)."""
    return copy.deepcopy(element) if element.VR == "SQ" else copy.copy(element)


def _copy_privates(source, target, wanted: list) -> None:
    """Copy private elements (creator, offset) of ``source`` into ``target``, in the same blocks."""
    for creator, offset in wanted:
        tag = private_tag(source, creator, offset)
        if tag is None or tag not in source:
            continue
        creator_tag = (tag & 0xFFFF0000) | ((tag >> 8) & 0xFF)
        if creator_tag not in target:
            target.add(_copied(source[creator_tag]))
        target.add(_copied(source[tag]))  # copies: the classic data set stays as read


def _put_private(ds, creator: tuple, block: int, offset: int, vr: str, value) -> None:
    """Add a private element in Philips' own block (the pointers of the dimension index name it)."""
    group, name = creator
    ds.add_new((group << 16) | block, "LO", name)
    ds.add_new((group << 16) | (block << 8) | offset, vr, value)


def _item(**values):
    from pydicom import Dataset

    ds = Dataset()
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


def _seq(*items):
    return list(items)


def _shared_groups(c, c140):
    from pydicom import Dataset

    def g(keyword, default=None, source=None):
        for holder in ((source,) if source is not None else (c, c140)):
            if keyword in holder:
                return holder[keyword].value
        return default

    shared = Dataset()
    shared.MRImagingModifierSequence = [_item(PixelBandwidth=g("PixelBandwidth", 0), MagnetizationTransfer=g("MagnetizationTransfer", "NONE"),
                                              BloodSignalNulling=g("BloodSignalNulling", "NO"), Tagging=g("Tagging", "NONE"),
                                              TransmitterFrequency=float(g("ImagingFrequency", 0)))]
    coil = _item(ReceiveCoilName=g("ReceiveCoilName", ""), ReceiveCoilManufacturerName=g("ReceiveCoilManufacturerName", ""),
                 ReceiveCoilType=g("ReceiveCoilType", "MULTICOIL"), QuadratureReceiveCoil=g("QuadratureReceiveCoil", "NO"))
    if "MultiCoilElementName" in c140:
        coil.MultiCoilDefinitionSequence = [_item(MultiCoilElementName=c140.MultiCoilElementName,
                                                  MultiCoilElementUsed=g("MultiCoilElementUsed", "YES"))]
    shared.MRReceiveCoilSequence = [coil]
    transmit = str(g("TransmitCoilName", "") or "")
    shared.MRTransmitCoilSequence = [_item(TransmitCoilName=transmit[:1] if transmit else "",
                                           TransmitCoilManufacturerName=g("TransmitCoilManufacturerName", ""),
                                           TransmitCoilType=g("TransmitCoilType", "BODY"))]
    timing = _item(RepetitionTime=g("RepetitionTime", 0), EchoTrainLength=g("EchoTrainLength", 1), FlipAngle=g("FlipAngle", 90))
    if "OperatingModeSequence" in c140:
        timing.OperatingModeSequence = c140.OperatingModeSequence
    timing.GradientOutputType = g("GradientOutputType", "DB_DT")
    timing.GradientOutput = g("GradientOutput", 0.0)
    timing.SpecificAbsorptionRateSequence = [_item(SpecificAbsorptionRateDefinition=g("SpecificAbsorptionRateDefinition", "IEC_WHOLE_BODY"),
                                                   SpecificAbsorptionRateValue=g("SpecificAbsorptionRateValue", 0.0))]
    timing.RFEchoTrainLength = g("RFEchoTrainLength", 0)
    timing.GradientEchoTrainLength = g("GradientEchoTrainLength", 0)
    shared.MRTimingAndRelatedParametersSequence = [timing]
    shared.MRModifierSequence = [_item(**{k: g(k, d) for k, d in (
        ("InversionRecovery", "NO"), ("FlowCompensation", "NONE"), ("Spoiling", "NONE"), ("T2Preparation", "NO"),
        ("SpectrallySelectedExcitation", "NONE"), ("SpatialPresaturation", "NONE"), ("ParallelReductionFactorInPlane", 1.0),
        ("ParallelAcquisition", "NO"), ("ParallelAcquisitionTechnique", ""), ("PartialFourier", "NO"),
        ("ParallelReductionFactorOutOfPlane", 1.0), ("ParallelReductionFactorSecondInPlane", 1.0))})]
    shared.MRAveragesSequence = [_item(NumberOfAverages=g("NumberOfAverages", 1))]
    direction = {"COL": "COLUMN", "ROW": "ROW"}.get(str(g("InPlanePhaseEncodingDirection", "ROW")), "ROW")
    shared.MRFOVGeometrySequence = [_item(PercentSampling=g("PercentSampling", 100), PercentPhaseFieldOfView=g("PercentPhaseFieldOfView", 100),
                                          InPlanePhaseEncodingDirection=direction,
                                          MRAcquisitionFrequencyEncodingSteps=g("MRAcquisitionFrequencyEncodingSteps", 0),
                                          MRAcquisitionPhaseEncodingStepsInPlane=g("MRAcquisitionPhaseEncodingStepsInPlane", 0),
                                          MRAcquisitionPhaseEncodingStepsOutOfPlane=g("MRAcquisitionPhaseEncodingStepsOutOfPlane", 1))]
    anatomy = str(_pvalue(c, MR004, 0x97, "") or "")
    region = _item(CodeValue="", CodingSchemeDesignator="", CodeMeaning="")
    if anatomy.count(".") >= 2:
        scheme, code, meaning = anatomy.split(".", 2)
        region = _item(CodeValue=code, CodingSchemeDesignator=scheme, CodeMeaning=meaning)
    shared.FrameAnatomySequence = [_item(AnatomicRegionSequence=[region], FrameLaterality=g("FrameLaterality", "U"))]
    return shared


def build(folder: Path, par_path: Path, rec_path: Path, out_path: Path, strict: bool = False,
          files: list | None = None) -> dict:
    """Write the Enhanced MR file ``out_path``; return a small report (frames, bytes, notes).

    ``files``: the classic files of dynamic 1 (default: every visible file of ``folder``).
    """
    import numpy as np
    from pydicom import Dataset
    from pydicom.dataset import FileMetaDataset
    from pydicom.filewriter import write_file_meta_info

    folder, par_path, rec_path, out_path = Path(folder), Path(par_path), Path(rec_path), Path(out_path)
    if out_path.exists():
        from dcmpipe.safefile import TargetExistsError

        raise TargetExistsError(out_path)
    classic = read_classic(folder, files)
    try:
        parsed = par.read_par(par_path)
    except par.ParError as exc:
        raise PhilipsError(str(exc)) from None
    dyn1 = check_inputs(classic, parsed, rec_path, folder)
    by_key = {_key_of_classic(ds): (path, ds) for path, ds in classic}
    records = parsed.records
    size = parsed.image_bytes()
    nframes = len(records)
    per_dynamic = len(classic)
    first = classic[0][1]
    c140 = first[private_tag(first, MR005, 0x0F)].value[0]

    # -- top level: the classic file minus per-image values, plus the classic 140F values ---------------
    top = Dataset()
    # Content Date, MR Acquisition Type and Acquisition Number stay at the top as well (the scanner keeps both copies).
    drop = (set(PER_IMAGE_PUBLIC) - {0x00080023, 0x00180023, 0x00200012}) | set(DROP_PUBLIC) | {0x7FE00010}
    for creator, offset in PER_IMAGE_PRIVATE + DROP_PRIVATE:
        tag = private_tag(first, creator, offset)
        if tag is not None:
            drop.add(tag)
    for element in first:
        if element.tag not in drop:
            top.add(element)
    for element in c140:
        if element.tag not in FG_ONLY and element.tag not in top:
            top.add(element)
    if strict and "VelocityEncodingDirection" in top and not any(float(v) for v in top.VelocityEncodingDirection):
        del top.VelocityEncodingDirection
        if "VelocityEncodingMinimumValue" in top:
            del top.VelocityEncodingMinimumValue
    contrast = str(c140.get("AcquisitionContrast", "UNKNOWN"))
    image_type = list(first.ImageType)[:2] if "ImageType" in first else ["ORIGINAL", "PRIMARY"]
    top.ImageType = image_type + [contrast, "NONE"]
    top.SOPClassUID = ENHANCED_MR
    top.SOPInstanceUID = _uid()
    now = datetime.now()
    top.InstanceCreationDate, top.InstanceCreationTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    series_start = str(c140.get("AcquisitionDateTime", "") or (str(first.get("SeriesDate", "")) + str(first.get("SeriesTime", ""))))
    top.AcquisitionDateTime = series_start
    top.ContentDate, top.ContentTime = series_start[:8], series_start[8:]
    top.ContentQualification = "RESEARCH"
    top.ResonantNucleus = str(first.get("ImagedNucleus", "1H") or "1H")
    top.BurnedInAnnotation = "NO"
    top.AcquisitionContextSequence = []
    top.NumberOfFrames = nframes
    top.InstanceNumber = 1
    if "AcquisitionDuration" in first:
        top.AcquisitionDuration = first.AcquisitionDuration
    labels = sorted({r["label"] for r in records})
    asl = int(_pvalue(first, MR005, 0x28, 0) or 0) > 0 or len(labels) > 1
    types = sorted({r["type"] for r in records})
    org_uid = _uid()
    dims = [(0x00209056, 0x00209111, "Stack ID", None), (0x00209057, 0x00209111, "In-Stack Position Number", None),
            (0x00209128, 0x00209111, "Temporal Position Index", None)]
    if asl:
        dims.append((0x20051429, 0x2005140F, "Private Label Type", MR005[1]))
    if len(types) > 1:
        dims.append((0x20051011, 0x2005140F, "Private ImageTypeMR", MR005[1]))
    top.DimensionOrganizationSequence = [_item(DimensionOrganizationUID=org_uid)]
    index_items = []
    for pointer, group_pointer, label, creator in dims:
        item = _item(DimensionOrganizationUID=org_uid, DimensionIndexPointer=pointer, FunctionalGroupPointer=group_pointer)
        if creator:
            item.DimensionIndexPrivateCreator = creator
            item.FunctionalGroupPrivateCreator = creator
        item.DimensionDescriptionLabel = label
        index_items.append(item)
    top.DimensionIndexSequence = index_items
    shared = _shared_groups(first, c140)
    shared_private = Dataset()
    for keyword in ("InstanceCreatorUID",):
        if keyword in first:
            setattr(shared_private, keyword, first[keyword].value)
    shared_private.SOPClassUID = MR_IMAGE
    if "NumberOfPhaseEncodingSteps" in first:
        shared_private.NumberOfPhaseEncodingSteps = first.NumberOfPhaseEncodingSteps
    _put_private(shared, MR005, 0x14, 0x0E, "SQ", [shared_private])
    top.SharedFunctionalGroupsSequence = [shared]

    # -- frame order and per-frame values ----------------------------------------------------------------
    def frame_sort(r):
        return (r["label"], r["slice"], r["echo"], r["phase"], par.TYPE_RANK.get(r["type"], 4 + r["type"]),
                r["sequence"], r["b_number"], r["gradient_number"], r["dynamic"])

    ordered = sorted(records, key=frame_sort)
    dyn_time1 = {}
    for r in records:
        if r["dynamic"] == 1:
            dyn_time1[_key_of_record(r)] = r["dyn_time"]

    # Min/max stored value of every REC image (for the Max/Min FP estimates of dynamics > 1),
    # read a few megabytes at a time.
    dtype = np.uint8 if records[0]["bits"] == 8 else np.dtype("<u2")
    count_images = max(r["index"] for r in records) + 1
    mins = np.empty(count_images, dtype=np.int64)
    maxs = np.empty(count_images, dtype=np.int64)
    done = 0
    for chunk in rec_chunks(rec_path, 0, size, list(range(count_images))):
        part = np.frombuffer(chunk, dtype=dtype).reshape(-1, size // dtype.itemsize)
        mins[done:done + len(part)] = part.min(axis=1)
        maxs[done:done + len(part)] = part.max(axis=1)
        done += len(part)
        del part

    templates = {}
    duration_ms = float(first.get("AcquisitionDuration", 0) or 0) * 1000.0
    for key, (path, ds) in by_key.items():
        templates[key] = _frame_template(ds, series_start, duration_ms, len(dims))

    # -- writing -------------------------------------------------------------------------------------------
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ENHANCED_MR
    meta.MediaStorageSOPInstanceUID = top.SOPInstanceUID
    meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    from dcmpipe import __version__

    meta.ImplementationClassUID = "1.2.826.0.1.3680043.8.498.1"
    meta.ImplementationVersionName = f"DCMPIPE_{__version__}"[:16]
    head = io.BytesIO()
    head.write(b"\0" * 128 + b"DICM")
    from pydicom.filebase import DicomFileLike

    fl = DicomFileLike(head)
    fl.is_little_endian, fl.is_implicit_VR = True, False
    write_file_meta_info(fl, meta, enforce_standard=True)
    _undefined_lengths(top)
    before = Dataset()
    after = Dataset()
    for element in top:
        (before if element.tag < 0x52009230 else after).add(element)
    head.write(_encode(before))

    notes = {"frames": nframes, "cloned": nframes - per_dynamic, "estimated_fp": 0, "label_dims": asl}

    def items():
        yield head.getvalue()
        yield struct.pack("<HH2sHI", 0x5200, 0x9230, b"SQ", 0, 0xFFFFFFFF)
        batch, batch_bytes = [], 0
        for r in ordered:
            key = _key_of_record(r)
            path, ds = by_key[key]
            template = templates[key]
            first_record = dyn1[key]
            dyn = r["dynamic"]
            values = template.base.copy()
            # Private enumerated dimensions: Philips writes the 0-based code; --strict a 1-based rank.
            values["div"] = [1, r["slice"], dyn]
            if asl:
                values["div"].append(labels.index(r["label"]) + 1 if strict else r["label"] - 1)
            if len(types) > 1:
                values["div"].append(types.index(r["type"]) + 1 if strict else r["type"])
            values["temporal_index"] = dyn
            if dyn != 1:
                shift = r["dyn_time"] - dyn_time1[key]
                values["frame_time"] = _dt_plus(template.base["frame_time"], shift)
                values["content_time"] = values["frame_time"][8:]
                values["sop"] = _uid()
                values["instance"] = str(int(template.base["instance"]) + (dyn - 1) * per_dynamic)
                values["dynamic"] = str(dyn)
                values["dyn_time"] = r["dyn_time"]
                values["fmri"] = int(r["fmri_status"])
                values["wc"], values["ww"] = str(r["window_center"]), str(r["window_width"])
                values["wc_private"], values["ww_private"] = values["wc"], values["ww"]
                if r["rescale_slope"] != first_record["rescale_slope"]:
                    values["rs"] = values["rs_private"] = _ds_text(r["rescale_slope"])
                if r["rescale_intercept"] != first_record["rescale_intercept"]:
                    values["ri"] = values["ri_private"] = _ds_text(r["rescale_intercept"])
                values["ss"] = r["scale_slope"] if r["scale_slope"] != first_record["scale_slope"] else values["ss"]
                rs, ri, ss = r["rescale_slope"], r["rescale_intercept"], r["scale_slope"] or 1.0
                values["max_fp"] = (float(maxs[r["index"]]) * rs + ri) / (rs * ss)
                values["min_fp"] = (float(mins[r["index"]]) * rs + ri) / (rs * ss)
                notes["estimated_fp"] += 1
            batch.append(ITEM_START + template.render(values) + ITEM_END)
            batch_bytes += len(batch[-1])
            if batch_bytes > (4 << 20):
                yield b"".join(batch)
                batch, batch_bytes = [], 0
        yield b"".join(batch)
        yield b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
        if len(after):
            yield _encode(after)
        total = nframes * size
        yield struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW" if records[0]["bits"] > 8 else b"OB", 0, total + (total & 1))
        yield from rec_ranges(rec_path, 0, size, [r["index"] for r in ordered])
        if total & 1:
            yield b"\0"

    _streamed_file(out_path, items())
    notes["bytes"] = nframes * size
    return notes


def _frame_template(ds, series_start: str, duration_ms: float, ndims: int):
    """The per-frame functional group item of one classic file, as a splice-able byte template."""
    from pydicom import Dataset

    private_item = Dataset()
    for tag in PER_IMAGE_PUBLIC:
        if tag in ds:
            private_item.add(_copied(ds[tag]))
    c140 = ds[private_tag(ds, MR005, 0x0F)].value[0]
    for keyword in ("KSpaceFiltering", "DiffusionAnisotropyType"):
        if keyword in c140 and keyword not in private_item:
            private_item.add(c140[keyword])
    if "InversionTime" not in private_item:
        inversion = _pvalue(ds, MR001, 0xA8, "0")
        private_item.InversionTime = inversion
    _copy_privates(ds, private_item, PER_IMAGE_PRIVATE)
    orientation_tag = private_tag(private_item, DD001, 0x0B)
    if orientation_tag is not None:
        private_item[orientation_tag].value = ""  # the scanner leaves Slice Orientation empty in frames
    # The private Image Position is the corner of the first pixel (SPEC 1.5).
    ipp = [float(v) for v in ds.ImagePositionPatient]
    iop = [float(v) for v in ds.ImageOrientationPatient]
    row_spacing, col_spacing = (float(v) for v in ds.PixelSpacing)
    corner = [ipp[k] - iop[k] * col_spacing / 2 - iop[3 + k] * row_spacing / 2 for k in range(3)]
    private_item.ImagePositionPatient = [_ds_text(v) for v in corner]

    frame = Dataset()
    frame.MREchoSequence = [_item(EffectiveEchoTime=float(ds.get("EchoTime", 0) or 0))]
    c140_map = c140.get("MetaboliteMapDescription", "WATER")
    frame.MRMetaboliteMapSequence = [_item(MetaboliteMapDescription=c140_map)]
    contrast = str(c140.get("AcquisitionContrast", "UNKNOWN"))
    frame_type = list(c140.get("FrameType", []) or [])
    if not frame_type or not any(frame_type):
        frame_type = list(ds.ImageType)[:2] + [contrast, "NONE"]
    frame.MRImageFrameTypeSequence = [_item(FrameType=frame_type, PixelPresentation=c140.get("PixelPresentation", "MONOCHROME"),
                                            VolumetricProperties=c140.get("VolumetricProperties", "VOLUME"),
                                            VolumeBasedCalculationTechnique=c140.get("VolumeBasedCalculationTechnique", "NONE"),
                                            ComplexImageComponent=c140.get("ComplexImageComponent", "MAGNITUDE"),
                                            AcquisitionContrast=contrast)]
    content = _item(StackID="1", InStackPositionNumber=int(_pvalue(ds, DD001, 0x0A, 1)))
    frame.FrameContentSequence = [content]
    frame.PlanePositionSequence = [_item(ImagePositionPatient=ds.ImagePositionPatient)]
    frame.PlaneOrientationSequence = [_item(ImageOrientationPatient=ds.ImageOrientationPatient)]
    measures = _item(SliceThickness=ds.get("SliceThickness", 1))
    if "SpacingBetweenSlices" in ds:
        measures.SpacingBetweenSlices = ds.SpacingBetweenSlices
    measures.PixelSpacing = ds.PixelSpacing
    frame.PixelMeasuresSequence = [measures]
    voi = Dataset()
    frame.FrameVOILUTSequence = [voi]
    transform = Dataset()
    frame.PixelValueTransformationSequence = [transform]
    transform.RescaleType = "US"
    _put_private(frame, MR005, 0x14, 0x0F, "SQ", [private_item])

    def ptag(holder, creator, offset):
        return private_tag(holder, creator, offset)

    variable = {
        "frame_time": (content, 0x00189074, "DT"), "reference_time": (content, 0x00189151, "DT"),
        "duration": (content, 0x00189220, "FD"), "temporal_index": (content, 0x00209128, "UL"),
        "div": (content, 0x00209157, "UL"),
        "wc": (voi, 0x00281050, "DS"), "ww": (voi, 0x00281051, "DS"),
        "ri": (transform, 0x00281052, "DS"), "rs": (transform, 0x00281053, "DS"),
        "sop": (private_item, 0x00080018, "UI"), "content_time": (private_item, 0x00080033, "TM"),
        "instance": (private_item, 0x00200013, "IS"), "dynamic": (private_item, 0x00200100, "IS"),
        "wc_private": (private_item, 0x00281050, "DS"), "ww_private": (private_item, 0x00281051, "DS"),
        "ri_private": (private_item, 0x00281052, "DS"), "rs_private": (private_item, 0x00281053, "DS"),
    }
    for name, creator, offset, vr in (("max_fp", MR001, 0x0B, "FL"), ("min_fp", MR001, 0x0C, "FL"),
                                      ("ss", MR001, 0x0E, "FL"), ("dyn_time", MR001, 0xA0, "FL"),
                                      ("fmri", MR001, 0x63, "SS")):
        tag = ptag(private_item, creator, offset)
        if tag is not None:
            variable[name] = (private_item, tag, vr)
    acquired = str(ds.get("AcquisitionDate", "")) + str(ds.get("AcquisitionTime", ""))
    base = {
        "frame_time": acquired or series_start, "reference_time": series_start, "duration": duration_ms,
        "temporal_index": 1, "div": [1] * ndims,
        "wc": str(ds.get("WindowCenter", "0")), "ww": str(ds.get("WindowWidth", "0")),
        "ri": str(ds.get("RescaleIntercept", "0")), "rs": str(ds.get("RescaleSlope", "1")),
        "sop": str(ds.SOPInstanceUID), "content_time": str(ds.get("ContentTime", "")),
        "instance": str(ds.get("InstanceNumber", "1")), "dynamic": str(ds.get("TemporalPositionIdentifier", "1")),
    }
    base["wc_private"], base["ww_private"], base["ri_private"], base["rs_private"] = base["wc"], base["ww"], base["ri"], base["rs"]
    for name in ("max_fp", "min_fp", "ss", "dyn_time", "fmri"):
        if name in variable:
            holder, tag, vr = variable[name]
            base[name] = holder[tag].value
    for name in [n for n in ("max_fp", "min_fp", "ss", "dyn_time", "fmri") if n not in variable]:
        base[name] = 0
    # Variable elements the template does not hold are still rendered where they live.
    template = _Template(frame, variable)
    template.base = base
    return template
