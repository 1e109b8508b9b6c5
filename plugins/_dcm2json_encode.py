"""The way back: DICOM JSON (PS3.18 Annex F) to a DICOM file.

The encoder writes the elements itself (no pydicom data set in between), so
values go back as they were written: a DS number ``1.50`` in the JSON text
becomes the string ``1.50``, inline binary and bulk data become the exact
bytes.  The JSON is read with number literals kept as text for that reason.
"""

from __future__ import annotations

import base64
import json
import os
import struct
import urllib.parse
import zlib
from pathlib import Path

from ._dcm2json_write import CODECS, _swap

IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
DEFLATED = "1.2.840.10008.1.2.1.99"
IMPLEMENTATION_UID = "1.2.826.0.1.3680043.8.498.1"  # pydicom's implementation class root, version-free
IMPLEMENTATION_VERSION = "DCMPIPE_JSON2DCM"

EXIT_OK, EXIT_SYNTAX, EXIT_READ, EXIT_WRITE, EXIT_INVALID, EXIT_BULK = 0, 1, 20, 40, 65, 66

LONG_VRS = frozenset("OB OD OF OL OV OW SQ UC UN UR UT SV UV".split())
BINARY_VRS = frozenset("OB OD OF OL OV OW UN".split())
NUMBER_FORMATS = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "FL": "f", "FD": "d", "SV": "q", "UV": "Q"}
SWAP = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8, "US": 2, "SS": 2, "UL": 4, "SL": 4, "FL": 4, "FD": 8,
        "SV": 8, "UV": 8, "AT": 2}
STRING_VRS = frozenset("AE AS CS DA DS DT IS LO LT PN SH ST TM UC UI UR UT".split())
CHARSET_VRS = frozenset(("PN", "LO", "LT", "SH", "ST", "UC", "UT"))
SINGLE_VALUED = frozenset(("LT", "ST", "UT", "UR"))
ALL_VRS = STRING_VRS | BINARY_VRS | frozenset(NUMBER_FORMATS) | {"AT", "SQ"}
SCS = 0x00080005
PIXEL_DATA = 0x7FE00010
# Transfer syntax of encapsulated pixel data from a bulk data file's extension (when the
# JSON carries no file meta information): the first transfer syntax of each MIME type.
ENCAPSULATED_BY_EXTENSION = {
    ".jpeg": "1.2.840.10008.1.2.4.50", ".dicom-rle": "1.2.840.10008.1.2.5", ".jls": "1.2.840.10008.1.2.4.80",
    ".jp2": "1.2.840.10008.1.2.4.90", ".jpx": "1.2.840.10008.1.2.4.92", ".jphc": "1.2.840.10008.1.2.4.201",
    ".jxl": "1.2.840.10008.1.2.4.110", ".mpeg": "1.2.840.10008.1.2.4.100", ".mp4": "1.2.840.10008.1.2.4.102",
    ".H265": "1.2.840.10008.1.2.4.107", ".x-deflate": "1.2.840.10008.1.2.8.1",
}


