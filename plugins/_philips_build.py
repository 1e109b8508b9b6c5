"""dcms2e's builder: classic Philips MR files of dynamic 1 + PAR/REC -> one Philips-style Enhanced MR file.

A re-arrangement of what the classic files and the PAR already carry (../shared/philips/SPEC.md 2.4),
written without pydicom (which reads only files the lean reader leaves to it):

- Classic files: the host's lean reader; files laid out alike are walked once (``_philips_lean``).
  Values copied from them go out as the bytes they were read as; new elements are encoded as
  pydicom encodes them (``_philips_write``), sequences and items with undefined length.
- PAR: the image lines as numpy columns (``_philips_par``); the frame order by ``lexsort``.
- Per-frame items: one plan per layout of classic files (elements as they lie in the file, values
  computed from the file, and *slots*: the values that change per frame), realized per classic file
  as a template of fixed byte strings between slots.  Each slot is a column of encoded elements
  (numpy-made, or one encoding per distinct value); the frames of a chunk are interleaved by slice
  assignment and joined once.
- The header's length is computed before its bytes, so the pixel data is copied in a background
  thread (REC order, one chunk mapped at a time, one ``pwritev`` per run of consecutive frames) to its
  place in the temporary file while the header is made; every written range goes to the disk's
  write-back at once.  Another thread takes each REC image's min/max (MR Max/Min FP estimates) from
  the time the PAR is read.  Temporary file + link, never overwriting; with ``fsync`` the file is
  flushed to disk before it gets its name.
- Memory: the classic files, the PAR columns, the header's bytes (about 2 kB per frame), the slot
  columns and one 16 MB chunk of the REC at a time; never the whole REC.
"""

from __future__ import annotations

import functools
import os
import struct
from datetime import datetime, timedelta
from pathlib import Path

from . import _philips_par as par
from . import _philips_write as w
from ._philips_dicom import DD001, ENHANCED_MR, MR001, MR005, MR_IMAGE, Background, PhilipsError

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
EXPLICIT_LE = "1.2.840.10008.1.2.1"
FRAMES_PER_JOIN = 2000  # per-frame items joined and written this many at a time
COLUMNWISE = True  # False: frame by frame (what classic files whose slots lie in another order get; for tests)


class _Phases:
    """How long each phase took, logged at debug level (``dcmpipe -d dcms2e ...``)."""

    def __init__(self):
        import logging
        import time

        self._clock = time.perf_counter
        self._on = logging.getLogger("dcmpipe").isEnabledFor(logging.DEBUG)
        self._marks = [("start", self._clock())] if self._on else []

    def __call__(self, label: str) -> None:
        if self._on:
            self._marks.append((label, self._clock()))

    def log(self) -> None:
        if self._on and len(self._marks) > 1:
            import logging

            parts = [f"{label} {1000 * (t - previous):.0f}"
                     for (_, previous), (label, t) in zip(self._marks[:-1], self._marks[1:])]
            logging.getLogger("dcmpipe").debug("dcms2e phases (ms): %s", ", ".join(parts))


def _uid() -> str:
    """A new random UID under ``UID_ROOT`` (as generate_uid() makes them, without its per-call checks)."""
    import secrets

    return f"{UID_ROOT}{secrets.randbelow(_UID_RANGE)}"[:64]


def _uid_prefix(count: int) -> tuple[str, int]:
    """(a new random prefix, first number): ``prefix + str(first + k)`` for k < count are new UIDs of one length.

    One random root per file (as many random digits as fit), then a counter with a fixed number of
    digits (no leading zero): unique like ``count`` random UIDs, made without one random draw each.
    """
    import secrets

    digits = len(str(max(count, 1))) + 1
    first = 10 ** (digits - 1)
    random_digits = min(64 - len(UID_ROOT) - 1 - digits, 30)
    root = secrets.randbelow(9 * 10 ** (random_digits - 1)) + 10 ** (random_digits - 1)
    return f"{UID_ROOT}{root}.", first


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
    digits14 = base[:14]
    if len(digits14) == 14 and digits14.isascii() and digits14.isdigit():  # strptime's first call costs 10 ms
        stamp = datetime(int(digits14[:4]), int(digits14[4:6]), int(digits14[6:8]), int(digits14[8:10]),
                         int(digits14[10:12]), int(digits14[12:14]))
    else:
        stamp = datetime.strptime(digits14, "%Y%m%d%H%M%S")
    stamp += timedelta(seconds=float("0." + (fraction or "0")))
    stamp += timedelta(seconds=seconds)
    digits = max(len(fraction), 2) if fraction else 0
    out = stamp.strftime("%Y%m%d%H%M%S")
    if digits:
        out += "." + f"{stamp.microsecond:06d}"[:digits]
    return out


# -- reading and checking the inputs --------------------------------------------------------------


class Classic:
    """One classic file: its lean data set, its private blocks, its 140F item and PAR key."""

    __slots__ = ("path", "ds", "blocks", "c140", "key", "data", "layout")

    def __init__(self, path: Path, ds, data=None, layout=None):
        self.path, self.ds = path, ds
        self.data, self.layout = data, layout  # the bytes the lean data set lies in; files alike share a layout
        self.blocks = {group: _blocks_of(ds, group) for group in (0x2001, 0x2005)}
        self.c140 = None
        self.key = None

    def tag(self, creator: tuple, offset: int):
        """The full tag of a private element by creator and offset, or None if its block is absent."""
        group, name = creator
        block = self.blocks[group].get(name)
        return None if block is None else (group << 16) | (block << 8) | offset

    def element(self, creator: tuple, offset: int):
        tag = self.tag(creator, offset)
        return None if tag is None else self.ds.get(tag)

    def pvalue(self, creator: tuple, offset: int, default=None):
        el = self.element(creator, offset)
        if el is None:
            return default
        value = el.value
        return default if value is None or value == "" else value


def _blocks_of(ds, group: int) -> dict:
    """{creator name: block} of one group of a lean data set (the first block of a creator wins)."""
    raw = getattr(ds, "_raw", None)  # the host's LeanDataset: its tags
    low, high = (group << 16) | 0x10, (group << 16) | 0xFF
    tags = sorted(t for t in raw if low <= t <= high) if raw is not None else \
        [t for t in range(low, high + 1) if t in ds]
    blocks = {}
    for tag in tags:
        value = ds.get(tag).value
        if isinstance(value, (bytes, bytearray, memoryview)):
            value = bytes(value).decode("latin-1")
        blocks.setdefault(str(value).strip(), tag & 0xFF)
    return blocks


def _lean_copy(ds, path: Path):
    """A pydicom data set (a file the lean reader leaves to pydicom) as a lean one: encoded as explicit VR
    little endian, then walked (so every file is handled alike from here on)."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    from dcmpipe.enhanced import lean_item

    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    try:
        write_dataset(fp, ds)
        data = w.ITEM_START + fp.getvalue() + w.ITEM_END
        item, _ = lean_item(data)
    except Exception as exc:  # noqa: BLE001 - anything pydicom or the walk refuses: one line
        raise PhilipsError(f"{path}: cannot be re-encoded as explicit VR little endian ({exc})") from None
    return item, data


def read_classic(folder: Path, files: list | None = None) -> list[Classic]:
    """The classic files (``files``, else every visible file of ``folder``), sorted by path."""
    from dcmpipe.enhanced import EnhancedError, LeanDataset

    from ._philips_lean import read_series

    if files is None:
        files = [p for p in Path(folder).iterdir() if p.is_file() and not p.name.startswith(".")]
    paths = sorted(Path(p) for p in files)
    out = []
    series = read_series(paths)
    for path in paths:
        try:
            _, ds, data, layout = next(series)
        except EnhancedError as exc:
            reason = str(exc).removeprefix(f"{path}: ")
            raise PhilipsError(f"{path}: not a readable DICOM file ({reason})") from None
        if not isinstance(ds, LeanDataset):
            ds, data = _lean_copy(ds, path)
        out.append(Classic(path, ds, data, layout))
    if not out:
        raise PhilipsError(f"{folder}: no classic DICOM files")
    return out


def _text(ds, tag: int, default: str = "") -> str:
    """The value of a text element as pydicom's ``str()`` gives it (padding stripped), or ``default``."""
    el = ds.get(tag)
    if el is None:
        return default
    v = el.value
    if isinstance(v, list):
        return "\\".join(str(x) for x in v)
    return str(v) if v is not None else ""


