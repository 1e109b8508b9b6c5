"""A small DICOM parser for dcm2json: the element tree as DCMTK reads it.

It walks a file (or a raw data set) once and keeps every element's value
as the bytes in the file, so that numbers and strings can be written to
JSON "as they are".  It reads every transfer syntax DCMTK's dcm2json reads
without decompressing: implicit and explicit VR little endian, explicit VR
big endian, deflated, and the encapsulated (compressed) ones, whose pixel
data stays a list of fragments.

An element is a tuple ``(tag, vr, value)``; ``value`` is the value's bytes,
a list of items (each a list of elements) for a sequence, or an
:class:`Encapsulated` list of fragments for compressed pixel data.
pydicom is imported only for implicit VR data (the data dictionary gives
the VRs), never for the common explicit VR files.
"""

from __future__ import annotations

import struct

IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
DEFLATED = ("1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.4.95")

VRS = frozenset(
    "AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL UN UR US UT UV".split()
)
LONG_VRS = frozenset("OB OD OF OL OV OW SQ UC UN UR UT SV UV".split())
UNDEFINED = 0xFFFFFFFF
ITEM, ITEM_END, SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
PIXEL_DATA = 0x7FE00010
_VR_INFO = {v.encode(): (v, v in LONG_VRS) for v in VRS}

_LE_TAG_LEN = struct.Struct("<HHI")
_BE_TAG_LEN = struct.Struct(">HHI")
_LE_U32 = struct.Struct("<I")
_BE_U32 = struct.Struct(">I")


class ParseError(Exception):
    """The input cannot be read as DICOM (the message says why, in a few words)."""


class Encapsulated(list):
    """Compressed pixel data: the fragments after the basic offset table."""

    offsets: bytes = b""


class Parsed:
    """What was read: the meta information, the data set, the transfer syntax."""

    __slots__ = ("meta", "dataset", "transfer_syntax", "big_endian", "has_meta")

    def __init__(self, meta, dataset, transfer_syntax, big_endian, has_meta):
        self.meta = meta
        self.dataset = dataset
        self.transfer_syntax = transfer_syntax
        self.big_endian = big_endian
        self.has_meta = has_meta


# -- the data dictionary (implicit VR only) ------------------------------------------

_DICT: dict = {}


def private_vr(group: int, creator: str, elem: int) -> str:
    """The VR of a private element in DCMTK's private dictionary (UN if it is not there)."""
    if "private" not in _DICT:
        import json
        from pathlib import Path

        _DICT["private"] = json.loads((Path(__file__).parent / "dcm2json_data" / "private_vr.json").read_text())
    table = _DICT["private"]
    vr = table["tags"].get(f"{group:04x}|{creator}|{elem:02x}")
    if vr is None:
        for first, last, kind, name, element, rvr in table["ranges"]:
            if name == creator and element == elem and first <= group <= last and (
                    kind == "u" or (kind == "o") == bool(group & 1)):
                return rvr
        return "UN"
    return vr


def _dictionary():
    if not _DICT:
        from pydicom.datadict import DicomDictionary, RepeatersDictionary

        _DICT["main"] = DicomDictionary
        _DICT["repeaters"] = RepeatersDictionary
    return _DICT


def _private_vr(tag: int, creator: str) -> str:
    from pydicom.datadict import private_dictionary_VR

    try:
        return private_dictionary_VR(tag, creator)
    except KeyError:
        return "UN"


PIXEL_REPRESENTATION = 0x00280103
WAVEFORM_BITS = 0x54001004
XS_BY_PIXEL_REPRESENTATION = frozenset((
    0x00280120, 0x00280121, 0x00281080, 0x00281081, 0x00280106, 0x00280107, 0x00280108, 0x00280109,
    0x00283002, 0x00409211, 0x00409216, 0x00189810,
))
OX_BY_WAVEFORM_BITS = frozenset((0x54001010, 0x5400100A, 0x003A021A, 0x003A021B))


