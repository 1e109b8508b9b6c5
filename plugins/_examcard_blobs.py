"""Philips blobs in Raw Data Storage objects: the ExamCard and the parameter blocks.

Shared by the dcmexamcard and dcmcleanup plugins (not a plugin: leading underscore).
The formats are described in ../shared/philips/SPEC.md section 6:

* (2005,1132) MRBlobDataObjectArray, private creator "Philips MR Imaging DD 002":
  each item holds a blob's name (1137), type (1139), actual size (1143) and data (1144).
* ``ExamCardBlob``: XML text, NUL padded, whose ``<ExamCardBlob>`` element holds
  base64 of the console's own ``.ExamCard`` export (a SOAP document).
* ``IEEE_PDF`` parameter blocks: a 32-byte header, one 50-byte record per
  parameter (name, type, count, offset), values as float32, int32 or 81-byte strings.

pydicom is imported inside functions: this module is imported by ``dcmpipe --help``.
"""

from __future__ import annotations

import base64
import html
import re
import struct
from dataclasses import dataclass
from itertools import groupby

from dcmpipe import DcmpipeError

RAW_DATA_STORAGE = "1.2.840.10008.5.1.4.1.1.66"
BLOB_CREATOR = "Philips MR Imaging DD 002"
IMAGING_CREATOR = "Philips Imaging DD 001"
EXAMCARD_BLOB = "ExamCardBlob"
PDF_TYPES = {0: "float", 1: "int", 2: "string", 4: "enum"}
STRING_SLOT = 81
RECORD = 50
_HEADER = struct.Struct("<iHHiIiIiI")
_RECORD = struct.Struct("<biIIi")


class BlobError(DcmpipeError):
    """A Raw Data Storage object lacks what is needed, or a blob is damaged (the message: the reason)."""


@dataclass
class Blob:
    name: str
    type: str
    data: bytes  # cut to the actual size
    declared: int


@dataclass
class Parameter:
    name: str
    type: str
    values: list


@dataclass
class RawObject:
    """What dcmexamcard needs from one Raw Data Storage object."""

    path: str
    series_number: str
    protocol: str
    examcard_name: str  # (2001,10C8)
    blobs: list[Blob]

    @property
    def examcard_blob(self) -> Blob | None:
        return next((b for b in self.blobs if b.name == EXAMCARD_BLOB), None)


def _text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("latin-1").strip(" \0")
    return str(value).strip(" \0")  # PersonName (older releases) included


def _private(dataset, group: int, creator: str, offset: int):
    """The element at ``offset`` of ``creator``'s block, or None (no creator, no element)."""
    try:
        block = dataset.private_block(group, creator)
    except KeyError:
        return None
    tag = block.get_tag(offset)
    return dataset[tag] if tag in dataset else None


def read_raw(path) -> RawObject:
    """Read a Raw Data Storage object and its blobs; BlobError with the reason otherwise."""
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    try:
        ds = dcmread(path, force=False)
    except InvalidDicomError:
        raise BlobError("not a DICOM file") from None
    except (EOFError, OSError, ValueError, struct.error) as exc:
        raise BlobError(f"cannot be read ({exc or type(exc).__name__}; truncated?)") from None
    try:
        sop = str(ds.get("SOPClassUID", ""))
    except Exception as exc:  # a damaged element read lazily
        raise BlobError(f"cannot be read ({exc}; truncated?)") from None
    if sop != RAW_DATA_STORAGE:
        raise BlobError(f"not a Raw Data Storage object (SOP class {sop or 'missing'})")
    try:
        seq = _private(ds, 0x2005, BLOB_CREATOR, 0x32)
        items = list(seq.value) if seq is not None else None
    except Exception as exc:
        raise BlobError(f"the blob sequence cannot be read ({exc}; truncated?)") from None
    if items is None:
        raise BlobError(f"no Philips blob sequence (2005,1132) of creator {BLOB_CREATOR!r}")
    blobs = []
    for n, item in enumerate(items, start=1):
        name_el = _private(item, 0x2005, BLOB_CREATOR, 0x37)
        name = _text(name_el.value if name_el is not None else None) or f"blob{n}"
        type_el = _private(item, 0x2005, BLOB_CREATOR, 0x39)
        size_el = _private(item, 0x2005, BLOB_CREATOR, 0x43)
        data_el = _private(item, 0x2005, BLOB_CREATOR, 0x44)
        data = bytes(data_el.value or b"") if data_el is not None else b""
        size = int(size_el.value) if size_el is not None and size_el.value not in (None, "") else len(data)
        if size > len(data):
            raise BlobError(f"blob {name} holds {len(data)} bytes of its {size} (truncated?)")
        blobs.append(Blob(name, _text(type_el.value if type_el is not None else None), data[:max(size, 0)], size))
    ec_name = _private(ds, 0x2001, IMAGING_CREATOR, 0xC8)
    return RawObject(
        path=str(path),
        series_number=_text(ds.get("SeriesNumber")),
        protocol=_text(ds.get("ProtocolName")) or _text(ds.get("SeriesDescription")),
        examcard_name=_text(ec_name.value if ec_name is not None else None),
        blobs=blobs,
    )