def _key_of_classic(c: Classic) -> tuple:
    """(slice, echo, phase, image type, sequence, b number, gradient number, label) of a classic file."""
    values = []
    for creator, offset, default in ((DD001, 0x0A, 1), (DD001, 0x08, 1), (MR001, 0x11, "M"),
                                     (MR001, 0x6E, "UNSPECIFIED"), (MR005, 0x12, 1), (MR005, 0x13, 1),
                                     (MR005, 0x29, "")):
        el = c.element(creator, offset)
        if el is not None and el.VR == "UN":
            raise PhilipsError(f"{c.path}: private element ({el.tag >> 16:04X},{el.tag & 0xFFFF:04X}) of "
                               f"'{creator[1]}' has no VR (an implicit VR file?); classic files in explicit VR "
                               "little endian are needed")
        value = None if el is None else el.value
        values.append(default if value is None or value == "" else value)
    slice_number, phase, image_type, sequence, b_number, gradient, label = values
    echo = c.ds.get(0x00180086)
    return (int(slice_number), int(echo and echo.value or 1), int(phase),
            par.IMAGE_TYPES.index(str(image_type).strip().upper()), par.SEQUENCES.index(str(sequence).strip().upper()),
            int(b_number), int(gradient), 2 if str(label).strip().upper() == "LABEL" else 1)


KEY_COLUMNS = ("slice", "echo", "phase", "type", "sequence", "b_number", "gradient_number", "label")


def _row_keys(cols: dict, keys: list) -> "object":
    """For every PAR row, the index in ``keys`` (classic keys, tuples of KEY_COLUMNS) of its key, -1 if none."""
    import numpy as np

    n = len(cols["slice"])
    code = np.zeros(n, dtype=np.int64)
    key_codes = [0] * len(keys)
    radix = 1
    for k, name in enumerate(KEY_COLUMNS):
        values, inverse = np.unique(cols[name], return_inverse=True)
        if radix * (len(values) + 1) >= 2 ** 62:
            break
        code += inverse.reshape(-1) * radix
        lookup = {v: i for i, v in enumerate(values.tolist())}
        for j, key in enumerate(keys):
            key_codes[j] += lookup.get(key[k], len(values)) * radix
        radix *= len(values) + 1
    else:
        order = np.argsort(key_codes, kind="stable")
        sorted_codes = np.asarray(key_codes, dtype=np.int64)[order]
        at = np.searchsorted(sorted_codes, code).clip(0, max(len(keys) - 1, 0))
        found = sorted_codes[at] == code if len(keys) else np.zeros(n, dtype=bool)
        return np.where(found, order[at], -1)
    # Too many distinct values to code the key as one integer: by tuples.
    lookup = {key: j for j, key in enumerate(keys)}
    rows = zip(*(cols[name].tolist() for name in KEY_COLUMNS))
    return np.fromiter((lookup.get(key, -1) for key in rows), dtype=np.int64, count=n)


def check_inputs(classic: list, parsed: par.ParFile, rec_path: Path, folder) -> dict:
    """Every check of SPEC 2.4 before anything is written; returns {key: PAR row} of dynamic 1."""
    import numpy as np

    problems = []
    first = classic[0].ds
    series = _text(first, 0x0020000E)
    for c in classic:
        ds = c.ds
        sop_class = _text(ds, 0x00080016)
        if sop_class != MR_IMAGE:
            raise PhilipsError(f"{c.path}: not a classic MR Image Storage file (SOP Class {sop_class or None})")
        manufacturer = _text(ds, 0x00080070)
        if "PHILIPS" not in manufacturer.upper():
            raise PhilipsError(f"{c.path}: not a Philips file (Manufacturer {manufacturer!r})")
        seq = c.element(MR005, 0x0F)
        items = seq.value if seq is not None and seq.VR == "SQ" else None
        if not items:
            raise PhilipsError(f"{c.path}: no private group (2005,140F) of 'Philips MR Imaging DD 005' with the "
                               "enhanced attributes (older releases do not write it)")
        c.c140 = items[0]
        if _text(ds, 0x0020000E) != series:
            raise PhilipsError(f"{c.path}: another series than {classic[0].path.name} (Series Instance UID differs)")
        if 0x7FE00010 not in ds:
            raise PhilipsError(f"{c.path}: no pixel data")
    dynamics = set()
    for c in classic:
        el = c.ds.get(0x00200100)
        dynamics.add(int(el.value or 1) if el is not None else 1)
    if dynamics != {1}:
        problems.append(f"the classic files hold dynamics {sorted(dynamics)}, expected only dynamic 1")
    cols = parsed.columns
    acq = str(parsed.get("Acquisition nr", "")).strip()
    if acq and _text(first, 0x00200012).strip() != acq:
        problems.append(f"acquisition number differs: classic {_text(first, 0x00200012) or None}, PAR {acq}")
    for name, tag, key in (("Rows", 0x00280010, "recon_y"), ("Columns", 0x00280011, "recon_x")):
        values = set(_codes(cols[key])[0].tolist())
        el = first.get(tag)
        if el is None or values != {int(el.value)}:
            problems.append(f"{name} differ: classic {el.value if el is not None else None}, PAR {sorted(values)}")
    bits = first.get(0x00280100)
    if bits is None or set(_codes(cols["bits"])[0].tolist()) != {int(bits.value)}:
        problems.append("bits per pixel differ between the classic files and the PAR")
    for c in classic:
        c.key = _key_of_classic(c)
    seen = {}
    for c in classic:
        if c.key in seen:
            problems.append(f"{seen[c.key].name} and {c.path.name} have the same slice/echo/type/label")
        seen.setdefault(c.key, c.path)
    rows1 = np.flatnonzero(cols["dynamic"] == 1)
    dyn1 = {}
    for row, key in zip(rows1.tolist(), zip(*(cols[name][rows1].tolist() for name in KEY_COLUMNS))):
        dyn1[key] = row
    slices_par = set(_codes(cols["slice"])[0].tolist())
    slices_classic = {c.key[0] for c in classic}
    if slices_par != slices_classic:
        problems.append(f"slice count differs: classic {len(slices_classic)}, PAR {len(slices_par)}")
    if len(dyn1) != len(classic):
        problems.append(f"{len(classic)} classic files but {len(dyn1)} PAR images of dynamic 1")
    if problems:
        raise PhilipsError(f"{folder}: " + "; ".join(problems) + "; nothing written")
    size = parsed.image_bytes()
    rec_size = rec_path.stat().st_size
    needed = (int(cols["index"].max()) + 1) * size
    if rec_size < needed or int(cols["index"].min()) < 0:
        raise PhilipsError(f"{rec_path}: {rec_size} bytes, the PAR needs {needed} (truncated REC); nothing written")
    fd = os.open(rec_path, os.O_RDONLY)
    try:
        for c in classic:
            ds = c.ds
            row = dyn1.get(c.key)
            if row is None:
                raise PhilipsError(f"{c.path}: no PAR image of dynamic 1 with its slice/echo/type/label; "
                                   "nothing written")
            index = int(cols["index"][row])
            if os.pread(fd, size, index * size) != bytes(ds.get(0x7FE00010).value[:size]):
                raise PhilipsError(f"{c.path}: pixel data differs from REC image {index} of dynamic 1 "
                                   "(not the same acquisition?); nothing written")
            rs, ri = float(_number(ds, 0x00281053, 1)), float(_number(ds, 0x00281052, 0))
            ss = float(c.pvalue(MR001, 0x0E, 1.0))
            par_rs, par_ri = float(cols["rescale_slope"][row]), float(cols["rescale_intercept"][row])
            par_ss = float(cols["scale_slope"][row])
            if (abs(rs - par_rs) > 1e-5 * max(1, abs(rs)) + 1e-5
                    or abs(ri - par_ri) > 1e-5 * max(1, abs(ri)) + 1e-5
                    or abs(ss - par_ss) > 1e-5 * abs(ss) + 1e-9):
                raise PhilipsError(f"{c.path}: rescale slope/intercept or scale slope differ from the PAR's dynamic 1; "
                                   "nothing written")
    finally:
        os.close(fd)
    return dyn1