def implicit_vr(tag: int, state: dict) -> str:
    """The VR DCMTK gives an element of an implicit VR data set, from the data dictionary.

    Private elements other than private creators are UN (DCMTK reads them so);
    ``US or SS`` and ``OB or OW`` are settled as DCMTK settles them, by Pixel
    Representation and Waveform Bits Allocated read before in the same item.
    """
    group, elem = tag >> 16, tag & 0xFFFF
    if elem == 0:
        return "UL"
    if group & 1:
        if 0x10 <= elem <= 0xFF:
            return "LO"
        creator = state.get((group, elem >> 8))
        return "UN" if creator is None else private_vr(group, creator, elem & 0xFF)
    d = _dictionary()
    entry = d["main"].get(tag)
    if entry is None:  # 60xx / 50xx groups, (0028,04x0) ...
        entry = next((e for key, e in d["repeaters"].items() if _match(key, tag)), None)
    if entry is None:
        return "UN"
    vr = entry[0]
    if vr in VRS:
        return vr
    if vr == "US or SS":
        if tag in XS_BY_PIXEL_REPRESENTATION and PIXEL_REPRESENTATION in state:
            return "SS" if state[PIXEL_REPRESENTATION] == 1 else "US"
        return "US"
    if vr == "OB or OW":
        if tag in OX_BY_WAVEFORM_BITS and WAVEFORM_BITS in state:
            return "OB" if state[WAVEFORM_BITS] == 8 else "OW"
        if tag & 0xFF00FFFF == 0x50003000:  # curve data
            return "OB"
        return "OW"
    if vr.startswith("US or SS"):  # LUT data: "US or SS or OW"
        return "US"
    return "UN"


def _match(mask: str, tag: int) -> bool:
    text = f"{tag:08X}"
    return all(m in ("x", "X") or m == t for m, t in zip(mask, text))


# -- the walk ----------------------------------------------------------------------------


class _Reader:
    def __init__(self, data: bytes, explicit: bool, big: bool):
        self.data = data
        self.explicit = explicit
        self.big = big
        self.tag_len = _BE_TAG_LEN if big else _LE_TAG_LEN
        self.u32 = _BE_U32 if big else _LE_U32

    def dataset(self, pos: int, end: int, stop_at_item_end: bool = False, stop_group: int | None = None):
        """Elements from ``pos`` to ``end``; returns (elements, position after)."""
        data = self.data
        explicit = self.explicit
        tag_len, u32, big = self.tag_len, self.u32, self.big
        out = []
        state: dict = {}
        size = len(data)
        while pos < end:
            if pos + 8 > size:
                raise ParseError(f"premature end of data at byte {pos}")
            group, elem, length = tag_len.unpack_from(data, pos)
            tag = (group << 16) | elem
            if group == 0xFFFE or (stop_group is not None and group != stop_group):
                if stop_group is not None and group != stop_group:
                    return out, pos
                if tag == ITEM_END:
                    if stop_at_item_end:
                        return out, pos + 8
                    pos += 8
                    continue
                if tag == SEQ_END or tag == ITEM:
                    raise ParseError(f"unexpected item tag ({group:04x},{elem:04x}) at byte {pos}")
            if explicit:
                info = _VR_INFO.get(data[pos + 4:pos + 6])
                if info is None:
                    raise ParseError(f"invalid VR {data[pos + 4:pos + 6]!r} in element ({group:04x},{elem:04x})")
                vr, long = info
                if long:
                    if pos + 12 > size:
                        raise ParseError(f"premature end of data at byte {pos}")
                    length = u32.unpack_from(data, pos + 8)[0]
                    pos += 12
                else:
                    length = length & 0xFFFF if big else length >> 16  # the "<HHI" read took VR and length
                    pos += 8
                if length != UNDEFINED and vr != "SQ":
                    # the common case: a value of known length
                    if pos + length > size:
                        raise ParseError(f"element ({group:04x},{elem:04x}) is longer ({length} bytes) "
                                         f"than the data left ({size - pos})")
                    out.append((tag, vr, data[pos:pos + length]))
                    pos += length
                    continue
            else:
                vr = implicit_vr(tag, state) if tag != PIXEL_DATA else "OW"
                pos += 8
            if length == UNDEFINED:
                if tag == PIXEL_DATA and vr != "SQ":
                    value, pos = self.fragments(pos, tag)
                    out.append((tag, vr, value))
                    continue
                if vr not in ("SQ", "UN") and explicit:
                    raise ParseError(f"undefined length in element ({group:04x},{elem:04x}) with VR {vr}")
                if vr == "UN" and explicit:
                    # a sequence of unknown VR: its items are in implicit VR little endian
                    sub = _Reader(self.data, False, False)
                    value, pos = sub.items(pos, None, (group, elem))
                else:
                    value, pos = self.items(pos, None, (group, elem))
                out.append((tag, "SQ", value))
                continue
            if pos + length > size and vr != "SQ":
                raise ParseError(
                    f"element ({group:04x},{elem:04x}) is longer ({length} bytes) than the data left ({size - pos})")
            if vr == "SQ":
                value, _ = self.items(pos, min(pos + length, size), (group, elem))
                out.append((tag, vr, value))
            else:
                value = data[pos:pos + length]
                out.append((tag, vr, value))
                if group & 1 and 0x10 <= elem <= 0xFF:
                    state[(group, elem)] = value.decode("latin-1").strip(" \0")
                elif (tag == PIXEL_REPRESENTATION or tag == WAVEFORM_BITS) and length >= 2:
                    state[tag] = value[0] | (value[1] << 8) if not self.big else (value[0] << 8) | value[1]
            pos += length
        return out, pos

    def items(self, pos: int, end: int | None, where):
        data, size = self.data, len(self.data)
        items = []
        while end is None or pos < end:
            if pos + 8 > size:
                raise ParseError(f"sequence ({where[0]:04x},{where[1]:04x}) ends prematurely")
            group, elem, length = self.tag_len.unpack_from(data, pos)
            tag = (group << 16) | elem
            pos += 8
            if tag == SEQ_END:
                return items, pos
            if tag != ITEM:
                raise ParseError(f"no item in sequence ({where[0]:04x},{where[1]:04x}) at byte {pos - 8}")
            if length == UNDEFINED:
                item, pos = self.dataset(pos, size, stop_at_item_end=True)
            else:
                # an item longer than the data left is read as far as it goes (DCMTK does so);
                # an element in it that is cut short is an error
                item, _ = self.dataset(pos, min(pos + length, size))
                pos += length
            items.append(item)
        return items, pos

    def fragments(self, pos: int, tag: int):
        data, size = self.data, len(self.data)
        value = Encapsulated()
        first = True
        while True:
            if pos + 8 > size:
                raise ParseError("encapsulated pixel data ends prematurely")
            group, elem, length = self.tag_len.unpack_from(data, pos)
            pos += 8
            item_tag = (group << 16) | elem
            if item_tag == SEQ_END:
                return value, pos
            if item_tag != ITEM or length == UNDEFINED or pos + length > size:
                raise ParseError("encapsulated pixel data is damaged or ends prematurely")
            if first:
                value.offsets = data[pos:pos + length]
                first = False
            else:
                value.append(data[pos:pos + length])
            pos += length


