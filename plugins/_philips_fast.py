"""dcm2par's fast path: the PAR columns of a large Enhanced MR file without pydicom.

pydicom parses every per-frame functional group item (about 100 elements each):
20,000 frames take a minute and gigabytes, and importing pydicom alone costs
0.3 s.  Here the host's lean reader (``dcmpipe.enhanced``) reads the top level
(the bytes before the Per-frame Functional Groups Sequence) and the first frame
item; the file is memory-mapped, so only the pages read are touched.  The other
frames are found by walking all frame items at once with numpy
(``_walk_columns``: frame items written by one program have the same elements in
the same order, only some value lengths differ), or, when their layouts differ,
by searching each wanted element by tag and VR (``_search_columns``).  Anything
unexpected (implicit VR, a frame count that does not match, a value not found)
returns None and the caller uses the pydicom path; tests check that every path
gives the same records.

Values are kept in distinct-value form (:class:`Col`: a code per frame into a
list of distinct values): a 20,000-frame fMRI run has 40 distinct slice
positions and 500 dynamic times, so every conversion and format runs once per
distinct value, and per-frame work is numpy's.
"""

from __future__ import annotations

import os
import re
import struct

from . import _philips_par as par
from ._philips_dicom import DD001, MR001, MR005, PhilipsError, _code, _num, _round, pget, private_tag

ITEM = b"\xfe\xff\x00\xe0"
PFG = struct.pack("<HH", 0x5200, 0x9230) + b"SQ\x00\x00"

# name: tag, or (creator, offset) of a private element
PUBLIC = {
    "stack_id": 0x00209056, "in_stack": 0x00209057, "temporal_index": 0x00209128,
    "spacing": 0x00280030, "thickness": 0x00180050, "between": 0x00180088,
    "ipp": 0x00200032, "iop": 0x00200037, "contrast": 0x00089209, "percent": 0x00180093,
    "ri": 0x00281052, "rs": 0x00281053, "wc": 0x00281050, "ww": 0x00281051,
    "effective_te": 0x00189082, "b_value": 0x00189087, "trigger_delay": 0x00209153,
}
PRIVATE = {
    "slice": (DD001, 0x0A), "echo": 0x00180086, "dynamic": 0x00200100, "phase": (DD001, 0x08),
    "type": (MR001, 0x11), "sequence": (MR001, 0x6E), "ss": (MR001, 0x0E), "display": (MR001, 0x04),
    "fmri": (MR001, 0x63), "ed_es": (DD001, 0x07), "te": 0x00180081, "dyn_time": (MR001, 0xA0),
    "trigger": 0x00181060, "b_factor": (DD001, 0x03), "averages": 0x00180083, "flip": 0x00181314,
    "heart_rate": 0x00181088, "rr_low": 0x00181081, "rr_high": 0x00181082, "turbo": 0x00180091,
    "inversion": 0x00180082, "b_number": (MR005, 0x12), "gradient_number": (MR005, 0x13),
    "anisotropy": 0x00189147, "diff_rl": (MR001, 0xB0), "diff_ap": (MR001, 0xB1), "diff_fh": (MR001, 0xB2),
    "label": (MR005, 0x29), "p_spacing": 0x00280030, "p_thickness": 0x00180050, "p_between": 0x00180088,
    "p_ri": 0x00281052, "p_rs": 0x00281053, "p_wc": 0x00281050, "p_ww": 0x00281051,
}
_BINARY = {"FL": "<f", "FD": "<d", "UL": "<I", "SL": "<i", "US": "<H", "SS": "<h"}
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
_DELIMITERS = {b"\xfe\xff\x00\xe0", b"\xfe\xff\x0d\xe0", b"\xfe\xff\xdd\xe0"}


# The per-frame values the console's row order needs (``row_order``, via ``columns_from_values``).
ORDER_KEYS = frozenset({"slice", "in_stack", "echo", "dynamic", "temporal_index", "phase", "type", "sequence",
                        "b_number", "gradient_number", "label"})


# -- columns in distinct-value form ---------------------------------------------------------------


class _Later:
    """A value computed when first asked for (``function(*args)``)."""

    __slots__ = ("function", "args")

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __call__(self):
        return self.function(*self.args)


class LazyColumns(dict):
    """{name: Col}, each computed when first read (a ``_Later`` until then)."""

    def __getitem__(self, name):
        value = dict.__getitem__(self, name)
        if isinstance(value, _Later):
            value = value()
            dict.__setitem__(self, name, value)
        return value

    def get(self, name, default=None):
        return self[name] if name in self else default

    def values(self):
        return [self[name] for name in self]

    def items(self):
        return [(name, self[name]) for name in self]