def _number(ds, tag: int, default):
    """A number-valued element's value (pydicom's ``ds.get(keyword, default)``)."""
    el = ds.get(tag)
    return default if el is None else el.value


# -- building: the top level and the shared groups ----------------------------------------------------


def _has(ds, tag: int) -> bool:
    return ds.get(tag) is not None


def _from(item: dict, name: str, holders: tuple, default) -> None:
    """``item[name] =`` the element of the first holder that has it (its bytes), else ``default`` encoded."""
    tag, vr = w.KEYWORDS[name]
    for holder in holders:
        el = holder.get(tag)
        if el is not None:
            item[tag] = w.copy_as(el, tag, vr)
            return
    item[tag] = w.value(tag, vr, default)


def _put(item: dict, name: str, v) -> None:
    tag, vr = w.KEYWORDS[name]
    item[tag] = w.value(tag, vr, v)


def _shared_groups(c: Classic, c140) -> dict:
    ds = c.ds
    both = (ds, c140)

    def value_of(name, default):
        tag = w.tag_of(name)
        for holder in both:
            el = holder.get(tag)
            if el is not None:
                return el.value
        return default

    shared = {}
    modifier = {}
    for name, default in (("PixelBandwidth", 0), ("MagnetizationTransfer", "NONE"), ("BloodSignalNulling", "NO"),
                          ("Tagging", "NONE")):
        _from(modifier, name, both, default)
    _put(modifier, "TransmitterFrequency", float(value_of("ImagingFrequency", 0)))
    _put(shared, "MRImagingModifierSequence", [modifier])
    coil = {}
    for name, default in (("ReceiveCoilName", ""), ("ReceiveCoilManufacturerName", ""),
                          ("ReceiveCoilType", "MULTICOIL"), ("QuadratureReceiveCoil", "NO")):
        _from(coil, name, both, default)
    if _has(c140, w.tag_of("MultiCoilElementName")):
        multi = {}
        _from(multi, "MultiCoilElementName", (c140,), "")
        _from(multi, "MultiCoilElementUsed", both, "YES")
        _put(coil, "MultiCoilDefinitionSequence", [multi])
    _put(shared, "MRReceiveCoilSequence", [coil])
    transmit = value_of("TransmitCoilName", "")
    transmit = str("\\".join(transmit) if isinstance(transmit, list) else transmit or "")
    transmit_item = {}
    _put(transmit_item, "TransmitCoilName", transmit[:1] if transmit else "")
    _from(transmit_item, "TransmitCoilManufacturerName", both, "")
    _from(transmit_item, "TransmitCoilType", both, "BODY")
    _put(shared, "MRTransmitCoilSequence", [transmit_item])
    timing = {}
    for name, default in (("RepetitionTime", 0), ("EchoTrainLength", 1), ("FlipAngle", 90)):
        _from(timing, name, both, default)
    if _has(c140, w.tag_of("OperatingModeSequence")):
        _from(timing, "OperatingModeSequence", (c140,), [])
    _from(timing, "GradientOutputType", both, "DB_DT")
    _from(timing, "GradientOutput", both, 0.0)
    sar = {}
    _from(sar, "SpecificAbsorptionRateDefinition", both, "IEC_WHOLE_BODY")
    _from(sar, "SpecificAbsorptionRateValue", both, 0.0)
    _put(timing, "SpecificAbsorptionRateSequence", [sar])
    _from(timing, "RFEchoTrainLength", both, 0)
    _from(timing, "GradientEchoTrainLength", both, 0)
    _put(shared, "MRTimingAndRelatedParametersSequence", [timing])
    modifiers = {}
    for name, default in (
            ("InversionRecovery", "NO"), ("FlowCompensation", "NONE"), ("Spoiling", "NONE"), ("T2Preparation", "NO"),
            ("SpectrallySelectedExcitation", "NONE"), ("SpatialPresaturation", "NONE"),
            ("ParallelReductionFactorInPlane", 1.0), ("ParallelAcquisition", "NO"), ("ParallelAcquisitionTechnique", ""),
            ("PartialFourier", "NO"), ("ParallelReductionFactorOutOfPlane", 1.0),
            ("ParallelReductionFactorSecondInPlane", 1.0)):
        _from(modifiers, name, both, default)
    _put(shared, "MRModifierSequence", [modifiers])
    averages = {}
    _from(averages, "NumberOfAverages", both, 1)
    _put(shared, "MRAveragesSequence", [averages])
    direction = value_of("InPlanePhaseEncodingDirection", "ROW")
    direction = {"COL": "COLUMN", "ROW": "ROW"}.get(str(direction), "ROW")
    fov = {}
    _from(fov, "PercentSampling", both, 100)
    _from(fov, "PercentPhaseFieldOfView", both, 100)
    _put(fov, "InPlanePhaseEncodingDirection", direction)
    _from(fov, "MRAcquisitionFrequencyEncodingSteps", both, 0)
    _from(fov, "MRAcquisitionPhaseEncodingStepsInPlane", both, 0)
    _from(fov, "MRAcquisitionPhaseEncodingStepsOutOfPlane", both, 1)
    _put(shared, "MRFOVGeometrySequence", [fov])
    anatomy = str(c.pvalue(MR004, 0x97, "") or "")
    region = {}
    code = ("", "", "")
    if anatomy.count(".") >= 2:
        scheme, value, meaning = anatomy.split(".", 2)
        code = (value, scheme, meaning)
    _put(region, "CodeValue", code[0])
    _put(region, "CodingSchemeDesignator", code[1])
    _put(region, "CodeMeaning", code[2])
    frame_anatomy = {}
    _put(frame_anatomy, "AnatomicRegionSequence", [region])
    _from(frame_anatomy, "FrameLaterality", both, "U")
    _put(shared, "FrameAnatomySequence", [frame_anatomy])
    shared_private = {}
    if _has(ds, w.tag_of("InstanceCreatorUID")):
        _from(shared_private, "InstanceCreatorUID", (ds,), "")
    _put(shared_private, "SOPClassUID", MR_IMAGE)
    if _has(ds, w.tag_of("NumberOfPhaseEncodingSteps")):
        _from(shared_private, "NumberOfPhaseEncodingSteps", (ds,), "")
    _put_private(shared, MR005, 0x14, 0x0E, w.sequence(0x2005140E, [shared_private]))
    return shared


