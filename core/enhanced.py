"""dicomeread: an Enhanced MR file as one n-dimensional numpy array with labelled axes.

Public API::

    import dcmpipe
    array, info = dcmpipe.dicomeread("DTI.dcm")
    info.labels        # ['In-Stack Position Number', 'Diffusion b-Value/Diffusion Gradient Orientation', 'Rows', 'Columns']
    info.axes[1].values  # [(0.0, None), (1000.0, (-0.33, -0.67, -0.67)), ...]
    info.frames        # 1-based frame number behind each position (0: no frame, NaN-filled)

The frame axes are the items of the file's Dimension Index Sequence.  A frame's
place on an axis is the *rank* of its Dimension Index Value among the values
seen on that axis (never the value itself: Philips writes 0-based and sparse
values for private dimensions), and frames are placed wherever they are in the
file (never by frame order).  Axes with one position are dropped; a grid with
empty cells (DTI: the b0 volume exists for one gradient index only; a field
map: magnitude with one echo, phase with the other) is made complete by
merging the right-most adjacent pair of axes that lacks combinations into one
axis of the combinations seen (SPEC.md 3).  Scaling is per frame.

Also public, for plugins working on Enhanced MR files: :func:`read_dataset`, :func:`lean_item`,
:func:`find_private`, :func:`element_value`, :func:`frame_item`,
:func:`find_nested`, :func:`dimensions`, :func:`frame_indices` and :func:`temporal_dimension`.

Only numpy and pydicom are needed; both are imported when a function runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import DcmpipeError

log = logging.getLogger("dcmpipe")

ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"
PRIVATE_FG = 0x2005140F  # Philips private per-frame functional group
PHILIPS_DD001 = "Philips Imaging DD 001"
PHILIPS_MR_DD001 = "Philips MR Imaging DD 001"
PHILIPS_MR_DD005 = "Philips MR Imaging DD 005"
TEMPORAL_POINTERS = (0x00209128, 0x00200100)  # Temporal Position Index; private copy of Temporal Position Identifier
SCALINGS = ("dv", "fp", "raw")
LAYOUTS = ("numpy", "matlab")


class EnhancedError(DcmpipeError):
    """An Enhanced MR file that cannot be read as an n-D array; the message names the file."""


@dataclass
class Axis:
    """One frame axis of the array.

    ``label``: the Dimension Description Label (``"a/b"`` for merged axes);
    ``pointers``: the attribute(s) varying along it, as ``(gggg,eeee)`` text;
    ``values``: the coordinate of each position (a tuple for merged axes, None
    where the frame has no such attribute, as a b0 frame has no direction);
    ``index_values``: the Dimension Index Value(s) behind each position.
    """

    label: str
    pointers: tuple
    values: list
    index_values: list

    def __len__(self) -> int:
        return len(self.values)

    def as_dict(self) -> dict:
        return {"label": self.label, "pointers": list(self.pointers), "size": len(self),
                "values": [_jsonable(v) for v in self.values],
                "index_values": [_jsonable(v) for v in self.index_values]}


@dataclass
class EnhancedInfo:
    """What the array's axes mean.  ``frames`` has the shape of the frame axes."""

    path: str
    axes: list
    frames: Any  # numpy int array: 1-based frame number per position, 0 = none (filled)
    rows: int
    columns: int
    layout: str = "numpy"
    scaling: str = "dv"
    merged: list = field(default_factory=list)  # labels of axes merged to complete the grid
    dropped: list = field(default_factory=list)  # labels of singleton axes left out

    @property
    def labels(self) -> list:
        """Label of every array axis, in array order."""
        frame_labels = [a.label for a in self.axes]
        if self.layout == "matlab":
            return ["Rows", "Columns", *frame_labels]
        return [*frame_labels, "Rows", "Columns"]

    @property
    def shape(self) -> tuple:
        sizes = tuple(len(a) for a in self.axes)
        return (self.rows, self.columns, *sizes) if self.layout == "matlab" else (*sizes, self.rows, self.columns)

    def axis(self, key) -> Axis:
        """A frame axis by label (case-insensitive) or by number."""
        return self.axes[_axis_number([a.label for a in self.axes], key, self.path)]

    def as_dict(self) -> dict:
        return {"path": self.path, "layout": self.layout, "scaling": self.scaling, "shape": list(self.shape),
                "labels": self.labels, "axes": [a.as_dict() for a in self.axes],
                "frames": self.frames.tolist(), "merged": self.merged, "dropped": self.dropped}

    def describe(self) -> str:
        """Dimensions and labels, one line per axis."""
        lines = [f"{self.path}: {' x '.join(str(n) for n in self.shape)} ({self.scaling})"]
        frame_axes = list(self.axes)
        image_axes = [("Rows", self.rows), ("Columns", self.columns)]
        ordered = ([(a.label, a) for a in frame_axes] + image_axes if self.layout == "numpy"
                   else image_axes + [(a.label, a) for a in frame_axes])
        for n, (label, axis) in enumerate(ordered):
            if isinstance(axis, Axis):
                vals = [_short(v) for v in axis.values[:6]]
                shown = ": " + ", ".join(vals) + (", ..." if len(axis.values) > 6 else "")
                lines.append(f"  axis {n}  {len(axis):5d}  {label}{shown}")
            else:
                lines.append(f"  axis {n}  {axis:5d}  {label}")
        return "\n".join(lines)