# -- the ExamCard -----------------------------------------------------------


def examcard(raw: RawObject) -> tuple[str, bytes] | None:
    """(name, console .ExamCard bytes) of an object holding an ExamCard; None if it has none."""
    blob = raw.examcard_blob
    if blob is None:
        return None
    xml = blob.data.split(b"\0", 1)[0]
    match = re.search(rb"<ExamCardBlob>(.*?)</ExamCardBlob>", xml, re.S)
    if match is None:
        raise BlobError(f"ExamCardBlob holds no embedded ExamCard (no <ExamCardBlob> element)")
    try:
        document = base64.b64decode(match.group(1), validate=False)
    except ValueError as exc:
        raise BlobError(f"the embedded ExamCard is not valid base64 ({exc})") from None
    document = document.split(b"\0", 1)[0]
    if not document.lstrip().startswith(b"<"):
        raise BlobError(f"the embedded ExamCard is not an XML document")
    name = None
    found = re.search(rb"<Name>([^<]*)</Name>", xml) or re.search(rb"<name[^>]*>([^<]*)</name>", document)
    if found:
        name = html.unescape(found.group(1).decode("utf-8", "replace")).strip()
    return name or raw.examcard_name or "", document


# -- parameter blocks --------------------------------------------------------


def is_text(data: bytes) -> bool:
    """JSON or XML text (PDF_USED_PRESCAN_RESPONSES is typed IEEE_PDF but holds JSON)."""
    head = data.lstrip(b" \t\r\n\xef\xbb\xbf")[:1]
    if head not in (b"{", b"[", b"<"):
        return False
    sample = data[:4096].rstrip(b"\0")
    return all(32 <= c < 127 or c in (9, 10, 13) or c >= 128 for c in sample)


def parse_pdf(blob: Blob) -> list[Parameter] | None:
    """The parameters of an IEEE_PDF block; None if the data is not in that layout."""
    data = blob.data
    if len(data) < _HEADER.size:
        return None
    header = _HEADER.unpack_from(data, 0)
    count = header[8]
    if header[0] == 1 or header[7] != 8 or _HEADER.size + RECORD * count > len(data):
        return None  # the "direct" layout (COILSTATE, HARDWARE_CONFIG) or something else
    params = []
    for k in range(count):
        at = _HEADER.size + RECORD * k
        name = data[at:at + 33].split(b"\0", 1)[0].decode("latin-1")
        _flag, kind, n, _unknown, rel = _RECORD.unpack_from(data, at + 33)
        start = at + 46 + rel
        type_name = PDF_TYPES.get(kind, f"type{kind}")
        width = STRING_SLOT if kind == 2 else 4
        end = start + width * n
        if start < 0 or end > len(data):
            raise BlobError(f"blob {blob.name}: parameter {name} points past the end of the block (truncated?)")
        if kind == 0:
            values = list(struct.unpack_from(f"<{n}f", data, start))
        elif kind in (1, 4):
            values = list(struct.unpack_from(f"<{n}i", data, start))
        elif kind == 2:
            values = [data[start + STRING_SLOT * i:start + STRING_SLOT * (i + 1)].split(b"\0", 1)[0]
                      .decode("latin-1") for i in range(n)]
        else:
            values = [data[start:end].hex()]
        params.append(Parameter(name, type_name, values))
    return params