def _put_private(item: dict, creator: tuple, block: int, offset: int, encoded) -> None:
    """A private element in Philips' own block (the pointers of the dimension index name it)."""
    group, name = creator
    item[(group << 16) | block] = w.text((group << 16) | block, "LO", name)
    item[(group << 16) | (block << 8) | offset] = encoded


def _multi(v) -> list:
    """A multi-valued decoded value as a list (a single value: a list of one)."""
    if v is None or v == "":
        return []
    return list(v) if isinstance(v, list) else [v]


def _top_level(classic: list, c140, nframes: int, dims: list, strict: bool, series_start: str) -> tuple:
    """(top-level elements {tag: bytes} without the functional groups, SOP Instance UID)."""
    first_c = classic[0]
    first = first_c.ds
    drop = (set(PER_IMAGE_PUBLIC) - {0x00080023, 0x00180023, 0x00200012}) | set(DROP_PUBLIC) | {0x7FE00010}
    for creator, offset in PER_IMAGE_PRIVATE + DROP_PRIVATE:
        tag = first_c.tag(creator, offset)
        if tag is not None:
            drop.add(tag)
    top = {}
    for el in first:
        if el.tag not in drop:
            top[el.tag] = el
    for el in c140:
        if el.tag not in FG_ONLY and el.tag not in top:
            top[el.tag] = el
    top = {tag: w.copy(el) for tag, el in top.items()}
    velocity, minimum = w.tag_of("VelocityEncodingDirection"), w.tag_of("VelocityEncodingMinimumValue")
    if strict and velocity in top:
        source = first if first.get(velocity) is not None and velocity not in drop else c140
        values = _multi(source.get(velocity).value)
        if not any(float(v) for v in values):
            del top[velocity]
            top.pop(minimum, None)
    contrast = _text(c140, w.tag_of("AcquisitionContrast"), "UNKNOWN")
    image_type = _multi(first.get(0x00080008).value)[:2] if first.get(0x00080008) is not None \
        else ["ORIGINAL", "PRIMARY"]
    _put(top, "ImageType", [str(v) for v in image_type] + [contrast, "NONE"])
    _put(top, "SOPClassUID", ENHANCED_MR)
    sop_uid = _uid()
    _put(top, "SOPInstanceUID", sop_uid)
    now = datetime.now()
    _put(top, "InstanceCreationDate", now.strftime("%Y%m%d"))
    _put(top, "InstanceCreationTime", now.strftime("%H%M%S"))
    _put(top, "AcquisitionDateTime", series_start)
    _put(top, "ContentDate", series_start[:8])
    _put(top, "ContentTime", series_start[8:])
    _put(top, "ContentQualification", "RESEARCH")
    _put(top, "ResonantNucleus", _text(first, w.tag_of("ImagedNucleus"), "1H") or "1H")
    _put(top, "BurnedInAnnotation", "NO")
    _put(top, "AcquisitionContextSequence", [])
    _put(top, "NumberOfFrames", nframes)
    _put(top, "InstanceNumber", 1)
    duration = first.get(w.tag_of("AcquisitionDuration"))
    if duration is not None:
        top[duration.tag] = w.copy_as(duration, duration.tag, "FD")
    org_uid = _uid()
    _put(top, "DimensionOrganizationSequence", [{w.tag_of("DimensionOrganizationUID"): w.keyword(
        "DimensionOrganizationUID", org_uid)}])
    index_items = []
    for pointer, group_pointer, label, creator in dims:
        item = {}
        _put(item, "DimensionOrganizationUID", org_uid)
        _put(item, "DimensionIndexPointer", pointer)
        _put(item, "FunctionalGroupPointer", group_pointer)
        if creator:
            _put(item, "DimensionIndexPrivateCreator", creator)
            _put(item, "FunctionalGroupPrivateCreator", creator)
        _put(item, "DimensionDescriptionLabel", label)
        index_items.append(item)
    _put(top, "DimensionIndexSequence", index_items)
    return top, sop_uid


def _file_meta(sop_uid: str) -> bytes:
    from dcmpipe import __version__

    meta = {}
    _put(meta, "FileMetaInformationVersion", b"\x00\x01")
    _put(meta, "MediaStorageSOPClassUID", ENHANCED_MR)
    _put(meta, "MediaStorageSOPInstanceUID", sop_uid)
    _put(meta, "TransferSyntaxUID", EXPLICIT_LE)
    _put(meta, "ImplementationClassUID", "1.2.826.0.1.3680043.8.498.1")
    _put(meta, "ImplementationVersionName", f"DCMPIPE_{__version__}"[:16])
    body = w.dataset(meta)
    return b"\0" * 128 + b"DICM" + w.number(0x00020000, "UL", len(body)) + body


# -- building: one byte template per classic file ------------------------------------------------------

# Slots (values that change per frame): name -> VR of the element (the whole element is the slot's value,
# except "dyn4": the 4 bytes of a UL dynamic number inside Temporal Position Index / Dimension Index Values).
SLOTS = {"frame_time": "DT", "dyn4": "UL", "wc": "DS", "ww": "DS", "ri": "DS", "rs": "DS", "sop": "UI",
         "content_time": "TM", "instance": "IS", "dynamic": "IS", "max_fp": "FL", "min_fp": "FL", "ss": "FL",
         "fmri": "SS", "dyn_time": "FL"}
_PRIVATE_SLOTS = (("max_fp", 0x0B), ("min_fp", 0x0C), ("ss", 0x0E), ("fmri", 0x63), ("dyn_time", 0xA0))


class Template:
    """The per-frame item of one classic file: ``fixed[0] slot[0] fixed[1] ... fixed[-1]`` (item tags included),
    the slots' elements for the classic file itself (``base``) and its values needed per frame."""

    __slots__ = ("fixed", "names", "base", "frame_time", "instance", "slot_tags")


class _Plan:
    """A classic file's per-frame item as parts: bytes, slots, elements as they lie in the file (``Raw``) and
    values computed from the file (``Computed``).  Files laid out alike share a plan when the values it
    used to make its bytes (``depends``: ranges of the file) and their private creators are the same."""

    __slots__ = ("parts", "depends", "blocks", "slot_tags", "data", "layout")

    def fits(self, c: "Classic") -> bool:
        if self.layout is None or c.layout != self.layout or c.data is None or c.blocks != self.blocks:
            return False
        data, mine = c.data, self.data
        return all(data[a:b] == mine[a:b] for a, b in self.depends)


def _slot_element(ds, tag: int, name: str, default: str) -> bytes:
    """A slot's element for the classic file itself: its bytes if it has the slot's VR, else its text."""
    vr = SLOTS[name]
    el = ds.get(tag)
    if el is not None and el.VR == vr:
        return w.element(tag, vr, el.raw)
    if el is not None and vr in ("FL", "SS"):
        return w.value(tag, vr, el.value)
    return w.text(tag, vr, _text(ds, tag, default) if el is not None else default)


_PUBLIC_SLOTS = {"sop": 0x00080018, "content_time": 0x00080033, "instance": 0x00200013, "dynamic": 0x00200100,
                 "wc": 0x00281050, "ww": 0x00281051, "ri": 0x00281052, "rs": 0x00281053}
_SLOT_DEFAULTS = {"sop": None, "content_time": "", "instance": "1", "dynamic": "1", "wc": "0", "ww": "0", "ri": "0",
                  "rs": "1"}