# -- a lean reader for the common case ---------------------------------------------------------
#
# pydicom builds a Dataset and a DataElement for every element of every frame's functional groups:
# ~2 ms a frame, 10 s for a 5,000-frame fMRI file.  Philips exports are Explicit VR Little Endian
# with native pixel data; this walk reads them with struct alone into light objects offering the
# part of pydicom's interface used here (get(tag) -> element, get(keyword) -> value, attributes by
# keyword, iteration over elements).  Anything else, and anything it is unsure of, goes to pydicom.

_LONG_VRS = frozenset(b"OB OD OF OL OV OW SQ SV UC UN UR UT UV".split())
_NUM_FORMATS = {"US": "H", "SS": "h", "UL": "L", "SL": "l", "FL": "f", "FD": "d", "UV": "Q", "SV": "q"}
_TEXT_SINGLE = frozenset(("LT", "ST", "UT", "UR"))
_BINARY = frozenset(("OB", "OD", "OF", "OL", "OV", "OW", "UN"))
_UNDEFINED = 0xFFFFFFFF


class _LeanUnsure(Exception):
    """The lean walk met something it leaves to pydicom."""


class LeanElement:
    """One element: ``tag``, ``VR`` and ``value`` (decoded on first use; a list of items for SQ)."""

    __slots__ = ("tag", "VR", "_buf", "_start", "_length", "_value", "_decoded")

    def __init__(self, tag, vr, buf, start, length):
        self.tag, self.VR, self._buf, self._start, self._length = tag, vr, buf, start, length
        self._value, self._decoded = None, False

    @property
    def value(self):
        if not self._decoded:
            self._value, self._decoded = self._decode(), True
        return self._value

    @value.setter
    def value(self, new):
        self._value, self._decoded = new, True

    @property
    def raw(self) -> bytes:
        """The value as encoded in the file (explicit VR little endian), padding included; SQ: b"" if walked."""
        if self._length < 0:
            return b""
        return bytes(self._buf[self._start:self._start + self._length])

    @property
    def offset(self) -> int:
        """Where the value starts in the file (``-2``: an undefined-length sequence, walked already)."""
        return self._start if self._length >= 0 else -2

    @property
    def length(self) -> int:
        """The value length in bytes (``-2``: an undefined-length sequence, walked already)."""
        return self._length

    def _decode(self):
        import struct

        vr, start, length = self.VR, self._start, self._length
        if vr == "SQ":
            return start if length == -2 else _lean_items(self._buf, start, length)
        if self.tag == 0x7FE00010:  # Pixel Data: a view of the file's bytes, not a copy
            return memoryview(self._buf)[start:start + length]
        raw = self._buf[start:start + length]
        if vr in _NUM_FORMATS:
            fmt = _NUM_FORMATS[vr]
            size = struct.calcsize("<" + fmt)
            n = len(raw) // size
            values = struct.unpack(f"<{n}{fmt}", raw[: n * size])
            return values[0] if n == 1 else list(values) if n else None
        if vr == "AT":
            pairs = struct.unpack(f"<{len(raw) // 2}H", raw)
            tags = [(pairs[k] << 16) | pairs[k + 1] for k in range(0, len(pairs) - 1, 2)]
            return tags[0] if len(tags) == 1 else tags
        if vr in _BINARY:
            return raw
        text = bytes(raw).decode("latin-1").rstrip("\0 ")
        if vr not in _TEXT_SINGLE and vr != "PN":
            text = text.lstrip(" ")
        if vr in ("IS", "DS"):
            parts = [t.strip() for t in text.split("\\")]
            try:
                values = [int(float(t)) if vr == "IS" else float(t) for t in parts if t]
            except ValueError:
                return text
            return values[0] if len(values) == 1 else values if values else ""
        if vr not in _TEXT_SINGLE and "\\" in text:
            return [t.strip() for t in text.split("\\")]
        return text

    def __repr__(self):
        return f"LeanElement({tag_text(self.tag)} {self.VR})"


class LeanDataset:
    """A data set read by the lean walk: ``get(tag)`` an element, ``get(keyword)`` a value.

    Elements are located when the data set is walked, decoded when asked for; the
    items of a sequence are walked when the sequence's value is first asked for.
    """

    __slots__ = ("_buf", "_raw", "_elements", "file_meta", "preamble")

    def __init__(self, buf, raw: dict):
        """A data set over ``buf`` with the elements of ``raw`` (the form of :attr:`layout`): a plugin
        that knows two files are laid out alike binds one file's layout to the other's bytes."""
        self._buf, self._raw, self._elements = buf, raw, {}
        self.file_meta = None

    @property
    def buffer(self):
        """The bytes (or memory map) the data set is read from."""
        return self._buf

    @property
    def layout(self) -> dict:
        """Where each element is: ``{tag: (VR, value offset in buffer, value length)}``; a sequence whose
        items were walked is ``("SQ", [item data sets], -2)``.  For reading only."""
        return self._raw

    def _element(self, tag: int):
        element = self._elements.get(tag)
        if element is None:
            found = self._raw.get(tag)
            if found is None:
                return None
            element = self._elements[tag] = LeanElement(tag, found[0], self._buf, found[1], found[2])
        return element

    def get(self, key, default=None):
        if isinstance(key, str):
            element = self._element(_keyword_tag(key))
            return default if element is None else element.value
        if isinstance(key, tuple):
            key = (key[0] << 16) | key[1]
        element = self._element(int(key))
        return default if element is None else element

    def __contains__(self, key):
        return (_keyword_tag(key) if isinstance(key, str) else int(key)) in self._raw

    def __getattr__(self, name):
        if name.startswith("_") or name in ("file_meta", "preamble"):
            raise AttributeError(name)
        element = self._element(_keyword_tag(name))
        if element is None:
            raise AttributeError(name)
        return element.value

    def __getitem__(self, key):
        element = self.get(_keyword_tag(key) if isinstance(key, str) else key)
        if element is None:
            raise KeyError(key)
        return element

    def __iter__(self):
        return (self._element(tag) for tag in sorted(self._raw))

    def __len__(self):
        return len(self._raw)


