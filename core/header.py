"""Fast DICOM header reading: a few top-level tags of a file, as plain Python.

Sorting thousands of files costs little more than reading their headers, so
:func:`read_header` has two paths that give identical results:

* The **lean path** reads the common case with ``struct`` alone: preamble +
  ``DICM``, explicit VR little endian File Meta, and a data set in Explicit VR
  Little Endian or an encapsulated syntax (JPEG, JPEG 2000, RLE, ...). It reads
  8 KiB blocks, skips unwanted values (undefined-length sequences by walking
  their items) and stops after the last wanted tag (a data set is sorted) or at
  Pixel Data. Whatever it is not sure of goes to pydicom; it never guesses.
* The **pydicom path** (:func:`_read_with_pydicom`, pydicom imported only then)
  reads the rest: implicit VR, big endian, deflate, raw data sets without File
  Meta, text in character sets other than the default, ISO_IR 100 and 192,
  odd numbers, ``UN`` or unknown VRs, wanted sequences, damaged files.

Values: ``str`` (text, padding stripped as pydicom strips it), ``int`` (IS and
binary integers), ``float`` (DS, FL, FD), ``bytes`` (OB, OW, ...), a ``tuple``
when multi-valued, ``None`` when empty; a wanted sequence is pydicom's own.
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections import abc
from functools import lru_cache

from .errors import NotDicomError

__all__ = ["Header", "read_header", "is_dicom"]

_BLOCK = 8192
_UNDEFINED = 0xFFFFFFFF
_CHARSET, _SOP_CLASS, _SYNTAX, _MEDIA_SOP_CLASS = 0x00080005, 0x00080016, 0x00020010, 0x00020002
_PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})  # where pydicom stops
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_SHORT_VRS = b"AE AS AT CS DA DS DT FD FL IS LO LT PN SH SL SS ST TM UI UL US".split()
_LONG_VRS = b"OB OD OF OL OV OW SQ SV UC UN UR UT UV".split()  # with a 32-bit length
_HEADER_SIZE = {**dict.fromkeys(_SHORT_VRS, 8), **dict.fromkeys(_LONG_VRS, 12)}
_SKIPPABLE = frozenset(b"SQ UN OB OW".split())  # undefined length: items follow
_NUMBERS = {vr: (fmt, struct.calcsize("<" + fmt), struct.Struct("<" + fmt).unpack)
            for vr, fmt in ((b"US", "H"), (b"SS", "h"), (b"UL", "L"), (b"SL", "l"),
                            (b"UV", "Q"), (b"SV", "q"), (b"FL", "f"), (b"FD", "d"))}
_PLAIN_TEXT = frozenset(b"AS CS DA DT TM UI".split())  # default character set, split
_CODECS = {"": "latin-1", "ISO_IR 6": "latin-1", "ISO_IR 100": "latin-1", "ISO_IR 192": "utf-8"}
_LEAN_SYNTAXES = frozenset({
    "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.98", "1.2.840.10008.1.2.5",
    "1.2.840.10008.1.2.6.1", "1.2.840.10008.1.2.8.1",
})  # and every 1.2.840.10008.1.2.4.* (the JPEG family)
_HEAD = struct.Struct("<HH2sH").unpack_from  # group, element, VR, 16-bit length
_ITEM_HEAD = struct.Struct("<HHL").unpack_from  # group, element, 32-bit length
_UL = struct.Struct("<L").unpack_from


class Header(dict):
    """``{tag: value}`` for the wanted top-level tags present in a file."""

    __slots__ = ("transfer_syntax", "sop_class_uid", "fast")

    def __init__(self, values=(), transfer_syntax=None, sop_class_uid=None, fast=False):
        super().__init__(values)
        self.transfer_syntax: str | None = transfer_syntax
        self.sop_class_uid: str | None = sop_class_uid
        self.fast: bool = fast  # True if the lean path read it

    def __repr__(self):
        return (f"Header({dict.__repr__(self)}, transfer_syntax={self.transfer_syntax!r}, "
                f"sop_class_uid={self.sop_class_uid!r}, fast={self.fast})")


class _Fallback(Exception):
    """The lean path cannot read this file; pydicom must."""


class _Truncated(_Fallback):
    """The file ends inside an element: pydicom judges how damaged it is."""


def read_header(path, tags: frozenset[int] | None = None) -> Header:
    """Read the wanted top-level ``tags`` (``None``: every element before Pixel
    Data) of a DICOM file: a path, or a seekable binary file object (read from
    its start, left open). Raises :class:`NotDicomError` if the file is not
    DICOM, cannot be read, or is damaged before Pixel Data (the lean path reads
    no further than the last wanted tag, so it does not see damage after it)."""
    want = None if tags is None else frozenset(tags)
    with _open(path, buffering=0) as f:  # unbuffered: we read big blocks anyway
        try:
            head = f.read(_BLOCK)
            if head[128:132] == b"DICM":
                return _read_lean(f, head, want)
        except _Fallback:
            pass
        except OSError as exc:
            raise NotDicomError(_name(path), _os_reason(exc)) from None
    return _read_with_pydicom(path, want)


def is_dicom(path) -> bool:
    """Cheap check: a preamble + ``DICM``, or a plausible raw data set."""
    try:
        with _open(path) as f:
            head = f.read(132)
    except (NotDicomError, OSError):
        return False
    return head[128:132] == b"DICM" or _looks_raw(head)


# --- the lean path -----------------------------------------------------------

class _Window:
    """The bytes ``file[base:base + len(buf)]``, moved on demand."""

    __slots__ = ("f", "buf", "base")

    def __init__(self, f, buf):
        self.f, self.buf, self.base = f, buf, 0

    def at(self, pos: int, n: int):
        """Return ``(buf, offset)`` with ``n`` bytes of the file at ``buf[offset:]``."""
        off = pos - self.base
        if off < 0 or off + n > len(self.buf):
            self.f.seek(pos)
            self.buf, self.base, off = self.f.read(max(n, _BLOCK)), pos, 0
            if len(self.buf) < n:
                raise _Truncated
        return self.buf, off


@lru_cache(maxsize=64)
def _plan(want: frozenset | None):
    """The tags to collect (always charset and SOP class) and the last of them."""
    if want is None:
        return None, 0xFFFFFFFF
    scan = want | {_CHARSET, _SOP_CLASS}
    return scan, max(scan)


def _read_lean(f, head: bytes, want: frozenset | None) -> Header:
    size = f.seek(0, os.SEEK_END)
    window = _Window(f, head)
    pos, meta = _walk(window, 132, size, None, 0x0002FFFF, -1)
    syntax = _uid(meta, _SYNTAX)
    if syntax not in _LEAN_SYNTAXES and not (
            isinstance(syntax, str) and syntax.startswith("1.2.840.10008.1.2.4.")):
        raise _Fallback  # missing, implicit VR, big endian, deflate or unknown
    scan, last = _plan(want)
    found = _walk(window, pos, size, scan, last, 0xFFFF)[1]  # 0xFFFF: no command set
    charset = found.get(_CHARSET, (b"CS", b""))[1].decode("latin-1").rstrip(" \0")
    codec = _CODECS.get(charset)  # None: another character set, ASCII text only
    values = {tag: _convert(vr, raw, codec) for tag, (vr, raw) in found.items()
              if want is None or tag in want}
    sop = _uid(meta, _MEDIA_SOP_CLASS) or _uid(found, _SOP_CLASS)
    return Header(values, syntax, sop, fast=True)


def _uid(elements: dict, tag: int):
    return _convert(b"UI", elements.get(tag, (b"UI", b""))[1], None)


def _walk(window: _Window, pos: int, size: int, scan, last: int, prev: int) -> tuple:
    """Walk explicit VR little endian elements from ``pos`` to the first tag after
    ``last`` or Pixel Data; return where the walk ended and ``{tag: (VR, raw
    value)}`` for the tags in ``scan`` (all if ``None``). ``prev``: tags must
    be greater."""
    found = {}
    stop = min(last, 0x7FE00007)
    buf, base = window.buf, window.base
    end = base + len(buf)
    head, header_size, ul = _HEAD, _HEADER_SIZE, _UL  # locals: this loop is the hot spot
    while True:
        if pos + 12 > end:  # near the end of the window: move it
            if pos + 8 > size:
                if pos > size:
                    raise _Truncated
                break  # end of file (pydicom ignores fewer than 8 trailing bytes)
            buf, off = window.at(pos, min(12, size - pos))
            base, end = window.base, window.base + len(buf)
            if pos + 12 > size and header_size.get(buf[off + 4:off + 6]) == 12:
                raise _Truncated  # no 32-bit length: pydicom fails, even at Pixel Data
        off = pos - base
        group, elem, vr, length = head(buf, off)
        tag = group << 16 | elem
        if tag > stop and (tag > last or tag in _PIXEL_TAGS or group == 0xFFFE):
            if group == 0xFFFE and scan is None:
                raise _Fallback  # an item tag at the top level
            break
        header = header_size.get(vr)
        if tag <= prev or header is None:
            raise _Fallback  # unsorted, unknown VR or implicit VR
        prev = tag
        if header == 12:
            length = ul(buf, off + 8)[0]
            if length == 0xFFFFFFFF:  # undefined length
                if scan is None or tag in scan or vr not in _SKIPPABLE:
                    raise _Fallback
                pos = _skip_sequence(window, pos + 12, vr == b"UN")
                buf, base = window.buf, window.base
                end = base + len(buf)
                continue
        pos += header
        if scan is None or tag in scan:
            if vr == b"SQ" or vr == b"UN":
                raise _Fallback  # pydicom builds sequences and re-types UN
            if pos + length > end:
                buf, _ = window.at(pos, length)
                base, end = window.base, window.base + len(buf)
            found[tag] = (vr, buf[pos - base:pos - base + length])
        pos += length
    return pos, found


def _skip_sequence(window: _Window, pos: int, implicit: bool) -> int:
    """Skip the items of an undefined-length sequence (or encapsulated pixel data)
    whose value starts at ``pos``; return the position after its delimiter. The
    items of an undefined-length ``UN`` are implicit VR (PS3.5 6.2.2)."""
    while True:
        group, elem, length = _ITEM_HEAD(*window.at(pos, 8))
        pos += 8
        if group << 16 | elem == _SEQ_END:
            return pos
        if group << 16 | elem != _ITEM:
            raise _Fallback
        if length != _UNDEFINED:
            pos += length
            continue
        while True:  # an undefined-length item: walk its elements
            buf, off = window.at(pos, 12)
            group, elem, vr, length = _HEAD(buf, off)
            if group << 16 | elem == _ITEM_END:
                pos += 8
                break
            header = 8 if implicit else _HEADER_SIZE.get(vr)
            if header is None:
                raise _Fallback
            if implicit:
                vr, length = b"UN", _UL(buf, off + 4)[0]
            elif header == 12:
                length = _UL(buf, off + 8)[0]
            pos += header
            if length != _UNDEFINED:
                pos += length
            elif vr in _SKIPPABLE:
                pos = _skip_sequence(window, pos, implicit or vr == b"UN")
            else:
                raise _Fallback


def _convert(vr: bytes, raw: bytes, codec: str | None):
    """A raw value as plain Python, split and stripped the way pydicom 3 does."""
    if not raw:
        return None
    if vr in _PLAIN_TEXT:  # the most common: a shortcut
        text = raw.decode("latin-1").rstrip(" \0")
        return tuple(text.split("\\")) if "\\" in text else text or None
    if vr in _NUMBERS:
        fmt, width, unpack_one = _NUMBERS[vr]
        if len(raw) == width:
            return unpack_one(raw)[0]
        count, rest = divmod(len(raw), width)
        if rest:
            raise _Fallback
        parts = struct.unpack(f"<{count}{fmt}", raw)
    elif vr == b"DS" or vr == b"IS":
        text = raw.decode("latin-1")
        text, kind = (text.strip(), float) if vr == b"DS" else (text, int)
        text = text.rstrip(" \0")
        if text.strip(" +-.0123456789eE\\"):  # int() and float() take much more
            raise _Fallback  # pydicom decides what an odd number becomes
        try:
            if "\\" not in text:
                return kind(text) if text else None
            parts = [kind(p) if p else None for p in text.split("\\")]
        except ValueError:
            raise _Fallback from None
    elif vr in (b"SH", b"LO", b"UC"):
        text = _decode(raw, codec)
        if "\\" not in text:
            return text.rstrip("\0 ") or None
        parts = [p.rstrip("\0 ") for p in text.split("\\")]
    elif vr == b"PN":  # pydicom drops empty trailing component groups
        parts = [p.rstrip("=") for p in _decode(raw, codec).rstrip(" \0").split("\\")]
    elif vr in (b"LT", b"ST", b"UT"):
        parts = [_decode(raw, codec).rstrip("\0 ")]
    elif vr == b"AE":
        parts = [p.strip() for p in raw.decode("latin-1").split("\\")]
    elif vr == b"UR":
        parts = [raw.decode("latin-1").rstrip()]
    elif vr == b"AT":
        if len(raw) % 4:
            raise _Fallback
        words = struct.unpack(f"<{len(raw) // 2}H", raw)
        parts = [g << 16 | e for g, e in zip(words[::2], words[1::2])]
    else:  # OB OD OF OL OV OW
        return raw
    if len(parts) > 1:
        return tuple(parts)
    return None if parts[0] == "" else parts[0]


def _decode(raw: bytes, codec: str | None) -> str:
    if b"\x1b" in raw or (codec is None and not raw.isascii()):
        raise _Fallback  # ISO 2022 escapes, or a character set left to pydicom
    try:
        return raw.decode(codec or "ascii")
    except UnicodeDecodeError:
        raise _Fallback from None


# --- the pydicom path --------------------------------------------------------

def _read_with_pydicom(path, tags: frozenset[int] | None = None) -> Header:
    """Read the header with pydicom: the fallback, and the reference in tests."""
    import warnings

    from pydicom import dcmread
    from pydicom.errors import BytesLengthException, InvalidDicomError

    want, name = None if tags is None else frozenset(tags), _name(path)
    with _open(path) as f, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # recorded, not shown: EOF ones mean truncation
        try:
            head = f.read(132)
            if not head:
                raise NotDicomError(name, "empty file")
            raw = head[128:132] != b"DICM"
            if raw and not _looks_raw(head):
                raise NotDicomError(name, "not a DICOM file")
            size = f.seek(0, os.SEEK_END)
            f.seek(0)
            specific = None if want is None or raw else sorted(want | {_CHARSET, _SOP_CLASS})
            ds = dcmread(f, stop_before_pixels=True, force=raw, specific_tags=specific)
            if (f.tell() > size or _short(ds.file_meta) or _short(ds)
                    or any("End of file" in str(w.message) for w in caught)):
                raise NotDicomError(name, "truncated DICOM header")
            if raw and not any(tag >> 16 == 8 for tag in ds.keys()):
                raise NotDicomError(name, "not a DICOM file")
            values = {int(e.tag): _plain(e.VR, e.value) for e in ds
                      if want is None or e.tag in want}
            sop = ds.file_meta.get("MediaStorageSOPClassUID") or ds.get("SOPClassUID")
            syntax = ds.file_meta.get("TransferSyntaxUID")
        except InvalidDicomError:
            raise NotDicomError(name, "not a DICOM file") from None
        except (EOFError, struct.error):
            raise NotDicomError(name, "truncated DICOM header") from None
        except OSError as exc:
            if exc.errno is None:  # pydicom's own: "No tag to read at file position ..."
                raise NotDicomError(name, "truncated DICOM header") from None
            raise NotDicomError(name, _os_reason(exc)) from None
        except (BytesLengthException, ValueError, NotImplementedError, OverflowError,
                KeyError) as exc:
            detail = (str(exc).splitlines() or [type(exc).__name__])[0][:120]
            raise NotDicomError(name, f"unreadable DICOM header ({detail})") from None
    return Header(values, _plain("UI", syntax), _plain("UI", sop), fast=False)


def _short(ds) -> bool:
    """Whether a value read by pydicom is shorter than its stated length."""
    for tag in ds.keys():
        elem = ds.get_item(tag)  # a RawDataElement (a named tuple) until converted
        if (isinstance(elem, tuple) and isinstance(elem.value, bytes)
                and elem.length != _UNDEFINED and len(elem.value) < elem.length):
            return True
    return False


def _plain(vr: str, value, top: bool = True):
    """A pydicom value as plain Python (see the module docstring)."""
    if vr == "SQ" or value is None:
        return value
    if top and (value == "" or value == b""):
        return None
    if top and isinstance(value, abc.Sequence) and not isinstance(value, (str, bytes)):
        return tuple(_plain(vr, v, False) for v in value) or None  # MultiValue, list
    if isinstance(value, str):  # str, UID; in a DS or IS, "" is an empty number
        return None if value == "" and vr in ("DS", "IS") else str(value)
    for kind in (float, int, bytes):  # DSfloat, IS, BaseTag, ...
        if isinstance(value, kind):
            return kind(value)
    return str(value)  # PersonName


# --- shared helpers ------------------------------------------------------------

def _looks_raw(head: bytes) -> bool:
    """Whether ``head`` starts like a data set without preamble: a group 0002 or
    0008 element, explicit VR (either byte order) or implicit with a short length."""
    if len(head) < 8:
        return False
    group_le, group_be = head[0] | head[1] << 8, head[0] << 8 | head[1]
    if head[4:6] in _HEADER_SIZE:
        return group_le in (0x0002, 0x0008) or group_be == 0x0008
    length = _UL(head, 4)[0]
    return group_le == 0x0008 and length % 2 == 0 and length < 4096


def _open(path, buffering: int = -1):
    """``path`` opened, or the caller's binary file object rewound (and left open)."""
    try:
        if hasattr(path, "read"):
            path.seek(0)
            return contextlib.nullcontext(path)
        return open(path, "rb", buffering=buffering)
    except OSError as exc:
        raise NotDicomError(_name(path), _os_reason(exc)) from None


def _name(path) -> str:
    return getattr(path, "name", "<file object>") if hasattr(path, "read") else str(path)


def _os_reason(exc: OSError) -> str:
    reasons = {IsADirectoryError: "is a directory", PermissionError: "permission denied",
               FileNotFoundError: "no such file"}
    return reasons.get(type(exc), f"unreadable ({exc.strerror or exc})")