def _frame_plan(c: Classic, series_start: str, duration_ms: float, ndims: int) -> _Plan:
    """The plan of the per-frame functional group item of one classic file."""
    ds, c140, data = c.ds, c.c140, c.data
    depends = []
    shareable = data is not None

    def raw(el):  # an element copied as it was read
        nonlocal shareable
        if data is not None and el.VR != "SQ" and el.length >= 0 and not el.length & 1:
            return w.Raw(el.offset - (12 if el.VR in w.LONG_VRS else 8), el.offset + el.length)
        shareable = False
        return w.copy(el)

    def used(el):  # a value the template's bytes are made of
        nonlocal shareable
        if el is not None:
            if el.length >= 0:
                depends.append((el.offset, el.offset + el.length))
            else:
                shareable = False

    def from_(item, name, holders, default):  # as _from: the element of the first holder that has it
        tag, vr = w.KEYWORDS[name]
        for holder in holders:
            el = holder.get(tag)
            if el is not None:
                if el.VR == vr:
                    item[tag] = raw(el)
                else:
                    used(el)
                    item[tag] = w.copy_as(el, tag, vr)
                return
        item[tag] = w.value(tag, vr, default)

    private = {}
    for tag in PER_IMAGE_PUBLIC:
        el = ds.get(tag)
        if el is not None:
            private[tag] = raw(el)
    for name in ("KSpaceFiltering", "DiffusionAnisotropyType"):
        tag = w.tag_of(name)
        el = c140.get(tag)
        if el is not None and tag not in private:
            private[tag] = raw(el)
    inversion_tag = w.tag_of("InversionTime")
    if inversion_tag not in private:
        el = c.element(MR001, 0xA8)
        used(el)
        if el is not None and el.value not in (None, "") and el.VR == "DS":
            private[inversion_tag] = w.element(inversion_tag, "DS", el.raw)
        else:
            private[inversion_tag] = w.text(inversion_tag, "DS", _text(ds, el.tag) if el is not None and
                                            el.value not in (None, "") else "0")
    copied_blocks = {}
    for creator, offset in PER_IMAGE_PRIVATE:
        tag = c.tag(creator, offset)
        el = None if tag is None else ds.get(tag)
        if el is None:
            continue
        creator_tag = (tag & 0xFFFF0000) | ((tag >> 8) & 0xFF)
        if creator_tag not in private:
            private[creator_tag] = raw(ds.get(creator_tag))
            copied_blocks[creator] = (tag >> 8) & 0xFF
        private[tag] = raw(el)
    if DD001 in copied_blocks:  # the scanner leaves Slice Orientation empty in frames
        tag = 0x20010000 | (copied_blocks[DD001] << 8) | 0x0B
        el = ds.get(tag)
        if el is not None:
            private[tag] = w.element(tag, el.VR, b"")
    private[0x00200032] = w.Computed("ipp")  # the corner of the first pixel (SPEC 1.5)
    slot_tags = dict(_PUBLIC_SLOTS)
    for name, tag in _PUBLIC_SLOTS.items():
        private[tag] = [w.Slot(name)]
    if MR001 in copied_blocks:
        for name, offset in _PRIVATE_SLOTS:
            tag = 0x20050000 | (copied_blocks[MR001] << 8) | offset
            slot_tags[name] = tag
            private[tag] = [w.Slot(name)]

    frame = {}
    frame[w.tag_of("MREchoSequence")] = w.seq_pieces(w.tag_of("MREchoSequence"), [{0x00189082: w.Computed("echo")}])
    metabolite = {}
    from_(metabolite, "MetaboliteMapDescription", (c140,), "WATER")
    frame[w.tag_of("MRMetaboliteMapSequence")] = w.seq_pieces(w.tag_of("MRMetaboliteMapSequence"), [metabolite])
    contrast_el = c140.get(w.tag_of("AcquisitionContrast"))
    used(contrast_el)
    contrast = _text(c140, w.tag_of("AcquisitionContrast"), "UNKNOWN")
    frame_type_el = c140.get(w.tag_of("FrameType"))
    used(frame_type_el)
    frame_type = [str(v) for v in _multi(frame_type_el.value)] if frame_type_el is not None else []
    frame_items = {}
    if frame_type and any(frame_type):
        frame_items[frame_type_el.tag] = raw(frame_type_el) if frame_type_el.VR == "CS" else \
            w.copy_as(frame_type_el, frame_type_el.tag, "CS")
    else:
        image_type = ds.get(0x00080008)
        used(image_type)
        _put(frame_items, "FrameType",
             [str(v) for v in _multi(image_type.value)][:2] + [contrast, "NONE"] if image_type is not None
             else [contrast, "NONE"])
    for name, default in (("PixelPresentation", "MONOCHROME"), ("VolumetricProperties", "VOLUME"),
                          ("VolumeBasedCalculationTechnique", "NONE"), ("ComplexImageComponent", "MAGNITUDE")):
        from_(frame_items, name, (c140,), default)
    _put(frame_items, "AcquisitionContrast", contrast)
    frame[w.tag_of("MRImageFrameTypeSequence")] = w.seq_pieces(w.tag_of("MRImageFrameTypeSequence"), [frame_items])
    content = {
        0x00189074: [w.Slot("frame_time")],
        0x00189151: w.text(0x00189151, "DT", series_start),
        0x00189220: w.number(0x00189220, "FD", duration_ms),
        0x00209056: w.text(0x00209056, "SH", "1"),
        0x00209057: w.Computed("in_stack"),
        0x00209128: [w.head(0x00209128, "UL", 4), w.Slot("dyn4")],
        0x00209157: [w.head(0x00209157, "UL", 4 * ndims), w.Computed("div_prefix"), w.Slot("dyn4"),
                     w.Computed("div_suffix")],
    }
    frame[w.tag_of("FrameContentSequence")] = w.seq_pieces(w.tag_of("FrameContentSequence"), [content])
    frame[0x00209113] = w.seq_pieces(0x00209113, [{0x00200032: raw(ds.get(0x00200032))}])
    frame[0x00209116] = w.seq_pieces(0x00209116, [{0x00200037: raw(ds.get(0x00200037))}])
    measures = {}
    from_(measures, "SliceThickness", (ds,), 1)
    if _has(ds, 0x00180088):
        from_(measures, "SpacingBetweenSlices", (ds,), "")
    from_(measures, "PixelSpacing", (ds,), "")
    frame[0x00289110] = w.seq_pieces(0x00289110, [measures])
    voi = {0x00281050: [w.Slot("wc")], 0x00281051: [w.Slot("ww")]}
    frame[0x00289132] = w.seq_pieces(0x00289132, [voi])
    transform = {0x00281052: [w.Slot("ri")], 0x00281053: [w.Slot("rs")], 0x00281054: w.text(0x00281054, "LO", "US")}
    frame[0x00289145] = w.seq_pieces(0x00289145, [transform])
    frame[0x20050014] = w.text(0x20050014, "LO", MR005[1])
    frame[0x2005140F] = w.seq_pieces(0x2005140F, [private])
    plan = _Plan()
    plan.parts = w.pieces({0: [w.ITEM_START], 1: w.pieces(frame), 2: [w.ITEM_END]})
    plan.depends, plan.blocks, plan.slot_tags = depends, c.blocks, slot_tags
    plan.data, plan.layout = data, c.layout if shareable else None
    return plan