_KEYWORD_TAGS: dict = {}


def _keyword_tag(keyword: str) -> int:
    tag = _KEYWORD_TAGS.get(keyword)
    if tag is None:
        from .steps import known_tag

        tag = known_tag(keyword)
        if tag is None:  # not in the host's table (a newer dictionary?): ask pydicom
            from pydicom.datadict import tag_for_keyword

            tag = tag_for_keyword(keyword)
        tag = _KEYWORD_TAGS[keyword] = tag or -1
    return tag


_HEAD = __import__("struct").Struct("<HH2sH").unpack_from
_ITEM_HEAD = __import__("struct").Struct("<HHL").unpack_from
_UL = __import__("struct").Struct("<L").unpack_from
_LONG_VR_BYTES = frozenset(b"OB OD OF OL OV OW SQ SV UC UN UR UT UV".split())
_VR_TEXT: dict = {}


def _lean_walk(buf, pos: int, end: int, top: bool = False, pixels: bool = True):
    """Locate the elements of one data set in ``buf[pos:end]``; ``(raw, pos after)``.

    ``end`` None: an undefined-length item, up to its delimiter.  Sequences are
    not entered, except to find the end of an undefined-length one.
    """
    raw = {}
    size = len(buf)
    limit = size if end is None else end
    while pos < limit:
        if pos + 8 > size:
            raise _LeanUnsure("truncated")
        group, elem, vr, length = _HEAD(buf, pos)
        if group == 0xFFFE:
            if elem == 0xE00D and end is None:
                return raw, pos + 8
            raise _LeanUnsure("delimiter in a data set")
        tag = (group << 16) | elem
        if vr in _LONG_VR_BYTES:
            if pos + 12 > size:
                raise _LeanUnsure("truncated")
            length = _UL(buf, pos + 8)[0]
            pos += 12
        else:
            pos += 8
        vr_text = _VR_TEXT.get(vr)
        if vr_text is None:
            if not (65 <= vr[0] <= 90 and 65 <= vr[1] <= 90):
                raise _LeanUnsure("implicit VR")
            vr_text = _VR_TEXT[vr] = vr.decode()
        if length == _UNDEFINED:
            if vr_text != "SQ":
                raise _LeanUnsure("encapsulated or undefined-length value")
            items, pos = _lean_items_undefined(buf, pos)
            raw[tag] = ("SQ", items, -2)  # -2: the items, walked already (to find the sequence's end)
            continue
        if pos + length > size:
            raise _LeanUnsure("value past the end of the file")
        if top and tag == 0x7FE00010:
            if pixels:
                raw[tag] = (vr_text, pos, length)
            return raw, pos + length
        raw[tag] = (vr_text, pos, length)
        pos += length
    if end is None:
        raise _LeanUnsure("item without its delimiter")
    return raw, pos


def _lean_items_undefined(buf, pos: int):
    """``(items, position after the delimiter)`` of the undefined-length sequence whose items start at ``pos``."""
    size = len(buf)
    items = []
    while True:
        if pos + 8 > size:
            raise _LeanUnsure("sequence without its delimiter")
        group, elem, item_len = _ITEM_HEAD(buf, pos)
        pos += 8
        if group == 0xFFFE and elem == 0xE0DD:
            return items, pos
        if group != 0xFFFE or elem != 0xE000:
            raise _LeanUnsure("not an item")
        if item_len == _UNDEFINED:
            raw, pos = _lean_walk(buf, pos, None)
        else:
            if pos + item_len > size:
                raise _LeanUnsure("item past the end of the file")
            raw, _ = _lean_walk(buf, pos, pos + item_len)
            pos += item_len
        items.append(LeanDataset(buf, raw))


def _lean_items(buf, start: int, length: int) -> list:
    """The items of a defined-length sequence whose value starts at ``start``."""
    items = []
    pos, end = start, start + length
    while pos < end:
        group, elem, item_len = _ITEM_HEAD(buf, pos)
        pos += 8
        if (group, elem) == (0xFFFE, 0xE0DD):
            break
        if (group, elem) != (0xFFFE, 0xE000):
            raise _LeanUnsure("not an item")
        if item_len == _UNDEFINED:
            raw, pos = _lean_walk(buf, pos, None)
        else:
            raw, _ = _lean_walk(buf, pos, pos + item_len)
            pos += item_len
        items.append(LeanDataset(buf, raw))
    return items