class EncodeError(Exception):
    """The JSON cannot be turned into DICOM; ``code`` is json2dcm's exit code."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


class Number(str):
    """A JSON number literal, kept as its text."""


def load_json(text: str):
    try:
        return json.loads(text, parse_float=Number, parse_int=Number, parse_constant=Number)
    except ValueError as exc:
        raise EncodeError(EXIT_INVALID, f"not valid JSON: {exc}") from None


def select_dataset(document, select: int | None):
    """The data set of a document: an object, or one of an array (DCMTK's -ar / +as)."""
    if isinstance(document, list):
        if select is not None:
            if not 1 <= select <= len(document):
                raise EncodeError(EXIT_INVALID, f"the array has {len(document)} data sets; cannot select {select}")
            document = document[select - 1]
        elif len(document) == 1:
            document = document[0]
        else:
            raise EncodeError(EXIT_INVALID, f"the JSON array holds {len(document)} data sets; "
                              "select one with +as N (--array-select)")
    if not isinstance(document, dict):
        raise EncodeError(EXIT_INVALID, "the JSON document is not a DICOM JSON data set (an object)")
    return document


class BulkLoader:
    """Reads BulkDataURIs: ``file:`` URIs (with DCM4CHE's offset/length) inside permitted folders."""

    def __init__(self, permitted: list[str], ignore: bool = False):
        self.permitted = [os.path.join(os.path.realpath(p), "") for p in permitted]
        self.ignore = ignore

    def load(self, uri: str) -> bytes | None:
        if self.ignore:
            return None
        parts = urllib.parse.urlsplit(uri)
        if parts.scheme.lower() in ("http", "https"):
            raise EncodeError(EXIT_BULK, f"BulkDataURI {uri!r}: http(s) bulk data is not supported")
        if parts.scheme.lower() != "file":
            raise EncodeError(EXIT_BULK, f"BulkDataURI {uri!r}: only file URIs are supported")
        if parts.netloc not in ("", "localhost", "127.0.0.1", "ip6-localhost", "::1"):
            raise EncodeError(EXIT_BULK, f"BulkDataURI {uri!r}: files on other hosts are not supported")
        path = os.path.realpath(urllib.parse.unquote(parts.path))
        if not any(path.startswith(p) for p in self.permitted):
            raise EncodeError(EXIT_BULK, f"BulkDataURI {uri!r}: {path} is not in a permitted bulk data folder "
                              "(add its folder with +Bd)")
        query = urllib.parse.parse_qs(parts.query)
        try:
            offset = int(query.get("offset", ["0"])[0])
            length = int(query["length"][0]) if "length" in query else None
        except ValueError:
            raise EncodeError(EXIT_BULK, f"BulkDataURI {uri!r}: bad offset or length") from None
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                data = f.read() if length is None else f.read(length)
        except OSError as exc:
            raise EncodeError(EXIT_BULK, f"BulkDataURI {uri!r}: cannot read {path}: {exc.strerror}") from None
        if length is not None and len(data) != length:
            raise EncodeError(EXIT_BULK, f"BulkDataURI {uri!r}: {path} is shorter than offset + length")
        return data


class Encoder:
    def __init__(self, transfer_syntax: str, bulk: BulkLoader, undefined_lengths: bool = False,
                 ignore_errors: bool = False, log=None):
        self.ts = transfer_syntax
        self.explicit = transfer_syntax != IMPLICIT_LE
        self.big = transfer_syntax == EXPLICIT_BE
        self.e = ">" if self.big else "<"
        self.bulk = bulk
        self.undefined = undefined_lengths
        self.ignore_errors = ignore_errors
        self.log = log

    # -- a data set -------------------------------------------------------------------
    def dataset(self, obj: dict, codec="ascii", where: str = "") -> bytes:
        elements = []
        for key, attr in obj.items():
            try:
                tag = int(key, 16)
                if len(key) != 8:
                    raise ValueError
            except ValueError:
                raise EncodeError(EXIT_INVALID, f"{where}{key!r} is not a tag (8 hexadecimal digits)") from None
            elements.append((tag, key, attr))
        elements.sort()
        scs = next((attr for tag, _k, attr in elements if tag == SCS), None)
        if scs is not None:
            codec = self.codec_of(scs)
        out = []
        for tag, key, attr in elements:
            if tag & 0xFFFF == 0:  # group lengths are computed, never copied
                continue
            try:
                out.append(self.element(tag, attr, codec, f"{where}{key}"))
            except EncodeError as exc:
                if not self.ignore_errors or exc.code != EXIT_INVALID:
                    raise
                if self.log:
                    self.log.warning("json2dcm: %s (element left out, +E)", exc)
        return b"".join(out)

    def codec_of(self, attr) -> str | list:
        values = attr.get("Value") if isinstance(attr, dict) else None
        terms = [("" if v is None else str(v)).strip() for v in (values or [])] or [""]
        if len(terms) == 1 and terms[0] in CODECS:
            return CODECS[terms[0]]
        return terms  # ISO 2022 and friends: pydicom encodes them

    def element(self, tag: int, attr, codec, where: str) -> bytes:
        if not isinstance(attr, dict) or not isinstance(attr.get("vr"), str):
            raise EncodeError(EXIT_INVALID, f"{where}: an attribute needs an object with a \"vr\"")
        vr = attr["vr"]
        if vr not in ALL_VRS:
            raise EncodeError(EXIT_INVALID, f"{where}: unknown VR {vr!r}")
        keys = [k for k in ("Value", "InlineBinary", "BulkDataURI") if k in attr]
        if len(keys) > 1:
            raise EncodeError(EXIT_INVALID, f"{where}: more than one of Value, InlineBinary, BulkDataURI")
        raw: bytes | None = None
        if "InlineBinary" in attr:
            try:
                raw = base64.b64decode(str(attr["InlineBinary"]), validate=True)
            except ValueError:
                raise EncodeError(EXIT_INVALID, f"{where}: InlineBinary is not valid base64") from None
        elif "BulkDataURI" in attr:
            uri = attr["BulkDataURI"]
            raw = self.bulk.load(str(uri)) or b""
            if tag == PIXEL_DATA and self.encapsulated_ts() and compressed_extension(attr):
                return self.encapsulated(raw)
        if vr == "SQ":
            items = attr.get("Value") or []
            if not isinstance(items, list):
                raise EncodeError(EXIT_INVALID, f"{where}: Value must be an array")
            return self.sequence(tag, items, codec, where)
        if raw is not None:
            if vr in BINARY_VRS:
                if self.big and vr in SWAP:
                    raw = _swap(raw, SWAP[vr])
            elif vr in NUMBER_FORMATS or vr == "AT":
                if self.big:
                    raw = _swap(raw, SWAP[vr])
            elif vr not in STRING_VRS:
                raise EncodeError(EXIT_INVALID, f"{where}: VR {vr} cannot have binary data")
            return self.header(tag, vr, raw, pad=b"\0" if vr in BINARY_VRS or vr == "UI" else b" ")
        values = attr.get("Value")
        if values is None:
            return self.header(tag, vr, b"")
        if not isinstance(values, list):
            raise EncodeError(EXIT_INVALID, f"{where}: Value must be an array")
        if vr in BINARY_VRS:
            raise EncodeError(EXIT_INVALID, f"{where}: VR {vr} needs InlineBinary or BulkDataURI, not Value")
        if vr in NUMBER_FORMATS:
            try:
                numbers = [float(v) if vr in ("FL", "FD") else int(v) for v in values]
            except (TypeError, ValueError):
                raise EncodeError(EXIT_INVALID, f"{where}: {vr} values must be numbers") from None
            try:
                return self.header(tag, vr, struct.pack(self.e + NUMBER_FORMATS[vr] * len(numbers), *numbers))
            except struct.error:
                raise EncodeError(EXIT_INVALID, f"{where}: a {vr} value is out of range") from None
        if vr == "AT":
            try:
                tags = [int(str(v), 16) for v in values]
            except ValueError:
                raise EncodeError(EXIT_INVALID, f"{where}: AT values must be 8 hexadecimal digits") from None
            words = [w for t in tags for w in (t >> 16, t & 0xFFFF)]
            return self.header(tag, vr, struct.pack(self.e + "H" * len(words), *words))
        if vr == "PN":
            texts = [_person_name(v, where) for v in values]
        else:
            texts = []
            for v in values:
                if v is None:
                    texts.append("")
                elif isinstance(v, (str, int, float)):
                    texts.append(str(v))
                else:
                    raise EncodeError(EXIT_INVALID, f"{where}: {vr} values must be strings")
        if vr in SINGLE_VALUED and len(texts) > 1:
            raise EncodeError(EXIT_INVALID, f"{where}: {vr} has one value only")
        text = "\\".join(texts)
        if vr in CHARSET_VRS:
            data = self.encode_text(text, codec, vr, where)
        else:
            try:
                data = text.encode("ascii")
            except UnicodeEncodeError:
                raise EncodeError(EXIT_INVALID, f"{where}: a {vr} value has non-ASCII characters") from None
        return self.header(tag, vr, data, pad=b"\0" if vr == "UI" else b" ")

    def encode_text(self, text: str, codec, vr: str, where: str) -> bytes:
        if isinstance(codec, str):
            try:
                return text.encode(codec)
            except UnicodeEncodeError:
                raise EncodeError(EXIT_INVALID, f"{where}: a {vr} value cannot be written in the data set's "
                                  "Specific Character Set (use -c to write UTF-8)") from None
        from pydicom.charset import convert_encodings, encode_string

        try:
            encodings = convert_encodings(codec)
            if vr == "PN":  # escape sequences start afresh in every component group: encode them one by one
                from pydicom.valuerep import PersonName

                return b"\\".join(PersonName(v).encode(encodings) for v in text.split("\\"))
            return encode_string(text, encodings)
        except Exception:
            raise EncodeError(EXIT_INVALID, f"{where}: a {vr} value cannot be written in {'/'.join(codec)}") from None

    def sequence(self, tag: int, items: list, codec, where: str) -> bytes:
        bodies = []
        for n, item in enumerate(items):
            if item is None:
                item = {}
            if not isinstance(item, dict):
                raise EncodeError(EXIT_INVALID, f"{where}: item {n + 1} is not an object")
            body = self.dataset(item, codec, f"{where}[{n + 1}].")
            if self.undefined:
                bodies.append(self.tag_length(0xFFFEE000, 0xFFFFFFFF) + body + self.tag_length(0xFFFEE00D, 0))
            else:
                bodies.append(self.tag_length(0xFFFEE000, len(body)) + body)
        content = b"".join(bodies)
        if self.undefined:
            return self.header(tag, "SQ", None, 0xFFFFFFFF) + content + self.tag_length(0xFFFEE0DD, 0)
        return self.header(tag, "SQ", None, len(content)) + content

    # -- encapsulated pixel data ---------------------------------------------------------
    encapsulated_syntax: str | None = None

    def encapsulated_ts(self) -> bool:
        return self.encapsulated_syntax is not None

    def encapsulated(self, raw: bytes) -> bytes:
        if len(raw) & 1:
            raw += b"\0"
        items = self.tag_length(0xFFFEE000, 0) + self.tag_length(0xFFFEE000, len(raw)) + raw
        return (self.header(PIXEL_DATA, "OB", None, 0xFFFFFFFF) + items + self.tag_length(0xFFFEE0DD, 0))

    # -- low level -------------------------------------------------------------------------
    def tag_length(self, tag: int, length: int) -> bytes:
        return struct.pack(self.e + "HHI", tag >> 16, tag & 0xFFFF, length)

    def header(self, tag: int, vr: str, value: bytes | None, length: int | None = None, pad: bytes = b"\0") -> bytes:
        if value is not None:
            if len(value) & 1:
                value += pad
            length = len(value)
        else:
            value = b""
        if not self.explicit:
            return struct.pack(self.e + "HHI", tag >> 16, tag & 0xFFFF, length) + value
        if vr in LONG_VRS:
            return struct.pack(self.e + "HH2sHI", tag >> 16, tag & 0xFFFF, vr.encode(), 0, length) + value
        if length > 0xFFFF:
            raise EncodeError(EXIT_INVALID, f"({tag >> 16:04x},{tag & 0xFFFF:04x}): a {vr} value of {length} bytes "
                              "is too long for its VR")
        return struct.pack(self.e + "HH2sH", tag >> 16, tag & 0xFFFF, vr.encode(), length) + value


def compressed_extension(attr) -> str | None:
    """The extension of a compressed type (``.jpeg`` ...) of a BulkDataURI, or None."""
    if not isinstance(attr, dict) or "BulkDataURI" not in attr:
        return None
    path = urllib.parse.urlsplit(str(attr["BulkDataURI"])).path
    ext = os.path.splitext(path)[1]
    return ext if ext in ENCAPSULATED_BY_EXTENSION else None


def _person_name(value, where: str) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if not isinstance(value, dict):
        raise EncodeError(EXIT_INVALID, f"{where}: a PN value must be an object of component groups")
    groups = [str(value.get(k) or "") for k in ("Alphabetic", "Ideographic", "Phonetic")]
    while groups and not groups[-1]:
        groups.pop()
    return "=".join(groups)


def _uid(value) -> str:
    if isinstance(value, dict):
        values = value.get("Value") or []
        return str(values[0]) if values and values[0] is not None else ""
    return ""


def new_uid() -> str:
    import uuid

    return f"2.25.{uuid.uuid4().int}"


def encode(document, *, read_meta: bool = True, transfer_syntax: str | None = None, write_file: bool = True,
           bulk: BulkLoader | None = None, undefined_lengths: bool = False, replace_charset: bool = False,
           new_uids: bool = False, overwrite_uids: bool = True, ignore_errors: bool = False, compression: int = 6,
           select: int | None = None, log=None) -> bytes:
    """The DICOM bytes (a Part 10 file, or a bare data set) of a DICOM JSON document."""
    obj = dict(select_dataset(document, select))
    meta = {k: v for k, v in obj.items() if k.upper().startswith("0002")}
    body = {k: v for k, v in obj.items() if not k.upper().startswith("0002")}
    if not read_meta:
        meta = {}
    if replace_charset and "00080005" in body:
        body["00080005"] = {"vr": "CS", "Value": ["ISO_IR 192"]}
    if new_uids:
        for key in ("0020000D", "0020000E", "00080018"):
            if overwrite_uids or not _uid(body.get(key)):
                body[key] = {"vr": "UI", "Value": [new_uid()]}
    meta_ts = _uid(meta.get("00020010"))
    pixel = body.get("7FE00010")
    encapsulated = None
    if compressed_extension(pixel) and not (bulk and bulk.ignore):
        encapsulated = meta_ts if meta_ts and meta_ts not in (IMPLICIT_LE, EXPLICIT_LE, EXPLICIT_BE, DEFLATED) \
            else ENCAPSULATED_BY_EXTENSION[compressed_extension(pixel)]
    ts = transfer_syntax or (encapsulated or (meta_ts if meta_ts in (IMPLICIT_LE, EXPLICIT_LE, EXPLICIT_BE, DEFLATED)
                                              else EXPLICIT_LE))
    if encapsulated and transfer_syntax and transfer_syntax != encapsulated:
        raise EncodeError(EXIT_INVALID, "compressed pixel data can only be written in its own transfer syntax")
    if not encapsulated and ts not in (IMPLICIT_LE, EXPLICIT_LE, EXPLICIT_BE, DEFLATED):
        ts = EXPLICIT_LE  # a compressed transfer syntax without compressed pixel data: write it uncompressed
    encoder = Encoder(EXPLICIT_LE if ts == DEFLATED or encapsulated else ts, bulk or BulkLoader([]),
                      undefined_lengths, ignore_errors, log)
    encoder.encapsulated_syntax = encapsulated
    data = encoder.dataset(body)
    if ts == DEFLATED:
        packer = zlib.compressobj(compression, zlib.DEFLATED, -15)
        data = packer.compress(data) + packer.flush()
    if not write_file:
        return data
    sop_class = _uid(body.get("00080016")) or _uid(meta.get("00020002"))
    sop_instance = _uid(body.get("00080018")) or _uid(meta.get("00020003"))
    meta_obj = {
        "00020001": {"vr": "OB", "InlineBinary": "AAE="},
        "00020002": {"vr": "UI", "Value": [sop_class]},
        "00020003": {"vr": "UI", "Value": [sop_instance]},
        "00020012": {"vr": "UI", "Value": [IMPLEMENTATION_UID]},
        "00020013": {"vr": "SH", "Value": [IMPLEMENTATION_VERSION]},
    }
    for key, value in meta.items():
        if key.upper() not in ("00020000", "00020001", "00020002", "00020003", "00020010"):
            meta_obj[key.upper()] = value
        elif key.upper() == "00020001" and isinstance(value, dict) and "InlineBinary" in value:
            meta_obj["00020001"] = value
    meta_obj["00020010"] = {"vr": "UI", "Value": [ts]}
    meta_bytes = Encoder(EXPLICIT_LE, encoder.bulk).dataset(meta_obj)
    group_length = struct.pack("<HH2sHI", 2, 0, b"UL", 4, len(meta_bytes))
    return b"\0" * 128 + b"DICM" + group_length + meta_bytes + data


def sop_instance_name(document) -> str | None:
    try:
        obj = select_dataset(document, None)
    except EncodeError:
        return None
    uid = _uid(obj.get("00080018"))
    return uid or None


def read_json_file(path: Path) -> object:
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except OSError as exc:
        raise EncodeError(EXIT_READ, f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise EncodeError(EXIT_INVALID, f"{path} is not UTF-8 text") from None
    return load_json(text)