class Col:
    """One value per frame, kept as ``codes`` (numpy integers, one per frame) into ``values`` (distinct).

    ``values`` may hold equal entries (two raw texts that decode alike); what matters is that frames
    with equal raw values share a code, so each conversion runs once per distinct value.
    """

    __slots__ = ("codes", "values")

    def __init__(self, codes, values: list):
        self.codes, self.values = codes, values

    @classmethod
    def const(cls, value, n: int) -> "Col":
        import numpy as np

        return cls(np.zeros(n, dtype=np.intp), [value])

    @classmethod
    def of(cls, items: list) -> "Col":
        """From a plain list; values are told apart by type and ``repr`` (-0.0 is not 0.0; lists work)."""
        import numpy as np

        memo, values, codes = {}, [], []
        for item in items:
            key = (type(item), repr(item))
            code = memo.get(key)
            if code is None:
                code = memo[key] = len(values)
                values.append(item)
            codes.append(code)
        return cls(np.asarray(codes, dtype=np.intp), values)

    def __len__(self) -> int:
        return len(self.codes)

    def map(self, function) -> "Col":
        return Col(self.codes, [function(v) for v in self.values])

    def tolist(self) -> list:
        return list(map(self.values.__getitem__, self.codes.tolist()))

    def array(self, dtype=float):
        """The values per frame as a numpy array (numbers only)."""
        import numpy as np

        return np.asarray(self.values, dtype=dtype)[self.codes]


def _empty(value) -> bool:
    return value is None or (isinstance(value, str) and value == "")


def combine(cols: list):
    """(codes per frame of each distinct combination, [tuple of value codes per combination])."""
    import numpy as np

    key = np.zeros(len(cols[0]), dtype=np.int64)
    radix = 1
    for col in cols:
        radix *= max(len(col.values), 1)
    if radix >= 1 << 62:  # too many combinations for one integer key: unique rows
        stacked = np.stack([c.codes for c in cols], axis=1)
        unique, inverse = np.unique(stacked, axis=0, return_inverse=True)
        return inverse.reshape(-1), [tuple(row) for row in unique.tolist()]
    for col in cols:
        key = key * max(len(col.values), 1) + col.codes
    unique, inverse = np.unique(key, return_inverse=True)
    combos = []
    for number in unique.tolist():
        parts = []
        for col in reversed(cols):
            size = max(len(col.values), 1)
            parts.append(number % size)
            number //= size
        combos.append(tuple(reversed(parts)))
    return inverse.reshape(-1), combos


def merged(cols: list, default=None) -> Col:
    """Per frame, the first of ``cols`` with a value (not None, not ""), else ``default``."""
    out = cols[0]
    for following in cols[1:]:
        if not any(_empty(v) for v in out.values):
            return out
        codes, combos = combine([out, following])
        out = Col(codes, [out.values[a] if not _empty(out.values[a]) else following.values[b] for a, b in combos])
    if not any(_empty(v) for v in out.values):
        return out
    return Col(out.codes, [default if _empty(v) else v for v in out.values])


# -- reading the per-frame values ----------------------------------------------------------------------


def _decode(vr: str, raw: bytes):
    raw = bytes(raw)  # a slice of the mapped file is a memoryview
    if vr in _BINARY:
        fmt = _BINARY[vr]
        count = len(raw) // struct.calcsize(fmt)
        values = struct.unpack("<%d%s" % (count, fmt[1]), raw[:count * struct.calcsize(fmt)])
        return values[0] if count == 1 else list(values)
    text = raw.decode("latin-1").strip(" \0")
    if vr in ("DS", "IS"):
        parts = text.split("\\")
        return parts[0] if len(parts) == 1 else parts
    return text


def _shared_value(shared, tag: int):
    """A value of a shared functional group (one level down), or None."""
    if shared is None:
        return None
    for element in shared:
        if element.VR == "SQ" and element.value:
            item = element.value[0]
            if tag in item:
                return item[tag].value
    return None


def _layout(region: bytes, at: int, end: int):
    """The element headers of one frame item from ``at``, in byte order, walked in Python.

    A list of (offset from the item start, tag bytes + VR, header size, length position, length
    bytes, depth, is an element); None when the item holds something the vectorised walk cannot follow
    (an undefined-length value other than a sequence or item, odd offsets).
    """
    steps = []
    depth = 0
    start = at
    ends = []  # the end offsets of defined-length items and sequences still open
    while True:
        while ends and at >= ends[-1]:
            ends.pop()
            depth -= 1
        if depth == 0 and steps:
            return steps, at
        if at + 8 > end or at & 1:
            return None
        tag = bytes(region[at:at + 4])
        if tag in _DELIMITERS:
            length = struct.unpack_from("<I", region, at + 4)[0]
            steps.append((at - start, tag, 8, None, 0, depth, False))
            at += 8
            if tag == b"\xfe\xff\x00\xe0":  # an item: its contents follow
                depth += 1
                if length != 0xFFFFFFFF:
                    ends.append(at + length)
            else:
                depth -= 1
                if depth < 0:
                    return None
            continue
        vr = bytes(region[at + 4:at + 6])
        if vr in _LONG_VRS:
            length = struct.unpack_from("<I", region, at + 8)[0]
            steps.append((at - start, tag + vr, 12, 8, 4, depth, vr != b"SQ"))
            at += 12
            if vr == b"SQ":
                depth += 1
                if length != 0xFFFFFFFF:
                    ends.append(at + length)
                continue
            if length == 0xFFFFFFFF:
                return None
            at += length
        else:
            length = struct.unpack_from("<H", region, at + 6)[0]
            steps.append((at - start, tag + vr, 8, 6, 2, depth, True))
            at += 8 + length