def _mapped(fh):
    """The file's bytes, memory-mapped (read-only) where possible."""
    import mmap
    import os

    if os.fstat(fh.fileno()).st_size == 0:
        return b""
    try:
        return mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError):  # not mappable (a pipe, some file systems)
        return fh.read()


def _lean_read(buf, pixels: bool, frames: bool = True):
    """The data set of a Part 10 file in Explicit VR Little Endian, native pixel data; _LeanUnsure otherwise.

    The top level is walked now, every sequence when first used: a sequence that is
    damaged is found then, and raises _LeanUnsure from there (read_dataset reads
    every per-frame item at once, so that falls back to pydicom too).
    """
    if len(buf) < 144 or bytes(buf[128:132]) != b"DICM":
        raise _LeanUnsure("no preamble")
    group, elem, vr, _ = _HEAD(buf, 132)
    if (group, elem) != (0x0002, 0x0000) or vr != b"UL":
        raise _LeanUnsure("no File Meta group length")
    meta_end = 144 + _UL(buf, 140)[0]
    meta = LeanDataset(buf, _lean_walk(buf, 132, meta_end)[0])
    syntax = meta.get(0x00020010)
    if syntax is None or syntax.value != "1.2.840.10008.1.2.1":
        raise _LeanUnsure("not Explicit VR Little Endian")
    ds = LeanDataset(buf, _lean_walk(buf, meta_end, len(buf), top=True, pixels=pixels)[0])
    charset = ds.get(0x00080005)
    if charset is not None and charset.value not in ("", "ISO_IR 100", "ISO_IR 6", ["", "ISO_IR 100"]):
        raise _LeanUnsure("character set")
    ds.file_meta = meta
    per_frame = ds.get(0x52009230) if frames else None
    if per_frame is not None:
        for item in per_frame.value:  # walk the frames' groups now: a damaged one goes to pydicom
            for tag, found in item._raw.items():
                if found[0] == "SQ":
                    item._element(tag).value
    return ds


def lean_item(buf, pos: int = 0):
    """``(LeanDataset, position after it)`` of the sequence item whose item tag is at ``buf[pos]``.

    For plugins that locate items themselves (explicit VR little endian); ValueError when the bytes
    there are not an item the lean walk can read.
    """
    try:
        group, elem, length = _ITEM_HEAD(buf, pos)
        if (group, elem) != (0xFFFE, 0xE000):
            raise _LeanUnsure("not an item")
        if length == _UNDEFINED:
            raw, end = _lean_walk(buf, pos + 8, None)
        else:
            if pos + 8 + length > len(buf):
                raise _LeanUnsure("item past the end of the data")
            raw, end = _lean_walk(buf, pos + 8, pos + 8 + length)
    except (_LeanUnsure, struct_error()) as exc:
        raise ValueError(f"no readable item at offset {pos}: {exc}") from None
    return LeanDataset(buf, raw), end


# -- small public helpers ---------------------------------------------------------------------

def _el(ds, keyword: str):
    """The element ``keyword`` of ``ds``, or None."""
    from pydicom.datadict import tag_for_keyword

    return ds.get(tag_for_keyword(keyword))


def tag_text(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def read_dataset(path, pixels: bool = True, lean: bool = False, frames: bool = True):
    """The data set of ``path`` (``.gz`` read through gzip, or bytes); EnhancedError if it is not DICOM.

    ``lean``: read Explicit VR Little Endian files with native pixel data by a
    lean walk into read-only :class:`LeanDataset` objects (pydicom's ``get``,
    ``in``, attribute and iteration interface, much faster for thousands of
    frames); other files, and ``lean=False``, give a pydicom Dataset.  A lean
    file is memory-mapped, not read: only the pages used are read.
    ``frames=False`` (lean only): do not walk the per-frame items up front; a
    caller that reads them its own way saves the walk (a damaged item is then
    not found here).
    """
    import gzip
    import io

    if isinstance(path, (bytes, bytearray, memoryview)):  # an encoded file in memory
        data, path = path, Path("<bytes>")
    else:
        path = Path(path)
        try:
            if path.suffix == ".gz":
                with gzip.open(path, "rb") as fh:
                    data = fh.read()
            elif lean:
                with open(path, "rb") as fh:
                    data = _mapped(fh)
            else:
                return _dcmread(str(path), path, pixels)
        except OSError as exc:
            if isinstance(exc, FileNotFoundError):
                raise EnhancedError(f"{path}: no such file") from None
            raise EnhancedError(f"{path}: cannot be read: {exc}") from None
    if lean:
        try:
            return _lean_read(data, pixels, frames)
        except (_LeanUnsure, struct_error()):
            pass
    return _dcmread(io.BytesIO(data), path, pixels)


def struct_error():
    import struct

    return struct.error


def _dcmread(source, path, pixels: bool):
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    try:
        ds = dcmread(source, stop_before_pixels=not pixels)
    except InvalidDicomError:
        raise EnhancedError(f"{path}: not a DICOM file") from None
    except (OSError, EOFError, ValueError, KeyError, TypeError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise EnhancedError(f"{path}: no such file") from None
        raise EnhancedError(f"{path}: cannot be read (truncated or damaged?): {exc}") from None
    if len(ds) == 0:
        raise EnhancedError(f"{path}: no data elements (truncated or damaged?)")
    return ds


def find_private(ds, tag: int, creator: str | None):
    """The element ``tag`` of ``ds``; for a private tag, looked up in the block ``creator`` reserved.

    ``tag`` names its element as ``(gggg,xxee)``: ``ee`` is looked up in whichever
    block ``xx`` the creator holds in this data set (blocks are not fixed).  Without
    a creator, or when no block is reserved for it, the literal tag is used.
    """
    group, elem = tag >> 16, tag & 0xFFFF
    if group % 2 == 1 and creator and elem > 0xFF:
        for block in range(0x10, 0x100):
            reservation = ds.get((group << 16) | block)
            if reservation is None:
                continue
            value = reservation.value
            if isinstance(value, bytes):
                value = value.decode("latin-1")
            if str(value).strip() == creator:
                return ds.get((group << 16) | (block << 8) | (elem & 0xFF))
    return ds.get(tag)


def element_value(element):
    """An element's value as plain Python: str, int, float, a tuple for several values, None when empty."""
    if element is None:
        return None
    value = element.value
    if element.VR == "SQ":
        return None
    if isinstance(value, bytes):
        text = value.decode("latin-1").strip("\0 ")
        return text or None
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple)) or value.__class__.__name__ == "MultiValue":
        items = tuple(_plain(v) for v in value)
        return items if items else None
    return _plain(value)


