"""dcm2par's fast path: per-frame values of a large Enhanced MR file without one pydicom object per frame.

pydicom parses every per-frame functional group item (about 100 elements each):
20,000 frames take a minute and gigabytes.  Here pydicom reads only the top
level (the bytes before the Per-frame Functional Groups Sequence) and the
first frame item; the other frames are split at their first functional group
and each wanted element is found by its tag and VR (as the first frame has
them) with ``bytes.find``, separately in the public part of the item and in
the private item (2005,140F).  Anything unexpected (implicit VR, a frame
count that does not match, a value not found) returns None and the caller
uses the pydicom path; tests check both paths give the same records.
"""

from __future__ import annotations

import io
import os
import re
import struct

from . import _philips_par as par
from ._philips_dicom import DD001, MR001, MR005, _num, private_tag

ITEM = b"\xfe\xff\x00\xe0"
PFG = struct.pack("<HH", 0x5200, 0x9230) + b"SQ\x00\x00"

# name: (part, tag or (creator, offset), default)
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


def _decode(vr: str, raw: bytes):
    if vr in _BINARY:
        fmt = _BINARY[vr]
        count = len(raw) // struct.calcsize(fmt)
        values = struct.unpack("<%d%s" % (count, fmt[1]), raw)
        return values[0] if count == 1 else list(values)
    text = raw.decode("latin-1").strip(" \0")
    if vr in ("DS", "IS"):
        parts = text.split("\\")
        return parts[0] if len(parts) == 1 else parts
    return text


def _finder(tag: int, vr: str):
    pattern = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr.encode()

    def find(chunk: bytes):
        at = chunk.find(pattern)
        if at < 0:
            return None
        length = struct.unpack_from("<H", chunk, at + 6)[0]
        return _decode(vr, chunk[at + 8:at + 8 + length])

    return find


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


_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
_DELIMITERS = {b"\xfe\xff\x00\xe0", b"\xfe\xff\x0d\xe0", b"\xfe\xff\xdd\xe0"}


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
        tag = region[at:at + 4]
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
        vr = region[at + 4:at + 6]
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


def _walk_columns(region, octets, words, starts, frame0, p0, private_seq, shared, vr_in):
    """The value columns found by walking every frame item at once, step by step of frame 1's layout.

    Frame items of a file written by one program have the same elements in the same order; only the
    value lengths differ.  So the position of element k in every frame is that of element k - 1 plus
    its header and length, one numpy operation over all frames per element, and each element's tag and
    VR is checked in every frame.  None when any frame differs (the caller uses the search path).
    """
    import numpy as np

    nframes = len(starts)
    walked = _layout(region, starts[0], len(region))
    if walked is None:
        return None
    steps, _ = walked
    split = struct.pack("<HH", private_seq >> 16, private_seq & 0xFFFF) + b"SQ"
    split_at = next((k for k, step in enumerate(steps) if step[1] == split and step[5] == 1), None)
    if split_at is None:
        return None
    wanted = {}  # step number -> [(name, vr)]
    plan = []
    for name, tag in PUBLIC.items():
        vr = vr_in(frame0, tag)
        plan.append((name, tag, vr if vr != "SQ" else None, False))
    for name, spec in PRIVATE.items():
        tag = spec if isinstance(spec, int) else private_tag(p0, *spec)
        plan.append((name, tag, p0[tag].VR if tag is not None and tag in p0 else None, True))
    columns = {}
    for name, tag, vr, private_part in plan:
        if vr is None:
            columns[name] = [_shared_value(shared, tag) if not private_part else None] * nframes
            continue
        key = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr.encode()
        found = [k for k, step in enumerate(steps) if step[1] == key and step[6]
                 and (k >= split_at if private_part else k < split_at)]
        if not found:
            columns[name] = [None] * nframes
            continue
        wanted.setdefault(found[0], []).append((name, vr))
    pos = np.asarray(starts, dtype=np.int64)
    if np.any(pos & 1):
        return None
    half = words
    expected_words = {}
    for k, (offset, head, size, length_at, length_bytes, depth, is_value) in enumerate(steps):
        index = pos >> 1
        want = expected_words.get(head)
        if want is None:
            want = expected_words[head] = np.frombuffer(head, dtype="<u2")
        for w in range(len(want)):
            if not np.all(half[index + w] == want[w]):
                return None
        if length_at is None:
            lengths = 0
        elif length_bytes == 2:
            lengths = half[index + 3].astype(np.int64)
        else:
            lengths = half[index + 4].astype(np.int64) | (half[index + 5].astype(np.int64) << 16)
        if k in wanted:
            for name, vr in wanted[k]:
                columns[name] = _values(region, octets, pos + size, lengths, vr)
        if head[4:] == b"SQ":
            pos = pos + size  # step into the sequence
        else:
            pos = pos + size + lengths
        if np.any(pos & 1):
            return None
    # Every frame item must end where the next one starts.
    if nframes > 1 and not np.array_equal(pos[:-1], np.asarray(starts[1:], dtype=np.int64)):
        return None
    return columns