def format_value(kind: str, value) -> str:
    if kind == "float":
        return f"{value:g}"
    if kind == "string":
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return str(value)


def format_values(kind: str, values: list) -> str:
    """Values joined by ", "; a run of equal values as ``v x n`` (``0 x 24``, -0 equals 0)."""
    parts = []
    for head, run in groupby(values):  # equal values (==) form a run; the first one is shown
        n = len(list(run))
        text = format_value(kind, head)
        parts.append(text if n == 1 else f"{text} x {n}")
    return ", ".join(parts)


def hexdump(data: bytes) -> list[str]:
    lines = []
    for at in range(0, len(data), 16):
        chunk = data[at:at + 16]
        text = "".join(chr(c) if 32 <= c < 127 else "." for c in chunk)
        lines.append(f"{at:08x}  {chunk.hex(' '):<47}  {text}")
    return lines


def describe_blob(raw: RawObject, blob: Blob) -> list[str]:
    """A blob as text lines: a header line, then parameters, text or a hex dump."""
    where = f"series {raw.series_number or '?'} {raw.protocol!r}"
    head = f"=== {where}: {blob.name} ({blob.type or 'no type'}, {len(blob.data)} bytes"
    if not blob.data:
        return [head + ", empty)"]
    params = None if is_text(blob.data) else parse_pdf(blob) if blob.type.startswith("IEEE_PDF") else None
    if params is not None:
        width = max([len(p.name) for p in params] + [24])
        lines = [head + f", {len(params)} parameters)"]
        for p in params:
            lines.append(f"{p.name:<{width}}  {p.type:<6} {len(p.values):>6}  {format_values(p.type, p.values)}")
        return lines
    if is_text(blob.data):
        text = blob.data.rstrip(b"\0").decode("utf-8", "replace")
        return [head + ", text)"] + text.splitlines()
    if blob.type.startswith("ASCII"):
        strings = [s.decode("latin-1") for s in blob.data.split(b"\0") if s]
        return [head + f", {len(strings)} strings)"] + strings
    return [head + ", hex)"] + hexdump(blob.data)


def describe_object(raw: RawObject, skip_examcard: bool = True) -> list[str]:
    lines = []
    for blob in raw.blobs:
        if skip_examcard and blob.name == EXAMCARD_BLOB:
            continue
        lines += describe_blob(raw, blob)
    return lines


# -- writing ------------------------------------------------------------------


def free_target(folder, stem: str, suffix: str, data: bytes):
    """Where ``data`` goes as ``stem + suffix`` in ``folder`` without overwriting anything.

    Returns ``(path, present)``: the first of ``stem``, ``stem_2``, ``stem_3`` ...
    that is free or already holds exactly ``data`` (``present`` True).
    """
    import os
    from pathlib import Path

    n = 1
    while True:
        path = Path(folder, f"{stem}{suffix}" if n == 1 else f"{stem}_{n}{suffix}")
        if not os.path.lexists(path):
            return path, False
        if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
            return path, True
        n += 1


def write_unique(folder, stem: str, suffix: str, data: bytes):
    """Write ``data`` as ``stem + suffix`` (or ``stem_2`` ... on a clash); return (path, status)."""
    from dcmpipe.safefile import TargetExistsError, write_atomic

    for _ in range(100):
        path, present = free_target(folder, stem, suffix, data)
        if present:
            return path, "present"
        try:
            return path, write_atomic(path, data)
        except TargetExistsError:  # another process took the name meanwhile
            continue
    raise BlobError(f"no free name for {stem}{suffix} in {folder}")


def examcard_stem(name: str, raw: RawObject) -> str:
    from dcmpipe.naming import component

    return component(name or raw.examcard_name, fallback="ExamCard", limit=120)