def _plain(v):
    if isinstance(v, str):
        return v.strip()
    if isinstance(v, bool):
        return v
    if isinstance(v, int):
        return int(v)
    if isinstance(v, float):
        return float(v)
    name = v.__class__.__name__
    if name in ("IS", "ISfloat"):
        return int(v)
    if name in ("DSfloat", "DSdecimal"):
        return float(v)
    return str(v)


def find_nested(item, tag: int, creator: str | None, depth: int = 0):
    """Find ``tag`` in ``item`` or, failing that, in the first item of its nested sequences."""
    element = find_private(item, tag, creator)
    if element is not None or depth > 3:
        return element
    for elem in item:
        if elem.VR == "SQ" and elem.value:
            found = find_nested(elem.value[0], tag, creator, depth + 1)
            if found is not None:
                return found
    return None


def frame_item(ds, frame: int, fg_tag: int, fg_creator: str | None = None):
    """The first item of functional group ``fg_tag`` for ``frame`` (0-based): per-frame, else shared."""
    per_frame = _el(ds, "PerFrameFunctionalGroupsSequence")
    places = []
    if per_frame is not None and frame < len(per_frame.value):
        places.append(per_frame.value[frame])
    shared = _el(ds, "SharedFunctionalGroupsSequence")
    if shared is not None and shared.value:
        places.append(shared.value[0])
    for place in places:
        seq = find_private(place, fg_tag, fg_creator)
        if seq is not None and seq.VR == "SQ" and seq.value:
            return seq.value[0]
    return None


@dataclass
class Dimension:
    """One item of the Dimension Index Sequence."""

    pointer: int
    group: int | None
    label: str
    pointer_creator: str | None = None
    group_creator: str | None = None

    @property
    def pointer_text(self) -> str:
        return tag_text(self.pointer)


def dimensions(ds, path) -> list:
    """The Dimension Index Sequence as :class:`Dimension` objects; EnhancedError when absent."""
    from pydicom.datadict import dictionary_description

    seq = _el(ds, "DimensionIndexSequence")
    if seq is None or not seq.value:
        raise EnhancedError(f"{path}: lacks the Dimension Index Sequence (0020,9222)")
    dims = []
    for n, item in enumerate(seq.value, 1):
        pointer = _el(item, "DimensionIndexPointer")
        if pointer is None or pointer.value is None:
            raise EnhancedError(f"{path}: Dimension Index Sequence item {n} lacks its Dimension Index Pointer")
        tag = int(pointer.value)
        group = _el(item, "FunctionalGroupPointer")
        label = str(item.get("DimensionDescriptionLabel", "") or "").strip()
        if not label:
            try:
                label = dictionary_description(tag) if tag >> 16 & 1 == 0 else tag_text(tag)
            except KeyError:
                label = tag_text(tag)
        dims.append(Dimension(
            pointer=tag, group=int(group.value) if group is not None and group.value is not None else None,
            label=label, pointer_creator=_text(_el(item, "DimensionIndexPrivateCreator")),
            group_creator=_text(_el(item, "FunctionalGroupPrivateCreator"))))
    return dims


def _text(element) -> str | None:
    if element is None or element.value in (None, ""):
        return None
    value = element.value
    return (value.decode("latin-1") if isinstance(value, bytes) else str(value)).strip() or None