def _plan(frame0, p0, shared):
    """[(name, tag, VR or None, in the private item)] of every wanted value, from the first frame."""

    def vr_in(dataset, tag):
        if tag in dataset:
            return dataset[tag].VR
        for element in dataset:
            if element.VR == "SQ" and element.value and tag in element.value[0]:
                return element.value[0][tag].VR
        return None

    plan = []
    for name, tag in PUBLIC.items():
        vr = vr_in(frame0, tag)
        plan.append((name, tag, vr if vr != "SQ" else None, False))
    for name, spec in PRIVATE.items():
        tag = spec if isinstance(spec, int) else private_tag(p0, *spec)
        plan.append((name, tag, p0[tag].VR if tag is not None and tag in p0 else None, True))
    return plan


# A walk step's header as checked in every frame: tag, VR and reserved bytes or short length (8 bytes), and
# for the long VRs the 4-byte length after them.
_TAG_VR = (1 << 48) - 1
_TAG = (1 << 32) - 1


def _variable_steps(region, starts, steps):
    """The steps of frame 1's layout whose length differs in some frame, judged on a sample of frames;
    None when a sampled frame has other elements (the caller searches instead).

    A step's length shows as the distance to the next step.  A variable step the sample misses (or a
    sequence or item of defined length that varies) is found by the walk itself (one more gather).
    """
    import numpy as np

    nframes = len(starts)
    # Frames spread by the golden ratio: evenly spaced picks would meet the same few dynamics again and
    # again in a slice-major file (a time with more digits from dynamic 10 on would go unseen).
    picks = sorted({1, 2, nframes - 1, *(int(nframes * ((i * 0.6180339887) % 1)) for i in range(1, 24))} - {0})
    heads = [step[1] for step in steps]
    spans = np.diff([step[0] for step in steps])
    variable = np.zeros(len(spans), dtype=bool)
    for number in picks:
        if number >= nframes:
            continue
        walked = _layout(region, int(starts[number]), len(region))
        if walked is None or [step[1] for step in walked[0]] != heads:
            return None
        variable |= np.diff([step[0] for step in walked[0]]) != spans
    return set(np.flatnonzero(variable).tolist())