def _frame_template(c: Classic, plan: _Plan, series_start: str, ndims: int, div_suffix: bytes) -> Template:
    """The per-frame functional group item of one classic file (its plan realized with its values)."""
    ds = c.ds
    ipp_el = ds.get(0x00200032)
    if ipp_el is None or ds.get(0x00200037) is None or ds.get(0x00280030) is None:
        raise PhilipsError(f"{c.path}: no Image Position/Orientation (Patient) or Pixel Spacing")
    ipp = [float(v) for v in _multi(ipp_el.value)]
    iop = [float(v) for v in _multi(ds.get(0x00200037).value)]
    row_spacing, col_spacing = (float(v) for v in _multi(ds.get(0x00280030).value))
    corner = [ipp[k] - iop[k] * col_spacing / 2 - iop[3 + k] * row_spacing / 2 for k in range(3)]
    echo = ds.get(0x00180081)
    computed = {
        "ipp": w.text(0x00200032, ipp_el.VR, [_ds_text(v) for v in corner]),
        "echo": w.number(0x00189082, "FD", float(echo.value or 0) if echo is not None else 0.0),
        "in_stack": w.number(0x00209057, "UL", int(c.pvalue(DD001, 0x0A, 1))),
        "div_prefix": struct.pack("<2I", 1, c.key[0]),
        "div_suffix": div_suffix,
    }
    t = Template()
    t.fixed, t.names = w.split_template(w.realize(plan.parts, c.data, computed))
    t.slot_tags = plan.slot_tags
    base = {}
    for name, tag in _PUBLIC_SLOTS.items():
        if name == "sop" and ds.get(tag) is None:
            raise PhilipsError(f"{c.path}: no SOP Instance UID")
        base[name] = _slot_element(ds, tag, name, _SLOT_DEFAULTS[name])
    for name, _ in _PRIVATE_SLOTS:
        tag = plan.slot_tags.get(name)
        if tag is not None:
            el = ds.get(tag)
            base[name] = _slot_element(ds, tag, name, "") if el is not None else w.value(tag, SLOTS[name], 0)
    acquired = _text(ds, 0x00080022) + _text(ds, 0x00080032)
    t.frame_time = acquired or series_start
    base["frame_time"] = w.text(0x00189074, "DT", t.frame_time)
    t.base = base
    t.instance = _text(ds, 0x00200013, "1")
    return t


# -- building: the per-frame columns -----------------------------------------------------------------------


def _column(codes, table: list) -> list:
    """``[table[c] for c in codes]``: one shared bytes object per distinct value."""
    return list(map(table.__getitem__, codes.tolist()))