def frame_indices(ds, path, dims=None):
    """Per-frame Dimension Index Values as an (frames, dimensions) int array, validated."""
    import numpy as np

    dims = dims if dims is not None else dimensions(ds, path)
    per_frame = _el(ds, "PerFrameFunctionalGroupsSequence")
    if per_frame is None or not per_frame.value:
        raise EnhancedError(f"{path}: lacks the Per-frame Functional Groups Sequence (5200,9230)")
    frames = per_frame.value
    count = _int(_el(ds, "NumberOfFrames"))
    if count is not None and count != len(frames):
        raise EnhancedError(f"{path}: Number of Frames is {count} but the Per-frame Functional Groups "
                            f"Sequence has {len(frames)} items")
    div = np.empty((len(frames), len(dims)), dtype=np.int64)
    for n, item in enumerate(frames):
        content = _el(item, "FrameContentSequence")
        values = None
        if content is not None and content.value:
            values = _el(content.value[0], "DimensionIndexValues")
        if values is None or values.value is None:
            raise EnhancedError(f"{path}: frame {n + 1} lacks Dimension Index Values (0020,9157)")
        vals = values.value
        vals = [vals] if isinstance(vals, int) else list(vals)
        if len(vals) != len(dims):
            raise EnhancedError(f"{path}: frame {n + 1} has {len(vals)} Dimension Index Values, the Dimension "
                                f"Index Sequence has {len(dims)} items")
        div[n] = vals
    return div


def temporal_dimension(dims) -> int | None:
    """Index of the temporal dimension (Temporal Position Index, or Philips' private dynamic), or None."""
    for pointer in TEMPORAL_POINTERS:
        for n, d in enumerate(dims):
            if d.pointer == pointer:
                return n
    return None


def _int(element):
    if element is None or element.value in (None, ""):
        return None
    try:
        return int(element.value)
    except (TypeError, ValueError):
        return None


def _coordinate(ds, frame: int, dim: Dimension):
    if dim.group is None:
        return None
    creator = dim.group_creator or (PHILIPS_MR_DD005 if dim.group == PRIVATE_FG else None)
    item = frame_item(ds, frame, dim.group, creator)
    if item is None:
        return None
    return element_value(find_nested(item, dim.pointer, dim.pointer_creator))


# -- the reader -------------------------------------------------------------------------------

def dicomeread(path, order=None, combine=None, noscale: bool = False, scaling: str = "dv", *,
               layout: str = "numpy", keep_singletons: bool = False, fill: bool = False):
    """Read an Enhanced MR file into ``(array, info)``.

    ``order``: frame axes to put first, by label (case-insensitive) or number
    (0-based, counted after merging), e.g. ``["Temporal Position Index"]``.
    ``combine``: an axis (label or number k >= 1), or a list of them, merged into
    the axis to its left.  ``noscale`` (same as ``scaling="raw"``): stored integers.
    ``scaling``: ``"dv"`` (default) stored * slope + intercept of each frame,
    float32; ``"fp"`` the Philips floating-point value dv / (slope * scale
    slope (2005,100E)); ``"raw"``.  ``layout``: ``"numpy"`` (frame axes...,
    rows, columns) or ``"matlab"`` (rows, columns, frame axes...).
    ``keep_singletons``: keep axes with one position.  ``fill``: a grid still
    incomplete (a partial last dynamic) is filled with NaN (0 for raw) instead
    of an error.
    """
    import numpy as np

    if noscale:
        scaling = "raw"
    if scaling not in SCALINGS:
        raise EnhancedError(f"{path}: scaling must be one of {', '.join(SCALINGS)}, not {scaling!r}")
    if layout not in LAYOUTS:
        raise EnhancedError(f"{path}: layout must be one of {', '.join(LAYOUTS)}, not {layout!r}")
    ds = read_dataset(path, pixels=True, lean=True)
    sop = str(ds.get("SOPClassUID", "") or "")
    if "PerFrameFunctionalGroupsSequence" not in ds:
        what = "not an Enhanced MR image: it" if sop != ENHANCED_MR else "Enhanced MR file"
        raise EnhancedError(f"{path}: {what} lacks the Per-frame Functional Groups Sequence (5200,9230)")
    dims = dimensions(ds, path)
    div = frame_indices(ds, path, dims)
    nframes = div.shape[0]
    rows, columns = _int(_el(ds, "Rows")), _int(_el(ds, "Columns"))
    if not rows or not columns:
        raise EnhancedError(f"{path}: lacks Rows/Columns")

    grid = _grid(path, dims, div, keep_singletons=keep_singletons, fill=fill)
    for key in ([] if combine is None else combine if isinstance(combine, (list, tuple)) else [combine]):
        k = _axis_number([a["label"] for a in grid["axes"]], key, path)
        if k < 1:
            raise EnhancedError(f"{path}: cannot combine axis {key!r}: it has no axis to its left")
        _merge(grid["axes"], k)
    axes = grid["axes"]
    if order is not None:
        keys = list(order) if isinstance(order, (list, tuple)) else [order]
        first = [_axis_number([a["label"] for a in axes], key, path) for key in keys]
        if len(set(first)) != len(first):
            raise EnhancedError(f"{path}: order names an axis twice: {keys}")
        axes[:] = [axes[k] for k in first] + [a for k, a in enumerate(axes) if k not in first]

    # Positions of every frame on every axis, then the flat cell of every frame.
    sizes, positions = [], []
    for axis in axes:
        keys = [tuple(row) for row in div[:, axis["dims"]].tolist()]
        distinct = sorted(set(keys))
        rank = {k: n for n, k in enumerate(distinct)}
        axis["keys"] = distinct
        sizes.append(len(distinct))
        positions.append(np.fromiter((rank[k] for k in keys), dtype=np.int64, count=nframes))
    cells = np.ravel_multi_index(positions, sizes) if axes else np.zeros(nframes, dtype=np.int64)
    frames = np.zeros(int(np.prod(sizes)) if sizes else 1, dtype=np.int64)
    frames[cells] = np.arange(1, nframes + 1)
    frames = frames.reshape(sizes)

    # Coordinates: DIV value -> attribute value, per dimension, read in the first frame with that
    # value and compared with the last one (a value should mean one coordinate).
    coords: dict = {}
    for d, dim in enumerate(dims):
        firsts: dict = {}
        lasts: dict = {}
        for f, v in enumerate(div[:, d].tolist()):
            firsts.setdefault(v, f)
            lasts[v] = f
        mapping: dict = {}
        for v, f in firsts.items():
            mapping[v] = value = _coordinate(ds, f, dim)
            other = _coordinate(ds, lasts[v], dim) if lasts[v] != f else value
            if other != value and not (_is_num(other) and _is_num(value) and abs(other - value) < 1e-6):
                log.warning("%s: %s: index value %d stands for %r (frame %d) and %r (frame %d)", path, dim.label, v,
                            value, f + 1, other, lasts[v] + 1)
        coords[d] = mapping
    out_axes = []
    for axis in axes:
        ds_idx = axis["dims"]
        values, index_values = [], []
        for key in axis["keys"]:
            vals = tuple(coords[d][v] for d, v in zip(ds_idx, key))
            values.append(vals[0] if len(vals) == 1 else vals)
            index_values.append(key[0] if len(key) == 1 else key)
        out_axes.append(Axis(label=axis["label"], pointers=tuple(dims[d].pointer_text for d in ds_idx),
                             values=values, index_values=index_values))

    data = _fill(ds, path, nframes, rows, columns, cells, int(np.prod(sizes)) if sizes else 1, scaling)
    array = data.reshape((*sizes, rows, columns))
    if layout == "matlab":
        array = np.moveaxis(array, (-2, -1), (0, 1))
    info = EnhancedInfo(path=str(path), axes=out_axes, frames=frames, rows=rows, columns=columns, layout=layout,
                        scaling=scaling, merged=grid["merged"], dropped=grid["dropped"])
    return array, info


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _axis_number(labels: list, key, path) -> int:
    if isinstance(key, int) or (isinstance(key, str) and key.lstrip("-").isdigit()):
        k = int(key)
        if not -len(labels) <= k < len(labels):
            raise EnhancedError(f"{path}: no axis {k}: the frame axes are {labels}")
        return k % len(labels)
    wanted = str(key).strip().lower()
    for n, label in enumerate(labels):
        if label.lower() == wanted:
            return n
    for n, label in enumerate(labels):  # a component of a merged axis
        if wanted in (part.lower() for part in label.split("/")):
            return n
    raise EnhancedError(f"{path}: no axis labelled {key!r}: the frame axes are {labels}")