def _guess(data: bytes, pos: int) -> tuple[bool, bool]:
    """(explicit, big endian) of a raw data set, from its first element, as DCMTK guesses."""
    if len(data) < pos + 8:
        raise ParseError("too short to be DICOM")
    explicit = data[pos + 4:pos + 6] in {v.encode() for v in VRS}
    le_group = data[pos] | (data[pos + 1] << 8)
    be_group = (data[pos] << 8) | data[pos + 1]
    big = be_group < le_group
    if big and not explicit:
        big = False  # implicit VR big endian does not exist
    return explicit, big


def parse(data: bytes, read_mode: str = "auto", forced: str | None = None, detect: bool = False) -> Parsed:
    """Read ``data`` like DCMTK's ``loadFile``.

    ``read_mode``: ``"auto"`` (file format or raw data set), ``"file"`` (file
    format only) or ``"dataset"`` (a raw data set).  ``forced``: the transfer
    syntax of a raw data set (``-te``/``-tb``/``-ti``).  ``detect``: ignore the
    transfer syntax of the meta information and guess it from the data set.
    """
    meta: list = []
    has_meta = len(data) >= 132 and data[128:132] == b"DICM" and read_mode != "dataset"
    pos = 0
    ts = None
    if has_meta:
        reader = _Reader(data, True, False)
        meta, pos = reader.dataset(132, len(data), stop_group=2)
        for tag, _vr, value in meta:
            if tag == 0x00020010:
                ts = value.decode("ascii", "replace").strip(" \0")
    elif read_mode == "file":
        raise ParseError("no file meta information (the file has no DICM prefix)")
    if forced is not None and not has_meta:
        ts = forced
    if ts is None or detect or (forced is None and not has_meta):
        explicit, big = _guess(data, pos)
        if ts is None or detect:
            ts = EXPLICIT_BE if big else EXPLICIT_LE if explicit else IMPLICIT_LE
    if ts in DEFLATED:
        import zlib

        try:
            body = zlib.decompress(data[pos:], -15)
        except zlib.error as exc:
            raise ParseError(f"deflated data cannot be inflated: {exc}") from None
        reader = _Reader(body, True, False)
        dataset, _ = reader.dataset(0, len(body))
        return Parsed(meta, dataset, ts, False, has_meta)
    explicit = ts != IMPLICIT_LE
    big = ts == EXPLICIT_BE
    if len(data) - pos < 8 and len(data) > pos:
        raise ParseError("too short to be DICOM")
    reader = _Reader(data, explicit, big)
    dataset, _ = reader.dataset(pos, len(data))
    if not dataset and not meta:
        raise ParseError("no DICOM data")
    return Parsed(meta, dataset, ts, big, has_meta)