def _codes(values) -> tuple:
    """(distinct values sorted, code of each value): ``np.unique(values, return_inverse=True)`` without
    importing numpy.ma (20 ms)."""
    import numpy as np

    ordered = np.sort(values, kind="stable")
    keep = np.empty(len(ordered), dtype=bool)
    keep[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    distinct = ordered[keep]
    return distinct, np.searchsorted(distinct, values)


def _distinct(values, encode) -> list:
    """``[encode(v) for v in values]`` (a numpy array), encoding each distinct value once."""
    distinct, codes = _codes(values)
    return _column(codes, [encode(v) for v in distinct.tolist()])


def _rows(matrix) -> list:
    """The rows of a 2-D uint8 array as bytes objects (a void view's ``tolist``: no slicing in Python)."""
    import numpy as np

    matrix = np.ascontiguousarray(matrix)
    return matrix.view(f"V{matrix.shape[1]}").ravel().tolist() if matrix.shape[1] else [b""] * len(matrix)


def _fixed_size(tag: int, vr: str, numbers) -> list:
    """One element per value of ``numbers`` (numpy, already of the VR's type), as a list of bytes."""
    import numpy as np

    itemsize = numbers.dtype.itemsize
    matrix = np.empty((len(numbers), 8 + itemsize), dtype=np.uint8)
    matrix[:, :8] = np.frombuffer(w.head(tag, vr, itemsize), dtype=np.uint8)
    matrix[:, 8:] = np.ascontiguousarray(numbers).view(np.uint8).reshape(len(numbers), itemsize)
    return _rows(matrix)


def _integer_elements(tag: int, vr: str, values) -> list:
    """IS/DS elements of integers (a numpy array), one per value: ``str(value)`` padded with a space."""
    import numpy as np

    values = np.asarray(values, dtype=np.int64)
    negative = values < 0
    magnitude = np.abs(values)
    digits = 1 + np.searchsorted(10 ** np.arange(1, 19, dtype=np.int64), magnitude, side="right")
    out = np.empty(len(values), dtype=object)
    kinds = digits * 2 + negative
    for kind in _codes(kinds)[0].tolist():
        rows = np.flatnonzero(kinds == kind)
        count, sign = kind // 2, kind & 1
        length = count + sign
        matrix = np.empty((len(rows), 8 + length + (length & 1)), dtype=np.uint8)
        matrix[:, :8] = np.frombuffer(w.head(tag, vr, length + (length & 1)), dtype=np.uint8)
        if sign:
            matrix[:, 8] = 45
        powers = 10 ** np.arange(count - 1, -1, -1, dtype=np.int64)
        matrix[:, 8 + sign:8 + length] = magnitude[rows][:, None] // powers % 10 + 48
        if length & 1:
            matrix[:, -1] = 32
        out[rows] = _rows(matrix)
    return out.tolist()


def _with_bases(column: list, first_dynamic, template_of, templates: list, name: str) -> list:
    """``column`` with the frames of dynamic 1 taking their classic file's own element."""
    for f, t in zip(first_dynamic.tolist(), template_of[first_dynamic].tolist()):
        column[f] = templates[t].base[name]
    return column


class _FrameTimes:
    """Frame Acquisition DateTime and private Content Time of the frames of dynamics > 1: their dynamic-1
    frame's time + (begin time d - begin time 1), each distinct (time, shift) computed once."""

    def __init__(self, templates: list, template_of, shift, later):
        import numpy as np

        texts = [t.frame_time for t in templates]
        distinct_texts = list(dict.fromkeys(texts))
        text_code = np.array([distinct_texts.index(text) for text in texts], dtype=np.int64)[template_of]
        shift_values, shift_codes = _codes(np.where(later, shift, 0.0))
        pairs, self.codes = _codes(text_code * len(shift_values) + shift_codes)
        self.tables = {"frame_time": [], "content_time": []}
        for code in pairs.tolist():
            text = _dt_plus(distinct_texts[code // len(shift_values)], float(shift_values[code % len(shift_values)]))
            self.tables["frame_time"].append(w.text(0x00189074, "DT", text))
            self.tables["content_time"].append(w.text(0x00080033, "TM", text[8:]))

    def lengths(self, name: str):
        import numpy as np

        return np.array([len(b) for b in self.tables[name]], dtype=np.int64)[self.codes]

    def column(self, name: str) -> list:
        return _column(self.codes, self.tables[name])


def _uid_length(nframes: int) -> int:
    """The length of each element ``_uids(nframes)`` makes."""
    prefix, first_number = _uid_prefix(nframes)
    length = len(prefix) + len(str(first_number))
    return 8 + length + (length & 1)


def _integer_lengths(values):
    """The lengths of the elements ``_integer_elements`` makes of ``values``."""
    import numpy as np

    values = np.asarray(values, dtype=np.int64)
    digits = 1 + np.searchsorted(10 ** np.arange(1, 19, dtype=np.int64), np.abs(values), side="right")
    length = digits + (values < 0)
    return 8 + length + (length & 1)


def _uids(nframes: int) -> list:
    """``nframes`` new UI elements (0008,0018) of one length: a random root and a counter."""
    import numpy as np

    prefix, first_number = _uid_prefix(nframes)
    digits = len(str(first_number))
    length = len(prefix) + digits
    start = w.head(0x00080018, "UI", length + (length & 1)) + prefix.encode()
    matrix = np.zeros((nframes, len(start) + digits + (length & 1)), dtype=np.uint8)
    matrix[:, :len(start)] = np.frombuffer(start, dtype=np.uint8)
    numbers = np.arange(first_number, first_number + nframes, dtype=np.int64)
    powers = 10 ** np.arange(digits - 1, -1, -1, dtype=np.int64)
    matrix[:, len(start):len(start) + digits] = numbers[:, None] // powers % 10 + 48
    return _rows(matrix)


def _assemble(templates: list, names: list, columns: dict, template_of, start: int, end: int) -> bytes:
    """The per-frame items of frames ``start:end`` (every template with the slots ``names`` in this order),
    interleaved by slice assignment into one list and joined once: the frames of one classic file come in
    runs (all its dynamics), in which its fixed pieces repeat."""
    import numpy as np

    step = 2 * len(names) + 1
    pieces = [b""] * ((end - start) * step)
    t_of = template_of[start:end]
    breaks = [0] + (np.flatnonzero(t_of[1:] != t_of[:-1]) + 1).tolist() + [len(t_of)]
    slot_columns = [columns[name] for name in names]
    for a, b in zip(breaks[:-1], breaks[1:]):
        fixed = templates[int(t_of[a])].fixed
        count, first, stop = b - a, a * step, b * step
        pieces[first:stop:step] = [fixed[0]] * count
        for j, column in enumerate(slot_columns):
            pieces[first + 2 * j + 1:stop:step] = column[start + a:start + b]
            pieces[first + 2 * j + 2:stop:step] = [fixed[j + 1]] * count
    return b"".join(pieces)


def build(folder: Path, par_path: Path, rec_path: Path, out_path: Path, strict: bool = False,
          files: list | None = None, fsync: bool = False) -> dict:
    """Write the Enhanced MR file ``out_path``; return a small report (frames, bytes, notes).

    ``files``: the classic files of dynamic 1 (default: every visible file of ``folder``).
    ``fsync``: the file is on disk when this returns, not only complete under its name.
    """
    folder, par_path, rec_path, out_path = Path(folder), Path(par_path), Path(rec_path), Path(out_path)
    if out_path.exists():
        from dcmpipe.safefile import TargetExistsError

        raise TargetExistsError(out_path)
    phases = _Phases()
    classic = read_classic(folder, files)
    phases("classic files")
    try:
        parsed = par.read_par(par_path)
    except par.ParError as exc:
        raise PhilipsError(str(exc)) from None
    phases("PAR")
    cols = parsed.columns
    size = parsed.image_bytes()
    # The REC's min/max per image (for the Max/Min FP estimates) in the background from now on: the
    # reductions release the interpreter lock while the checks and templates are made.
    count_images = int(cols["index"].max()) + 1
    extremes = None
    if count_images * size <= rec_path.stat().st_size:  # else check_inputs says the REC is truncated
        extremes = Background(w.rec_extremes, rec_path, size, count_images, int(cols["bits"][0]))
    try:
        return _build(classic, parsed, folder, par_path, rec_path, out_path, strict, extremes, phases, fsync)
    finally:
        if extremes is not None:
            extremes.result(raise_error=False)  # wait for it, whatever its outcome
        phases.log()


def _build(classic: list, parsed, folder: Path, par_path: Path, rec_path: Path, out_path: Path, strict: bool,
           extremes, phases, fsync: bool = False) -> dict:
    import numpy as np

    dyn1 = check_inputs(classic, parsed, rec_path, folder)
    phases("checks")
    cols = parsed.columns
    size = parsed.image_bytes()
    nframes = len(parsed)
    per_dynamic = len(classic)
    first = classic[0].ds
    c140 = classic[0].c140

    # -- frame order and what each frame is made of ------------------------------------------------------
    types_column = cols["type"]
    if types_column.min() >= 0:
        type_rank = np.array([par.TYPE_RANK.get(v, 4 + v) for v in range(int(types_column.max()) + 1)])
        ranks = type_rank[types_column]
    else:
        ranks = np.array([par.TYPE_RANK.get(v, 4 + v) for v in types_column.tolist()])
    order = np.lexsort((cols["dynamic"], cols["gradient_number"], cols["b_number"], cols["sequence"], ranks,
                        cols["phase"], cols["echo"], cols["slice"], cols["label"]))
    keys = [c.key for c in classic]
    template_of_row = _row_keys(cols, keys)
    if (template_of_row < 0).any():
        row = int(np.flatnonzero(template_of_row < 0)[0])
        raise PhilipsError(f"{par_path}: image line {row + 1} (dynamic {int(cols['dynamic'][row])}) has no classic "
                           "file of dynamic 1 with its slice/echo/type/label; nothing written")
    template_of = template_of_row[order]
    dyn = cols["dynamic"][order]
    rec_index = cols["index"][order]
    first_dynamic = np.flatnonzero(dyn == 1)
    later = dyn != 1
    row1 = np.array([dyn1[key] for key in keys], dtype=np.int64)  # the dynamic-1 PAR row of each classic file

    labels = sorted(_codes(cols["label"])[0].tolist())
    asl = int(classic[0].pvalue(MR005, 0x28, 0) or 0) > 0 or len(labels) > 1
    types = sorted(_codes(types_column)[0].tolist())
    dims = [(0x00209056, 0x00209111, "Stack ID", None), (0x00209057, 0x00209111, "In-Stack Position Number", None),
            (0x00209128, 0x00209111, "Temporal Position Index", None)]
    if asl:
        dims.append((0x20051429, 0x2005140F, "Private Label Type", MR005[1]))
    if len(types) > 1:
        dims.append((0x20051011, 0x2005140F, "Private ImageTypeMR", MR005[1]))

    phases("frame order")
    # -- the header before the frames, and the templates --------------------------------------------------
    series_start = _text(c140, w.tag_of("AcquisitionDateTime")) or (_text(first, w.tag_of("SeriesDate")) +
                                                                     _text(first, w.tag_of("SeriesTime")))
    top, sop_uid = _top_level(classic, c140, nframes, dims, strict, series_start)
    shared = _shared_groups(classic[0], c140)
    top[0x52009229] = w.sequence(0x52009229, [shared])
    before = w.dataset({tag: v for tag, v in top.items() if tag < 0x52009230})
    after = w.dataset({tag: v for tag, v in top.items() if tag > 0x52009230})
    head = _file_meta(sop_uid) + before + w.head(0x52009230, "SQ", 0xFFFFFFFF)
    duration_el = first.get(w.tag_of("AcquisitionDuration"))
    duration_ms = float(duration_el.value or 0) * 1000.0 if duration_el is not None else 0.0
    phases("top level")
    templates, plans = [], {}
    for c in classic:
        label, image_type = c.key[7], c.key[3]
        suffix = []
        if asl:
            suffix.append(labels.index(label) + 1 if strict else label - 1)
        if len(types) > 1:
            suffix.append(types.index(image_type) + 1 if strict else image_type)
        plan = plans.get(c.layout)
        if plan is None or not plan.fits(c):
            plan = _frame_plan(c, series_start, duration_ms, len(dims))
            if plan.layout is not None:
                plans[plan.layout] = plan
        templates.append(_frame_template(c, plan, series_start, len(dims), struct.pack(f"<{len(suffix)}I", *suffix)))
    names = templates[0].names
    same_layout = COLUMNWISE and all(t.names == names for t in templates)

    phases("templates")
    # -- the slots: their lengths now (the pixel data's place), their bytes while the pixel data is copied ----
    private_slots = any("ss" in t.names for t in templates)
    slot_tags = next((t.slot_tags for t in templates if "ss" in t.names), {})
    dyn_time = cols["dyn_time"][order]
    rs, ri = cols["rescale_slope"][order], cols["rescale_intercept"][order]
    ss_par = cols["scale_slope"][order]
    fmri = cols["fmri_status"][order]
    if private_slots:
        if fmri.min(initial=0) < -32768 or fmri.max(initial=0) > 32767:
            raise PhilipsError(f"{par_path}: fMRI status values do not fit a signed short")
        if (rs[later] * np.where(ss_par == 0, 1.0, ss_par)[later] == 0).any():
            raise PhilipsError(f"{par_path}: a rescale slope of 0 (MR Max/Min FP cannot be estimated); "
                               "nothing written")
    instances = np.array([int(t.instance) for t in templates], dtype=np.int64)[template_of] + (dyn - 1) * per_dynamic
    times = _FrameTimes(templates, template_of, dyn_time - cols["dyn_time"][row1][template_of], later)
    rescale = {}  # name -> (PAR values, frames whose PAR value is dynamic 1's: the classic file's text)
    for name, column in (("rs", "rescale_slope"), ("ri", "rescale_intercept"), ("ss", "scale_slope")):
        values = cols[column][order]
        rescale[name] = (values, values == cols[column][row1][template_of])

    def base_lengths(name):
        return np.array([len(t.base.get(name, b"")) for t in templates], dtype=np.int64)[template_of]

    def lengths(name):  # the bytes of one slot's element, per frame
        if name == "dyn4":
            return np.full(nframes, 4, dtype=np.int64)
        if name in ("frame_time", "content_time"):
            computed = times.lengths(name)
        elif name == "sop":
            computed = np.full(nframes, _uid_length(nframes), dtype=np.int64)
        elif name in ("instance", "dynamic", "wc", "ww"):
            computed = _integer_lengths({"instance": instances, "dynamic": dyn, "wc": cols["window_center"][order],
                                         "ww": cols["window_width"][order]}[name])
        elif name in ("rs", "ri"):
            values, same = rescale[name]
            distinct, codes = _codes(values)
            table = np.array([len(w.text(0, "DS", _ds_text(v))) for v in distinct.tolist()], dtype=np.int64)
            computed = np.where(same, base_lengths(name), table[codes])
        elif name == "ss":
            computed = np.where(rescale["ss"][1], base_lengths(name), 12)
        else:  # FL/SS elements: max_fp, min_fp, dyn_time, fmri
            computed = np.full(nframes, 10 if name == "fmri" else 12, dtype=np.int64)
        return np.where(later, computed, base_lengths(name))

    def column(name):  # the elements of one slot, per frame (frames of dynamic 1: their classic file's own)
        if name == "dyn4":
            return _rows(dyn.astype("<u4").view(np.uint8).reshape(-1, 4))
        if name in ("frame_time", "content_time"):
            values = times.column(name)
        elif name == "sop":
            values = _uids(nframes)
        elif name == "instance":
            values = _integer_elements(0x00200013, "IS", instances)
        elif name == "dynamic":
            values = _integer_elements(0x00200100, "IS", dyn)
        elif name in ("wc", "ww"):
            tag, par_column = (0x00281050, "window_center") if name == "wc" else (0x00281051, "window_width")
            values = _integer_elements(tag, "DS", cols[par_column][order])
        elif name in ("rs", "ri", "ss"):
            par_values, same = rescale[name]
            if name == "ss":
                values = _fixed_size(slot_tags["ss"], "FL", par_values.astype("<f4"))
            else:
                tag = 0x00281053 if name == "rs" else 0x00281052
                values = _distinct(par_values, lambda v: w.text(tag, "DS", _ds_text(v)))
            for f, t in zip(np.flatnonzero(same).tolist(), template_of[same].tolist()):
                values[f] = templates[t].base[name]
        elif name == "dyn_time":
            values = _fixed_size(slot_tags["dyn_time"], "FL", dyn_time.astype("<f4"))
        elif name == "fmri":
            values = _fixed_size(slot_tags["fmri"], "SS", fmri.astype("<i2"))
        else:  # max_fp, min_fp: from the REC's min/max per image
            mins, maxs = extremes.result()
            ss_used = np.where(ss_par == 0, 1.0, ss_par)
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # dynamic 1: not used
                estimate = ((maxs if name == "max_fp" else mins)[rec_index].astype(np.float64) * rs + ri) / \
                    (rs * ss_used)
                values = _fixed_size(slot_tags[name], "FL", estimate.astype("<f4"))
        return _with_bases(values, first_dynamic, template_of, templates, name)

    phases("slots")
    # -- lengths: the pixel data's place is known before the header's bytes ---------------------------------
    fixed_lengths = np.array([sum(map(len, t.fixed)) for t in templates], dtype=np.int64)
    header_length = len(head) + int(fixed_lengths[template_of].sum()) + len(w.SEQ_END) + len(after) + 12
    all_names = sorted({name for t in templates for name in t.names})
    for name in all_names:
        uses = np.array([t.names.count(name) for t in templates], dtype=np.int64)[template_of]
        header_length += int((lengths(name) * uses).sum())
    total = nframes * size
    if total + (total & 1) > 0xFFFFFFFE:
        raise PhilipsError(f"{folder}: {total} bytes of pixel data do not fit one Enhanced MR object "
                           "(4 GiB; concatenations are not written)")

    # -- writing: pixel data in the background, the header meanwhile -------------------------------------
    output = w.Output(out_path, fsync)
    pixels = None
    try:
        pixels = Background(_reserve_and_copy, output, header_length + total + (total & 1), rec_path, size,
                              rec_index, header_length)
        phases("lengths")
        output.write(head, 0)
        position = len(head)
        columns = {name: column(name) for name in all_names}
        phases("columns")
        for start in range(0, nframes, FRAMES_PER_JOIN):
            end = min(nframes, start + FRAMES_PER_JOIN)
            if same_layout:
                data = _assemble(templates, names, columns, template_of, start, end)
            else:
                data = b"".join(_frame_bytes(templates[t], columns, f) for f, t in
                                zip(range(start, end), template_of[start:end].tolist()))
            output.write(data, position)
            position += len(data)
        phases("header")
        tail = w.SEQ_END + after + w.head(0x7FE00010, "OW" if int(cols["bits"][0]) > 8 else "OB",
                                          total + (total & 1))
        output.write(tail, position)
        position += len(tail)
        if position != header_length:
            raise PhilipsError(f"internal error: header of {position} bytes, {header_length} expected")
        if total & 1:
            output.write(b"\0", header_length + total)
        running, pixels = pixels, None
        running.result()
        phases("pixel data")
        output.commit()
        phases("fsync")
    except BaseException:
        if pixels is not None:  # let the thread stop writing before the file goes
            pixels.result(raise_error=False)  # wait for it, whatever its outcome
        output.discard()
        raise
    return {"frames": nframes, "cloned": nframes - per_dynamic, "estimated_fp": int(later.sum()),
            "label_dims": asl, "bytes": total}


def _reserve_and_copy(output, file_size: int, rec_path: Path, size: int, order, offset: int) -> None:
    """The pixel copy's thread: the file's space first (tmpfs takes a while to allocate it), then the frames."""
    output.reserve(file_size)
    w.copy_frames(rec_path, size, order, output, offset)


def _frame_bytes(t: Template, columns: dict, f: int) -> bytes:
    parts = [t.fixed[0]]
    for j, name in enumerate(t.names):
        parts.append(columns[name][f])
        parts.append(t.fixed[j + 1])
    return b"".join(parts)