def _merge(axes: list, k: int) -> None:
    a, b = axes[k - 1], axes[k]
    axes[k - 1:k + 1] = [{"label": f"{a['label']}/{b['label']}", "dims": a["dims"] + b["dims"]}]


def _grid(path, dims, div, *, keep_singletons: bool, fill: bool) -> dict:
    """Frame axes after dropping singletons and merging pairs that lack combinations."""
    import numpy as np

    nframes = div.shape[0]
    full = {tuple(row) for row in div.tolist()}
    if len(full) < nframes:
        seen: dict = {}
        for n, row in enumerate(div.tolist(), 1):
            if tuple(row) in seen:
                raise EnhancedError(f"{path}: frames {seen[tuple(row)]} and {n} have the same Dimension Index "
                                    f"Values {tuple(row)}: not one frame per position")
            seen[tuple(row)] = n
    axes, dropped = [], []
    for d, dim in enumerate(dims):
        if keep_singletons or len(np.unique(div[:, d])) > 1:
            axes.append({"label": dim.label, "dims": [d]})
        else:
            dropped.append(dim.label)

    # A run stopped early leaves a partial last dynamic: say so instead of merging it away.
    considered = div
    t = temporal_dimension(dims)
    if t is not None:
        values, counts = np.unique(div[:, t], return_counts=True)
        if len(values) > 1 and counts[-1] < counts[0] and np.all(counts[:-1] == counts[0]):
            if not fill:
                raise EnhancedError(
                    f"{path}: the last dynamic (temporal index {values[-1]}) has {counts[-1]} of {counts[0]} frames "
                    f"(a run stopped early): drop it with 'dcmpipe dcmshortacq', or read with fill")
            considered = div[div[:, t] != values[-1]]

    merged = []

    def combos(axis_list, k):
        a, b = axis_list[k - 1], axis_list[k]
        sub = considered[:, a["dims"] + b["dims"]]
        na = len({tuple(r) for r in considered[:, a["dims"]].tolist()})
        nb = len({tuple(r) for r in considered[:, b["dims"]].tolist()})
        return len({tuple(r) for r in sub.tolist()}), na * nb

    while len(axes) > 1:
        product = 1
        for axis in axes:
            product *= len({tuple(r) for r in considered[:, axis["dims"]].tolist()})
        if product == len(considered):
            break
        for k in range(len(axes) - 1, 0, -1):
            seen_, possible = combos(axes, k)
            if seen_ < possible:
                merged.append(f"{axes[k - 1]['label']}/{axes[k]['label']}")
                _merge(axes, k)
                break
        else:
            break
    product = 1
    for axis in axes:
        product *= len({tuple(r) for r in div[:, axis["dims"]].tolist()})
    if product != nframes and not fill:
        raise EnhancedError(f"{path}: the frames do not fill a grid ({nframes} frames for {product} positions); "
                            f"read with fill to leave the empty positions NaN")
    return {"axes": axes, "merged": merged, "dropped": dropped}