def _values(region, octets, at, lengths, vr: str) -> list:
    """Decoded values of one element in every frame (``at``: value offsets, ``lengths``: value lengths)."""
    import numpy as np

    nframes = len(at)
    if nframes and np.all(lengths == lengths[0]):
        width = int(lengths[0])
        if width == 0:
            return [_decode(vr, b"")] * nframes
        picked = octets[at[:, None] + np.arange(width)]
        if np.array_equal(picked, np.broadcast_to(picked[0], picked.shape)):  # the same in every frame
            return [_decode(vr, picked[0].tobytes())] * nframes
        keys = picked.view(f"<u{width}").reshape(-1) if width in (1, 2, 4, 8) else picked.view(f"V{width}").reshape(-1)
        unique, inverse = np.unique(keys, return_inverse=True)
        decoded = [_decode(vr, u.tobytes()) for u in unique]
        return list(map(decoded.__getitem__, inverse.reshape(-1).tolist()))
    raws = [region[a:a + n] for a, n in zip(at.tolist(), lengths.tolist())]
    memo = {raw: _decode(vr, raw) for raw in set(raws)}
    return [memo[raw] for raw in raws]


def read_fast(path, nframes_hint: int | None = None):
    """(top-level data set, per-frame value columns {name: [value per frame]}, pixel data offset), or None."""
    from pydicom import dcmread
    from pydicom.filereader import read_dataset

    with open(path, "rb") as fh:
        # The top level is small: read until the Per-frame Functional Groups Sequence starts.
        data = b""
        start = -1
        while start < 0:
            block = fh.read(1 << 20)
            if not block:
                return None
            data += block
            start = data.find(PFG)
        head = dcmread(io.BytesIO(data[:start]))
        if str(head.file_meta.TransferSyntaxUID) != "1.2.840.10008.1.2.1":
            return None
        rows, columns, bits = int(head.Rows), int(head.Columns), int(head.BitsAllocated)
        nframes = int(head.NumberOfFrames)
        nbytes = rows * columns * bits // 8 * nframes
        padded = nbytes + (nbytes & 1)
        # Pixel Data is the last element (the usual case): find its header by arithmetic, so the
        # pixel data itself is never read here.
        size = os.fstat(fh.fileno()).st_size
        pixel_at = size - padded - 12
        fh.seek(pixel_at)
        tag = fh.read(12)
        if pixel_at <= start or tag[:4] != b"\xe0\x7f\x10\x00" or tag[4:6] not in (b"OW", b"OB") \
                or struct.unpack_from("<I", tag, 8)[0] != padded:
            return None
        fh.seek(start + 12)
        region = fh.read(pixel_at - start - 12)
        del data
    if region[:4] != ITEM:
        return None
    first_tag = region[8:12]
    starts = [m.start() for m in re.finditer(re.escape(ITEM) + b".{4}" + re.escape(first_tag) + b"SQ", region,
                                             re.S)]
    if len(starts) != nframes or starts[0] != 0:
        return None
    starts.append(len(region))
    bounds = []
    for i in range(nframes):
        size = struct.unpack_from("<I", region, starts[i] + 4)[0]
        if size != 0xFFFFFFFF:
            bounds.append((starts[i] + 8, starts[i] + 8 + size))
        else:
            bounds.append((starts[i] + 8, starts[i + 1]))
    first_body = region[bounds[0][0]:bounds[0][1]]
    if struct.unpack_from("<I", region, 4)[0] == 0xFFFFFFFF:
        first_body = first_body[:first_body.rfind(b"\xfe\xff\x0d\xe0")]
    frame0 = read_dataset(io.BytesIO(first_body), False, True)
    private_seq = private_tag(frame0, MR005, 0x0F)
    if private_seq is None or private_seq not in frame0 or not frame0[private_seq].value:
        return None
    p0 = frame0[private_seq].value[0]
    split = struct.pack("<HH", private_seq >> 16, private_seq & 0xFFFF) + b"SQ"
    shared = head.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in head else None

    def vr_in(dataset, tag):
        if tag in dataset:
            return dataset[tag].VR
        for element in dataset:
            if element.VR == "SQ" and element.value and tag in element.value[0]:
                return element.value[0][tag].VR
        return None

    # Column by column: every occurrence of a wanted element in the whole sequence, in one C-level
    # search, assigned to its frame (public part: before the frame's 140F item; private: inside it).
    import numpy as np

    words = np.frombuffer(region, dtype="<u2", count=len(region) // 2)
    octets = np.frombuffer(region, dtype=np.uint8)
    walked = _walk_columns(region, octets, words, starts[:nframes], frame0, p0, private_seq, shared, vr_in)
    if walked is not None:
        return head, walked, pixel_at + 12
    lows = np.fromiter((lo for lo, hi in bounds), dtype=np.int64, count=nframes)
    splits = np.fromiter((m.start() for m in re.finditer(re.escape(split), region)), dtype=np.int64)
    if len(splits) != nframes or np.any(np.searchsorted(lows, splits, "right") - 1 != np.arange(nframes)):
        return None
    columns = {}
    by_group = {}

    def column(tag: int, vr: str, private_part: bool):
        group = tag >> 16
        if group not in by_group:
            by_group[group] = np.flatnonzero(words[:-4] == group)
        candidates = by_group[group]
        vr_word = struct.unpack("<H", vr.encode())[0]
        where = candidates[(words[candidates + 1] == (tag & 0xFFFF)) & (words[candidates + 2] == vr_word)] * 2
        out = [None] * nframes
        if not len(where):
            return out
        frame = np.searchsorted(lows, where, "right") - 1
        inside = where >= splits[frame]
        keep = inside if private_part else ~inside
        where, frame = where[keep][::-1], frame[keep][::-1]  # reversed: the first occurrence wins
        lengths = words[(where + 6) // 2]
        if vr in _BINARY and len(where) and np.all(lengths == struct.calcsize(_BINARY[vr])):
            width = struct.calcsize(_BINARY[vr])
            picked = octets[(where + 8)[:, None] + np.arange(width)].reshape(-1)
            decoded = np.frombuffer(picked.tobytes(), dtype=_BINARY[vr]).tolist()
            for number, value in zip(frame.tolist(), decoded):
                out[number] = value
            return out
        for at, length, number in zip(where.tolist(), lengths.tolist(), frame.tolist()):
            out[number] = region[at + 8:at + 8 + length]
        memo = {None: None}  # most values repeat from frame to frame: decode each once
        for raw in set(out):
            if raw is not None:
                memo[raw] = _decode(vr, raw)
        return [memo[raw] for raw in out]

    for name, tag in PUBLIC.items():
        vr = vr_in(frame0, tag)
        if vr is not None and vr != "SQ":
            columns[name] = column(tag, vr, False)
        else:
            columns[name] = [_shared_value(shared, tag)] * nframes
    for name, spec in PRIVATE.items():
        tag = spec if isinstance(spec, int) else private_tag(p0, *spec)
        if tag is not None and tag in p0:
            columns[name] = column(tag, p0[tag].VR, True)
        else:
            columns[name] = [None] * nframes
    return head, columns, pixel_at + 12


def columns_from_values(ds, values: dict, where) -> dict:
    """PAR image columns {name: [value per frame]} from the values of ``read_fast`` (frame_records' rules)."""
    from ._philips_dicom import PhilipsError, _code, _round, pget

    stacks = list(pget(ds, DD001, 0x5F) or [])
    stack_values = [{
        "angulation_ap": _num(pget(s, MR001, 0x71)), "angulation_fh": _num(pget(s, MR001, 0x72)),
        "angulation_rl": _num(pget(s, MR001, 0x73)),
        "slice_orientation": par.VIEW_AXIS.get(str(pget(s, MR001, 0x81, "")).strip().upper(), 0)} for s in stacks]
    rows, columns, bits = int(ds.Rows), int(ds.Columns), int(ds.BitsAllocated)
    top_between = ds.get("SpacingBetweenSlices")
    top_contrast = str(ds.get("AcquisitionContrast", "UNKNOWN") or "UNKNOWN")
    top_percent = ds.get("PercentSampling", 100)
    nframes = len(next(iter(values.values())))

    def merged(*names, default=None):
        """Per frame, the first of the named columns with a value, else ``default``."""
        out = values[names[0]]
        for name in names[1:]:
            if None not in out and "" not in out:
                return out
            out = [a if a is not None and a != "" else b for a, b in zip(out, values[name])]
        if None not in out and "" not in out:
            return out
        return [default if a is None or a == "" else a for a in out]

    def convert(items, function):
        return par.map_distinct(function, items)

    def ints(*names, default):
        return convert(merged(*names, default=default), lambda x: int(_num(x)))

    def floats(*names, default, fallback=0.0):
        return convert(merged(*names, default=default), lambda x: _num(x, fallback))

    def upper(*names, default):
        return convert(merged(*names, default=default), lambda x: str(x).strip().upper())

    col = {
        "slice": ints("slice", "in_stack", default=1), "echo": ints("echo", default=1),
        "dynamic": ints("dynamic", "temporal_index", default=1), "phase": ints("phase", default=1),
        "scan_percentage": convert(merged("percent", default=top_percent), lambda x: int(_num(x, 100))),
        "rescale_intercept": floats("ri", "p_ri", default=0), "rescale_slope": floats("rs", "p_rs", default=1, fallback=1.0),
        "scale_slope": floats("ss", default=None, fallback=1.0),
        "window_center": convert(merged("wc", "p_wc", default=0), _round),
        "window_width": convert(merged("ww", "p_ww", default=0), _round),
        "fmri_status": ints("fmri", default=0), "echo_time": floats("te", "effective_te", default=0),
        "dyn_time": floats("dyn_time", default=0), "trigger_time": floats("trigger", "trigger_delay", default=0),
        "b_factor": floats("b_factor", "b_value", default=0), "averages": ints("averages", default=1),
        "flip_angle": floats("flip", default=0), "heart_rate": ints("heart_rate", default=0),
        "rr_low": ints("rr_low", default=0), "rr_high": ints("rr_high", default=0), "turbo": ints("turbo", default=0),
        "inversion_delay": floats("inversion", default=0), "b_number": ints("b_number", default=1),
        "gradient_number": ints("gradient_number", default=1),
        "diffusion_ap": floats("diff_ap", default=0), "diffusion_fh": floats("diff_fh", default=0),
        "diffusion_rl": floats("diff_rl", default=0),
    }
    types = convert(merged("type", default="M"), lambda x: _code(x, par.IMAGE_TYPES, "image type (2005,1011)", where))
    sequences = convert(merged("sequence", default="UNSPECIFIED"),
                        lambda x: _code(x, par.SEQUENCES, "scanning sequence (2005,106E)", where))
    contrasts = upper("contrast", default=top_contrast)
    displays = upper("display", default="NONE")
    ed_es = upper("ed_es", default="U")
    anisotropy = upper("anisotropy", default="")
    labels = upper("label", default="")
    spacing = merged("spacing", "p_spacing")
    thickness = floats("thickness", "p_thickness", default=None)
    between = merged("between", "p_between", default=top_between)
    stack_ids = merged("stack_id", default="1")
    unknown = par.CONTRASTS.index("UNKNOWN")
    # Geometry per frame: few distinct (position, orientation, spacing, stack) combinations, each computed once.
    geometry = {}
    centres, spacings_x, spacings_y, stacks_of = [], [], [], []
    for number, (ipp, iop, pixel, stack_id) in enumerate(zip(values["ipp"], values["iop"], spacing, stack_ids)):
        if pixel is None or ipp is None or iop is None:
            raise PhilipsError(f"{where}: frame {number + 1} has no Pixel Spacing or Plane Position/Orientation")
        key = (tuple(ipp) if isinstance(ipp, list) else ipp, tuple(iop) if isinstance(iop, list) else iop,
               tuple(pixel) if isinstance(pixel, list) else pixel, stack_id)
        known = geometry.get(key)
        if known is None:
            try:
                stack = stack_values[int(str(stack_id).strip()) - 1]
            except (ValueError, IndexError):
                stack = stack_values[0]
            row_spacing, col_spacing = float(pixel[0]), float(pixel[1])
            p = [float(x) for x in ipp]
            o = [float(x) for x in iop]
            half_x, half_y = col_spacing * (columns - 1) / 2, row_spacing * (rows - 1) / 2
            known = geometry[key] = ([p[k] + o[k] * half_x + o[3 + k] * half_y for k in range(3)],
                                     col_spacing, row_spacing, stack)
        centres.append(known[0])
        spacings_x.append(known[1])
        spacings_y.append(known[2])
        stacks_of.append(known[3])
    col.update({
        "type": types, "sequence": sequences, "index": list(range(nframes)), "bits": [bits] * nframes,
        "recon_x": [columns] * nframes, "recon_y": [rows] * nframes,
        "angulation_ap": [s["angulation_ap"] for s in stacks_of], "angulation_fh": [s["angulation_fh"] for s in stacks_of],
        "angulation_rl": [s["angulation_rl"] for s in stacks_of],
        "offcentre_ap": [c[1] for c in centres], "offcentre_fh": [c[2] for c in centres],
        "offcentre_rl": [c[0] for c in centres],
        "thickness": thickness,
        "gap": convert(list(zip(between, thickness)), lambda bt: (_num(bt[0]) - bt[1]) if bt[0] is not None else 0.0),
        "display_orientation": convert(displays, lambda x: par.DISPLAY.index(x) if x in par.DISPLAY else 0),
        "slice_orientation": [s["slice_orientation"] for s in stacks_of],
        "ed_es": convert(ed_es, lambda x: par.ED_ES.get(x, 2)),
        "spacing_x": spacings_x, "spacing_y": spacings_y,
        "contrast": convert(contrasts, lambda x: par.CONTRASTS.index(x) if x in par.CONTRASTS else unknown),
        "anisotropy": convert(anisotropy, lambda x: par.ANISOTROPY.get(x, 0)),
        "label": convert(labels, lambda x: 2 if x == "LABEL" else 1),
    })
    return {name: col[name] for name in par.COLUMNS}


def records_from_values(ds, values: dict, where) -> list[dict]:
    """PAR image records (dicts, frame order) from the per-frame values of ``read_fast``."""
    columns = columns_from_values(ds, values, where)
    names = list(columns)
    return [dict(zip(names, row)) for row in zip(*columns.values())]