def _walk_columns(region, words, octets, starts, plan, private_seq, shared):
    """The value columns found by walking every frame item at once, in stretches of frame 1's layout.

    Frame items written by one program have the same elements in the same order; only some value
    lengths differ (a UID with another counter, a time with more digits).  Between two such
    variable elements every element is where it is in frame 1, relative to the first: one numpy
    gather per stretch checks, in every frame, the header (tag, VR, length) of the elements the row
    order needs and of the stretch's last element (any other difference in layout moves them), and
    the last one's lengths give the next stretch's positions.  The other values, and their headers,
    are checked when first read (``_checked_values``).  None when any frame differs otherwise (the
    caller searches instead).
    """
    import numpy as np

    nframes = len(starts)
    walked = _layout(region, int(starts[0]), len(region))
    if walked is None:
        return None
    steps, _ = walked
    split = struct.pack("<HH", private_seq >> 16, private_seq & 0xFFFF) + b"SQ"
    split_at = next((k for k, step in enumerate(steps) if step[1] == split and step[5] == 1), None)
    if split_at is None:
        return None
    wanted = {}  # step number -> [(name, vr)]
    entries = {}  # name -> its plan entry (for a search of that element alone)
    columns = {}
    for entry in plan:
        name, tag, vr, private_part = entry
        entries[name] = entry
        if vr is None:
            columns[name] = Col.const(_shared_value(shared, tag) if not private_part else None, nframes)
            continue
        key = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr.encode()
        found = [k for k, step in enumerate(steps) if step[1] == key and step[6]
                 and (k >= split_at if private_part else k < split_at)]
        if not found:
            columns[name] = Col.const(None, nframes)
            continue
        wanted.setdefault(found[0], []).append((name, vr))
    variable = _variable_steps(region, starts, steps)
    if variable is None:
        return None
    # The 8 bytes at any offset as one little-endian integer (an overlapping, unaligned view): one
    # gather gives an element's tag, VR and short length.
    heads = np.ndarray((len(region) - 7,), dtype="<u8", buffer=region, strides=(1,))
    first = int(starts[0])
    # Frame 1's header of every step (8 bytes), and the 4-byte length after a long VR's.
    expect = [int.from_bytes(region[first + step[0]:first + step[0] + 8], "little") for step in steps]
    long_length = [int.from_bytes(region[first + step[0] + 8:first + step[0] + 12], "little")
                   if step[3] == 8 else None for step in steps]
    def check(k, numbers, pos):
        """(headers found, positions, frames x numbers: True where a header differs from frame 1's)."""
        rel = np.array([steps[j][0] - steps[k][0] for j in numbers], dtype=np.int64)
        at = pos[:, None] + rel
        found = heads[at]
        bad = found != np.array([expect[j] for j in numbers], dtype=np.uint64)
        for c, j in enumerate(numbers):
            if j in variable:  # only the tag and VR must be frame 1's
                mask = _TAG_VR if len(steps[j][1]) == 6 else _TAG
                bad[:, c] = (found[:, c] & mask) != (expect[j] & mask)
            elif steps[j][3] == 8:  # a long length: the 4 bytes after the 8
                bad[:, c] |= (heads[at[:, c] + 8] & _TAG) != long_length[j]
        return found, at, bad

    pos = starts.astype(np.int64)  # where the current stretch's first step is, in every frame
    k = 0
    try:  # positions only grow; one past the region raises IndexError
        while k < len(steps):
            end = k  # the stretch: steps k..end, ending at a variable step (its length is read per frame)
            while end < len(steps) - 1 and end not in variable:
                end += 1
            # Only the steps the row order needs and the last are checked now (any other difference in
            # layout moves them); the other values, and their headers, when first used.
            numbers = [j for j in range(k, end + 1) if j == end or j in wanted and not ORDER_KEYS.isdisjoint(
                name for name, _ in wanted[j])]
            found, at, bad = check(k, numbers, pos)
            if bad.any():
                # Find the first step that differs, checking every step up to there; the same element
                # with another length is a variable step the sample missed; anything else is another layout.
                upto = numbers[int(np.flatnonzero(bad.any(axis=0))[0])]
                every = list(range(k, upto + 1))
                found_all, _, bad_all = check(k, every, pos)
                c = int(np.flatnonzero(bad_all.any(axis=0))[0])
                step = steps[every[c]]
                mask = _TAG_VR if len(step[1]) == 6 else _TAG
                if every[c] in variable or ((found_all[:, c] & mask) != int.from_bytes(step[1], "little")).any():
                    return None
                variable.add(every[c])
                continue  # this stretch again, ending there
            for j in range(k, end):
                if j in wanted and j not in numbers:  # a fixed place: checked when first used
                    at_j = pos + (steps[j][0] - steps[k][0])
                    for name, vr in wanted[j]:
                        columns[name] = _Later(_checked_values, region, words, octets, heads, starts, at_j, steps[j],
                                               expect[j], long_length[j], vr, entries[name], private_seq, shared)
            for c, j in enumerate(numbers):
                if j not in wanted:
                    continue
                step = steps[j]
                value_at = at[:, c] + step[2]
                if j in variable:
                    lengths = (found[:, c] >> 48) if step[4] == 2 else (heads[at[:, c] + 8] & _TAG)
                    lengths = lengths.astype(np.int64)
                else:
                    lengths = np.full(nframes, (expect[j] >> 48) if step[4] == 2 else long_length[j], dtype=np.int64)
                for name, vr in wanted[j]:
                    if name in ORDER_KEYS:
                        columns[name] = _values(region, octets, value_at, lengths, vr, heads)
                    else:  # decoded when first used: after the row order is known and the REC is under way
                        columns[name] = _Later(_values, region, octets, value_at, lengths, vr, heads)
            last = steps[end]
            pos = at[:, -1] + last[2]
            if last[3] is not None and last[1][4:] != b"SQ":  # an element: its value follows
                if end in variable:
                    pos = pos + ((found[:, -1] >> 48) if last[4] == 2
                                 else (heads[at[:, -1] + 8] & _TAG)).astype(np.int64)
                else:
                    pos = pos + ((expect[end] >> 48) if last[4] == 2 else long_length[end])
            if np.any(pos & 1):
                return None
            k = end + 1
    except IndexError:
        return None
    # Every frame item ends where the next one starts.
    if nframes > 1 and not np.array_equal(pos[:-1], starts[1:]):
        return None
    return columns


