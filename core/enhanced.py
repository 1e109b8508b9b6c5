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

Also public, for plugins working on Enhanced MR files: :func:`read_dataset`,
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
        frame_axes = {id(a): a for a in self.axes}
        for n, label in enumerate(self.labels):
            size = self.shape[n]
            axis = next((a for a in frame_axes.values() if a.label == label), None)
            shown = ""
            if axis is not None:
                vals = [_short(v) for v in axis.values[:6]]
                shown = ": " + ", ".join(vals) + (", ..." if len(axis.values) > 6 else "")
            lines.append(f"  axis {n}  {size:5d}  {label}{shown}")
        return "\n".join(lines)


# -- small public helpers ---------------------------------------------------------------------

def _el(ds, keyword: str):
    """The element ``keyword`` of ``ds``, or None."""
    from pydicom.datadict import tag_for_keyword

    return ds.get(tag_for_keyword(keyword))


def tag_text(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def read_dataset(path, pixels: bool = True):
    """The pydicom data set of ``path`` (``.gz`` read through gzip, or bytes); EnhancedError if it is not DICOM."""
    import gzip
    import io

    if isinstance(path, (bytes, bytearray, memoryview)):  # an encoded file in memory
        source, path = io.BytesIO(path), Path("<bytes>")
        return _dcmread(source, path, pixels)
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                source = io.BytesIO(fh.read())
        else:
            source = str(path)
    except OSError as exc:
        if isinstance(exc, FileNotFoundError):
            raise EnhancedError(f"{path}: no such file") from None
        raise EnhancedError(f"{path}: cannot be read: {exc}") from None
    return _dcmread(source, path, pixels)


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
    item = frame_item(ds, frame, dim.group, dim.group_creator or (PHILIPS_MR_DD005 if dim.group == 0x2005140F else None))
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
    ds = read_dataset(path, pixels=True)
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

    # Coordinates: DIV value -> attribute value, one per dimension, from the first frame that has it.
    coords: dict = {}
    for d, dim in enumerate(dims):
        mapping: dict = {}
        for f in range(nframes):
            v = int(div[f, d])
            value = _coordinate(ds, f, dim)
            if v not in mapping:
                mapping[v] = value
            elif mapping[v] != value and not (_is_num(mapping[v]) and _is_num(value)
                                              and abs(mapping[v] - value) < 1e-6):
                log.debug("%s: %s index %d means both %r and %r", path, dim.label, v, mapping[v], value)
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
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
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
    out = (np.empty if filled else lambda *a, **k: np.full(*a, np.nan, **k))((ncells, rows, columns),
                                                                             dtype=np.float32)
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