def _pixel_frames(ds, path, nframes: int, rows: int, columns: int):
    """The stored pixel values as a (frames, rows, columns) array, without a copy when uncompressed."""
    import numpy as np

    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise EnhancedError(f"{path}: colour images (Samples per Pixel > 1) are not supported")
    bits = _int(_el(ds, "BitsAllocated"))
    if bits not in (8, 16, 32):
        raise EnhancedError(f"{path}: lacks pixel data of 8, 16 or 32 bits (Bits Allocated {bits})")
    if "PixelData" not in ds:
        raise EnhancedError(f"{path}: lacks Pixel Data (7FE0,0010)")
    signed = _int(_el(ds, "PixelRepresentation")) == 1
    from pydicom.uid import UID

    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    syntax = UID(str(syntax)) if syntax else None
    if syntax is not None and syntax.is_compressed:
        try:
            pixels = ds.pixel_array
        except Exception as exc:  # no decoder installed for this transfer syntax
            raise EnhancedError(f"{path}: compressed pixel data ({syntax.name}) cannot be decoded: {exc}") from None
        return pixels.reshape(nframes, rows, columns)
    big = syntax is not None and str(syntax) == "1.2.840.10008.1.2.2"
    dtype = np.dtype(f"{'>' if big else '<'}{'i' if signed else 'u'}{bits // 8}")
    raw = ds.PixelData
    need = nframes * rows * columns * dtype.itemsize
    if len(raw) < need:
        raise EnhancedError(f"{path}: Pixel Data has {len(raw)} bytes, {nframes} frames of {rows}x{columns} "
                            f"need {need} (truncated?)")
    pixels = np.frombuffer(raw, dtype=dtype, count=nframes * rows * columns).reshape(nframes, rows, columns)
    stored = _int(_el(ds, "BitsStored")) or bits
    if stored < bits:  # bits above Bits Stored are not part of the value
        if signed:
            shift = bits - stored
            pixels = (pixels << shift) >> shift
        else:
            pixels = pixels & dtype.type((1 << stored) - 1)
    return pixels


def frame_scaling(ds, path, nframes: int, scaling: str):
    """Per-frame (slope, intercept) arrays for ``dv``, or the combined factor for ``fp``."""
    import numpy as np

    slopes = np.ones(nframes, dtype=np.float64)
    intercepts = np.zeros(nframes, dtype=np.float64)
    top_slope, top_icpt = _el(ds, "RescaleSlope"), _el(ds, "RescaleIntercept")
    for f in range(nframes):
        item = frame_item(ds, f, 0x00289145)  # Pixel Value Transformation Sequence
        slope = _el(item, "RescaleSlope") if item is not None else top_slope
        icpt = _el(item, "RescaleIntercept") if item is not None else top_icpt
        if slope is not None and slope.value not in (None, ""):
            slopes[f] = float(slope.value)
        if icpt is not None and icpt.value not in (None, ""):
            intercepts[f] = float(icpt.value)
    if scaling == "fp":
        for f in range(nframes):
            item = frame_item(ds, f, 0x2005140F, PHILIPS_MR_DD005)
            ss = element_value(find_private(item, 0x2005100E, PHILIPS_MR_DD001)) if item is not None else None
            if ss is None:
                ss = element_value(find_private(ds, 0x2005100E, PHILIPS_MR_DD001))
            if not ss:
                raise EnhancedError(f"{path}: frame {f + 1} lacks the Philips scale slope (2005,100E) that fp "
                                    f"scaling needs")
            # FP = DV / (RS * SS) = PV / SS + RI / (RS * SS)
            intercepts[f] = intercepts[f] / (slopes[f] * float(ss))
            slopes[f] = 1.0 / float(ss)
    return slopes, intercepts


def _fill(ds, path, nframes, rows, columns, cells, ncells, scaling):
    import numpy as np

    pixels = _pixel_frames(ds, path, nframes, rows, columns)
    filled = len(np.unique(cells)) == ncells
    if scaling == "raw":
        out = (np.empty if filled else np.zeros)((ncells, rows, columns), dtype=pixels.dtype.newbyteorder("="))
        out[cells] = pixels
        return out
    slopes, intercepts = frame_scaling(ds, path, nframes, scaling)
    out = np.empty((ncells, rows, columns), dtype=np.float32)
    if not filled:
        out.fill(np.nan)
    step = 256
    for start in range(0, nframes, step):
        stop = min(start + step, nframes)
        block = pixels[start:stop].astype(np.float32)
        block *= slopes[start:stop, None, None].astype(np.float32)
        block += intercepts[start:stop, None, None].astype(np.float32)
        out[cells[start:stop]] = block
    return out


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return "(" + ", ".join(_short(v) for v in value) + ")"
    if value is None:
        return "-"
    return str(value)


def _jsonable(value):
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    return value