def _checked_values(region, words, octets, heads, starts, at, step, expect: int, long_length, vr: str, entry,
                    private_seq, shared) -> Col:
    """The values of one element at the same place in every frame (``at``: its header), once its header
    (tag, VR, length) is checked in every frame; where a frame has something else there, the element
    is searched for by tag instead."""
    import numpy as np

    size, length_bytes = step[2], step[4]
    found = heads[at]
    good = bool((found == np.uint64(expect)).all())
    if good and step[3] == 8:
        good = bool(((heads[at + 8] & _TAG) == long_length).all())
    if not good:
        searched = _search_columns(region, words, octets, starts, [entry], private_seq, shared)
        if searched is None:
            raise PhilipsError(f"frame items not laid out alike, and {entry[0]} not found by its tag")
        return searched[entry[0]]
    length = (expect >> 48) if length_bytes == 2 else long_length
    return _values(region, octets, at + size, np.full(len(at), length, dtype=np.int64), vr, heads)


def _values(region, octets, at, lengths, vr: str, heads=None) -> Col:
    """The decoded values of one element in every frame (``at``: value offsets, ``lengths``: value lengths).

    ``heads``: the region's 8-byte integers at every offset (see ``_walk_columns``), for short values.
    """
    import numpy as np

    nframes = len(at)
    if not nframes:
        return Col(np.zeros(0, dtype=np.intp), [])
    width = int(lengths.max())
    if width == 0:
        return Col.const(_decode(vr, b""), nframes)
    if width <= 8 and heads is not None and int(at.max()) < len(heads) and int(lengths.min()) == width:
        keys = heads[at]  # the value and what follows it, as one integer per frame
        if width < 8:
            keys &= (1 << (8 * width)) - 1
        first = int(at[0])
        if (keys == keys[0]).all():
            return Col.const(_decode(vr, region[first:first + width]), nframes)
        unique_index, inverse = np.unique(keys, return_index=True, return_inverse=True)[1:]
        return Col(inverse.reshape(-1), [_decode(vr, region[a:a + width]) for a in at[unique_index].tolist()])
    if width <= 256 and int(at.max()) + width <= len(octets):
        # Each frame's value bytes as one row (a copy of ``width`` bytes per frame), compared as a whole.
        picked = np.lib.stride_tricks.sliding_window_view(octets, width)[at]
        if not np.all(lengths == width):  # shorter values: zero the bytes after them, keep the length
            picked = np.where(np.arange(width) < lengths[:, None], picked, 0).astype(np.uint8)
            picked = np.concatenate([picked, lengths.astype(np.uint8)[:, None]], axis=1)
        if np.array_equal(picked, np.broadcast_to(picked[0], picked.shape)):  # the same in every frame
            return Col.const(_decode(vr, region[int(at[0]):int(at[0]) + int(lengths[0])]), nframes)
        keys = np.ascontiguousarray(picked).view(f"V{picked.shape[1]}").reshape(-1)
        unique_index, inverse = np.unique(keys, return_index=True, return_inverse=True)[1:]
        values = [_decode(vr, region[a:a + n]) for a, n in zip(at[unique_index].tolist(),
                                                               lengths[unique_index].tolist())]
        return Col(inverse.reshape(-1), values)
    return Col.of([_decode(vr, region[a:a + n]) for a, n in zip(at.tolist(), lengths.tolist())])


def _search_columns(region, words, octets, starts, plan, private_seq, shared):
    """The value columns found by searching each wanted element by tag and VR (frame items of any layout)."""
    import numpy as np

    nframes = len(starts)
    split = struct.pack("<HH", private_seq >> 16, private_seq & 0xFFFF) + b"SQ"
    lows = starts.astype(np.int64)
    splits = np.fromiter((m.start() for m in re.finditer(re.escape(split), region)), dtype=np.int64)
    if len(splits) != nframes or np.any(np.searchsorted(lows, splits, "right") - 1 != np.arange(nframes)):
        return None
    by_group = {}
    columns = {}
    for name, tag, vr, private_part in plan:
        if vr is None:
            columns[name] = Col.const(_shared_value(shared, tag) if not private_part else None, nframes)
            continue
        group = tag >> 16
        if group not in by_group:
            by_group[group] = np.flatnonzero(words[:-4] == group)
        candidates = by_group[group]
        vr_word = struct.unpack("<H", vr.encode())[0]
        where = candidates[(words[candidates + 1] == (tag & 0xFFFF)) & (words[candidates + 2] == vr_word)] * 2
        raws = [None] * nframes
        if len(where):
            frame = np.searchsorted(lows, where, "right") - 1
            inside = where >= splits[frame]
            keep = inside if private_part else ~inside
            where, frame = where[keep][::-1], frame[keep][::-1]  # reversed: the first occurrence wins
            lengths = words[(where + 6) // 2]
            for at, length, number in zip(where.tolist(), lengths.tolist(), frame.tolist()):
                raws[number] = bytes(region[at + 8:at + 8 + length])
        memo = {None: None}  # most values repeat from frame to frame: decode each once
        col = Col.of(raws)
        columns[name] = Col(col.codes, [memo[r] if r in memo else memo.setdefault(r, _decode(vr, r))
                                        for r in col.values])
    return columns


def _item_starts(region: bytes, nframes: int):
    """The offsets of the ``nframes`` frame items in ``region`` (each: item tag, length, then the first
    functional group sequence of frame 1), or None when there are not exactly that many.

    Every item tag at an even offset is found with numpy (as 32-bit words at offsets 0 and 2 mod 4),
    then those followed by frame 1's first sequence tag are kept.
    """
    import numpy as np

    if len(region) < 16:
        return None
    item = int.from_bytes(ITEM, "little")
    aligned = np.frombuffer(region, dtype="<u4", count=len(region) // 4)
    shifted = np.frombuffer(region, dtype="<u4", offset=2, count=(len(region) - 2) // 4)
    found = np.concatenate([np.flatnonzero(aligned == item) * 4, np.flatnonzero(shifted == item) * 4 + 2])
    found = found[found + 14 <= len(region)]
    heads = np.ndarray((len(region) - 7,), dtype="<u8", buffer=region, strides=(1,))
    mark = int.from_bytes(bytes(region[8:12]) + b"SQ", "little")
    starts = found[(heads[found + 8] & 0xFFFFFFFFFFFF) == mark]
    starts.sort()  # the frames' items only: a tenth of the item tags
    if len(starts) != nframes or starts[0] != 0:
        return None
    return starts


def _mapped(path):
    """The whole file, memory-mapped read-only (no copy: the walk reads only the pages it needs), or
    its bytes where mapping fails."""
    import mmap

    with open(path, "rb") as fh:
        try:
            return mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError):  # empty, or a file system without mapping
            return fh.read()


def read_fast(path):
    """(top-level data set, per-frame value columns {name: Col}, pixel data offset), or None."""
    from dcmpipe.enhanced import EnhancedError, lean_item, read_dataset

    data = _mapped(path)
    # The top level is small: everything before the Per-frame Functional Groups Sequence.
    start = data.find(PFG)
    if start < 0:
        return None
    try:
        head = read_dataset(data[:start], pixels=False, lean=True)
    except EnhancedError:
        return None
    meta = getattr(head, "file_meta", None)
    if meta is None or str(meta.get("TransferSyntaxUID", "")) != "1.2.840.10008.1.2.1":
        return None
    rows, columns, bits = int(head.Rows), int(head.Columns), int(head.BitsAllocated)
    nframes = int(head.NumberOfFrames)
    nbytes = rows * columns * bits // 8 * nframes
    padded = nbytes + (nbytes & 1)
    # Pixel Data is the last element (the usual case): its header is found by arithmetic, so the
    # pixel data itself is never read here.
    pixel_at = len(data) - padded - 12
    tag = data[pixel_at:pixel_at + 12] if pixel_at > start else b""
    if len(tag) != 12 or tag[:4] != b"\xe0\x7f\x10\x00" or tag[4:6] not in (b"OW", b"OB") \
            or struct.unpack_from("<I", tag, 8)[0] != padded:
        return None
    region = memoryview(data)[start + 12:pixel_at]  # the frame items
    if region[:4] != ITEM or nframes < 1:
        return None
    import numpy as np

    starts = _item_starts(region, nframes)
    if starts is None:
        return None
    try:
        frame0, _ = lean_item(bytes(region[:int(starts[1]) if nframes > 1 else len(region)]), 0)
    except ValueError:
        return None
    private_seq = private_tag(frame0, MR005, 0x0F)
    if private_seq is None or private_seq not in frame0 or not frame0[private_seq].value:
        return None
    p0 = frame0[private_seq].value[0]
    shared = head.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in head else None
    plan = _plan(frame0, p0, shared)
    words = np.frombuffer(region, dtype="<u2", count=len(region) // 2)
    octets = np.frombuffer(region, dtype=np.uint8)
    values = _walk_columns(region, words, octets, starts, plan, private_seq, shared)
    if values is None:
        values = _search_columns(region, words, octets, starts, plan, private_seq, shared)
    if values is None:
        return None
    return head, LazyColumns(values), pixel_at + 12


# -- PAR columns -----------------------------------------------------------------------------------------


def columns_from_values(ds, values: dict, where) -> LazyColumns:
    """PAR image columns {name: Col} from the values of ``read_fast`` (frame_records' rules).

    Each column is computed when first read: the row order needs only a few, and the REC is written
    while the others are computed and formatted.
    """
    import functools

    stacks = list(pget(ds, DD001, 0x5F) or [])
    stack_values = [{
        "angulation_ap": _num(pget(s, MR001, 0x71)), "angulation_fh": _num(pget(s, MR001, 0x72)),
        "angulation_rl": _num(pget(s, MR001, 0x73)),
        "slice_orientation": par.VIEW_AXIS.get(str(pget(s, MR001, 0x81, "")).strip().upper(), 0)} for s in stacks]
    rows, columns, bits = int(ds.Rows), int(ds.Columns), int(ds.BitsAllocated)
    top_between = ds.get("SpacingBetweenSlices")
    top_contrast = str(ds.get("AcquisitionContrast", "UNKNOWN") or "UNKNOWN")
    top_percent = ds.get("PercentSampling", 100)
    nframes = len(values["dynamic"])

    def pick(*names, default=None):
        return merged([values[name] for name in names], default)

    def ints(*names, default):
        return pick(*names, default=default).map(lambda x: int(_num(x)))

    def floats(*names, default, fallback=0.0):
        return pick(*names, default=default).map(lambda x: _num(x, fallback))

    def upper(*names, default):
        return pick(*names, default=default).map(lambda x: str(x).strip().upper())

    @functools.lru_cache(maxsize=None)
    def thickness():
        return floats("thickness", "p_thickness", default=None)

    @functools.lru_cache(maxsize=None)
    def geometry():
        """(codes per frame, [(centre, column spacing, row spacing, stack)]) of the distinct combinations of
        position, orientation, spacing and stack."""
        parts = [values["ipp"], values["iop"], pick("spacing", "p_spacing"), pick("stack_id", default="1")]
        codes, combos = combine(parts)
        found = []
        for ipp_code, iop_code, spacing_code, stack_code in combos:
            ipp, iop, pixel = parts[0].values[ipp_code], parts[1].values[iop_code], parts[2].values[spacing_code]
            if pixel is None or ipp is None or iop is None:
                first = int((codes == len(found)).argmax())
                raise PhilipsError(f"{where}: frame {first + 1} has no Pixel Spacing or Plane Position/Orientation")
            stack_id = parts[3].values[stack_code]
            try:
                stack = stack_values[int(str(stack_id).strip()) - 1]
            except (ValueError, IndexError):
                stack = stack_values[0]
            row_spacing, col_spacing = float(pixel[0]), float(pixel[1])
            p = [float(x) for x in ipp]
            o = [float(x) for x in iop]
            half_x, half_y = col_spacing * (columns - 1) / 2, row_spacing * (rows - 1) / 2
            found.append(([p[k] + o[k] * half_x + o[3 + k] * half_y for k in range(3)], col_spacing, row_spacing,
                          stack))
        return codes, found

    def geo(function):
        codes, found = geometry()
        return Col(codes, [function(g) for g in found])

    def gap():
        between = pick("between", "p_between", default=top_between)
        codes, combos = combine([between, thickness()])
        return Col(codes, [(_num(between.values[b]) - thickness().values[t]) if between.values[b] is not None
                           else 0.0 for b, t in combos])

    unknown = par.CONTRASTS.index("UNKNOWN")
    makers = {
        "slice": lambda: ints("slice", "in_stack", default=1), "echo": lambda: ints("echo", default=1),
        "dynamic": lambda: ints("dynamic", "temporal_index", default=1), "phase": lambda: ints("phase", default=1),
        "type": lambda: pick("type", default="M").map(
            lambda x: _code(x, par.IMAGE_TYPES, "image type (2005,1011)", where)),
        "sequence": lambda: pick("sequence", default="UNSPECIFIED").map(
            lambda x: _code(x, par.SEQUENCES, "scanning sequence (2005,106E)", where)),
        "index": None,  # the row each frame goes to: known once the rows are ordered
        "bits": lambda: Col.const(bits, nframes),
        "scan_percentage": lambda: pick("percent", default=top_percent).map(lambda x: int(_num(x, 100))),
        "recon_x": lambda: Col.const(columns, nframes), "recon_y": lambda: Col.const(rows, nframes),
        "rescale_intercept": lambda: floats("ri", "p_ri", default=0),
        "rescale_slope": lambda: floats("rs", "p_rs", default=1, fallback=1.0),
        "scale_slope": lambda: floats("ss", default=None, fallback=1.0),
        "window_center": lambda: pick("wc", "p_wc", default=0).map(_round),
        "window_width": lambda: pick("ww", "p_ww", default=0).map(_round),
        "angulation_ap": lambda: geo(lambda g: g[3]["angulation_ap"]),
        "angulation_fh": lambda: geo(lambda g: g[3]["angulation_fh"]),
        "angulation_rl": lambda: geo(lambda g: g[3]["angulation_rl"]),
        "offcentre_ap": lambda: geo(lambda g: g[0][1]), "offcentre_fh": lambda: geo(lambda g: g[0][2]),
        "offcentre_rl": lambda: geo(lambda g: g[0][0]),
        "thickness": thickness, "gap": gap,
        "display_orientation": lambda: upper("display", default="NONE").map(
            lambda x: par.DISPLAY.index(x) if x in par.DISPLAY else 0),
        "slice_orientation": lambda: geo(lambda g: g[3]["slice_orientation"]),
        "fmri_status": lambda: ints("fmri", default=0),
        "ed_es": lambda: upper("ed_es", default="U").map(lambda x: par.ED_ES.get(x, 2)),
        "spacing_x": lambda: geo(lambda g: g[1]), "spacing_y": lambda: geo(lambda g: g[2]),
        "echo_time": lambda: floats("te", "effective_te", default=0),
        "dyn_time": lambda: floats("dyn_time", default=0),
        "trigger_time": lambda: floats("trigger", "trigger_delay", default=0),
        "b_factor": lambda: floats("b_factor", "b_value", default=0),
        "averages": lambda: ints("averages", default=1), "flip_angle": lambda: floats("flip", default=0),
        "heart_rate": lambda: ints("heart_rate", default=0), "rr_low": lambda: ints("rr_low", default=0),
        "rr_high": lambda: ints("rr_high", default=0), "turbo": lambda: ints("turbo", default=0),
        "inversion_delay": lambda: floats("inversion", default=0),
        "b_number": lambda: ints("b_number", default=1), "gradient_number": lambda: ints("gradient_number", default=1),
        "contrast": lambda: upper("contrast", default=top_contrast).map(
            lambda x: par.CONTRASTS.index(x) if x in par.CONTRASTS else unknown),
        "anisotropy": lambda: upper("anisotropy", default="").map(lambda x: par.ANISOTROPY.get(x, 0)),
        "diffusion_ap": lambda: floats("diff_ap", default=0), "diffusion_fh": lambda: floats("diff_fh", default=0),
        "diffusion_rl": lambda: floats("diff_rl", default=0),
        "label": lambda: upper("label", default="").map(lambda x: 2 if x == "LABEL" else 1),
    }
    return LazyColumns({name: None if makers[name] is None else _Later(makers[name]) for name in par.COLUMNS})


def row_order(mode3d: bool, columns: dict):
    """The frame number of each PAR row in the console's order (SPEC 1.6; ``par.row_sort_key``), stable."""
    import numpy as np

    ranks = columns["type"].map(lambda t: par.TYPE_RANK.get(t, 4 + t))
    if mode3d:
        keys = [columns[n] for n in ("dynamic", "slice", "label", "phase", "gradient_number", "b_number", "echo")]
        keys += [ranks, columns["sequence"]]
    else:
        keys = [columns[n] for n in ("dynamic", "phase", "label", "gradient_number", "b_number", "echo")]
        keys += [ranks, columns["sequence"], columns["slice"]]
    return np.lexsort([key.array(np.int64) for key in reversed(keys)])  # lexsort: last key first; stable


def image_lines(columns: dict, order, version: str) -> list[str]:
    """The PAR image lines in row order: row k is frame ``order[k]``; the index column, if None, is the row number.

    Each field is formatted once per distinct value, fields that are the same on every row are joined
    into the line's fixed text, and each line is one ``%`` of the fields that vary.
    """
    import numpy as np

    template, varying = [], []
    for name, *formats in par.LINE_FORMAT:
        fmt = formats[par._FORMAT_INDEX[version]]
        if fmt is None:
            continue
        e3 = fmt.endswith("E3")
        piece = fmt[:-3] + "%s" if e3 else fmt
        if name == "index" and columns.get("index") is None:  # the row number
            texts, codes = [piece % row for row in range(len(order))], None
        else:
            col = columns[name]
            texts = [piece % (par._e3(v) if e3 else v) for v in col.values]
            codes = col.codes[order]
        if len(set(texts)) == 1:
            template.append(texts[0].replace("%", "%%"))
            continue
        template.append("%s")
        varying.append(texts if codes is None else np.asarray(texts, dtype=object)[codes].tolist())
    line = "".join(template)
    if not varying:
        return [line % ()] * len(order)
    return [line % fields for fields in zip(*varying)]


def records_from_values(ds, values: dict, where) -> list[dict]:
    """PAR image records (dicts, frame order, ``index`` = frame number) from the values of ``read_fast``."""
    columns = columns_from_values(ds, values, where)
    nframes = len(values["dynamic"])
    lists = [list(range(nframes)) if name == "index" else col.tolist() for name, col in columns.items()]
    return [dict(zip(columns, row)) for row in zip(*lists)]
