"""Write the DICOM JSON Model (PS3.18 Annex F) as DCMTK's dcm2json writes it.

The text is produced directly, piece by piece, in DCMTK's layout (two
spaces per level, or compact), so that the output of ``dcmpipe dcm2json``
is byte for byte what DCMTK prints where both behave alike.  Numbers are
written as they are in the file (DS and IS only normalised the way DCMTK
does: no ``+``, no leading zeros, a digit after the point), floats with
enough digits to read them back, strings converted to UTF-8 from their
Specific Character Set.
"""

from __future__ import annotations

import base64
import os
import re
import struct
from math import modf
from dataclasses import dataclass
from pathlib import Path

from ._dcm2json_parse import Encapsulated, Parsed

# Exit codes of DCMTK's dcm2json manual.
EXIT_OK, EXIT_SYNTAX, EXIT_READ, EXIT_NO_INPUT, EXIT_WRITE, EXIT_UNICODE, EXIT_JSON = 0, 1, 20, 21, 40, 80, 81

MAX_SAFE = 9007199254740991
SCS = 0x00080005
PIXEL_DATA = 0x7FE00010
BINARY_VRS = frozenset("OB OD OF OL OV OW UN".split())
SWAP = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}
NUMBER_FORMATS = {
    "US": "H", "SS": "h", "UL": "I", "SL": "i", "FL": "f", "FD": "d", "SV": "q", "UV": "Q",
}
SIZES = {"US": 2, "SS": 2, "UL": 4, "SL": 4, "FL": 4, "FD": 8, "SV": 8, "UV": 8, "AT": 2}
SINGLE_VALUED = frozenset(("LT", "ST", "UT", "UR"))
STRIP_BOTH = frozenset(("AE", "CS", "DS", "IS", "LO", "SH"))
CONVERTED = frozenset(("PN", "LO", "LT", "SH", "ST", "UC", "UT"))
TEXT_VRS = frozenset(("LT", "ST", "UT"))
# Python codecs for the single-byte and UTF-8 character sets; the rest goes through pydicom.
CODECS = {
    "": "ascii", "ISO_IR 6": "ascii", "ISO_IR 100": "latin_1", "ISO_IR 192": "utf_8",
    "ISO_IR 101": "iso8859_2", "ISO_IR 109": "iso8859_3", "ISO_IR 110": "iso8859_4",
    "ISO_IR 144": "iso8859_5", "ISO_IR 127": "iso8859_6", "ISO_IR 126": "iso8859_7",
    "ISO_IR 138": "iso8859_8", "ISO_IR 148": "iso8859_9", "ISO_IR 203": "iso8859_15",
    "ISO_IR 166": "tis_620", "GB18030": "gb18030", "GBK": "gbk",
}
EXTENSIONS = [
    (re.compile(r"1\.2\.840\.10008\.1\.2\.4\.(5\d|6\d|70)$"), ".jpeg"),
    (re.compile(r"1\.2\.840\.10008\.1\.2\.5$"), ".dicom-rle"),
    (re.compile(r"1\.2\.840\.10008\.1\.2\.8\.1$"), ".x-deflate"),
    (re.compile(r"1\.2\.840\.10008\.1\.2\.4\.8[01]$"), ".jls"),
    (re.compile(r"1\.2\.840\.10008\.1\.2\.4\.9[01]$"), ".jp2"),
    (re.compile(r"1\.2\.840\.10008\.1\.2\.4\.9[23]$"), ".jpx"),
    (re.compile(r"1\.2\.840\.10008\.1\.2\.4\.10[01](\.1)?$"), ".mpeg"),
    (re.compile(r"1\.2\.840\.10008\.1\.2\.4\.10[2-6](\.1)?$"), ".mp4"),
    (re.compile(r"1\.2\.840\.10008\.1\.2\.4\.10[78]$"), ".H265"),
    (re.compile(r"1\.2\.840\.10008\.1\.2\.4\.11[0-2]$"), ".jxl"),
    (re.compile(r"1\.2\.840\.10008\.1\.2\.4\.20[1-3]$"), ".jphc"),
]
DS_RE = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\Z")
IS_RE = re.compile(r"[+-]?\d+\Z")
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\f": "\\f"}
_NEEDS_ESCAPE = re.compile(r'["\\\x00-\x1f]')


class ConvertError(Exception):
    """A conversion that cannot be done; ``code`` is the manual's exit code."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class JsonOptions:
    """The processing and output switches of dcm2json."""

    pretty: bool = True  # +fc / -fc
    meta: bool = False  # +m
    extended: bool = False  # -ee: inf and nan allowed
    numbers: str = "auto"  # -ia / -in / -is: IS and DS as number if valid, always number, always string
    bulk_size: int = -1  # +b / +bz KB; -1: no bulk data
    bulk_prefix: str = ""  # +bp, ends with "/"
    bulk_dir: str = "."  # +bd
    bulk_subdir: bool = False  # +bs


def extension(transfer_syntax: str) -> str:
    for pattern, ext in EXTENSIONS:
        if pattern.match(transfer_syntax):
            return ext
    return ".bin"


def escape(text: str) -> str:
    if not _NEEDS_ESCAPE.search(text):
        return text
    return _NEEDS_ESCAPE.sub(lambda m: _ESCAPES.get(m.group(), f"\\u{ord(m.group()):04x}"), text)


def file_uri(folder: str) -> str:
    """DCMTK's default bulk data URI prefix: ``file://localhost`` + the real path, URL-encoded."""
    real = os.path.realpath(folder)
    keep = set("-_./!~$:")
    encoded = "".join(c if (c.isascii() and c.isalnum()) or c in keep else "/" if c == "\\" else
                      "".join(f"%{b:02X}" for b in c.encode("utf-8")) for c in real)
    return "file://localhost" + ("" if encoded.startswith("/") else "/") + encoded + "/"


# -- character sets --------------------------------------------------------------------


class Charset:
    """Decodes the text of one data set level to ``str``."""

    __slots__ = ("terms", "codec")

    def __init__(self, terms: tuple[str, ...]):
        self.terms = terms
        self.codec = CODECS.get(terms[0]) if len(terms) == 1 else None
        if self.codec is None and not (len(terms) == 1 and terms[0] in CODECS):
            try:
                from pydicom.charset import convert_encodings

                import warnings

                with warnings.catch_warnings():
                    warnings.simplefilter("error")
                    convert_encodings(list(terms))
            except Exception:
                raise ConvertError(EXIT_UNICODE, f"Specific Character Set {_name(terms)!r} is not supported") from None

    def decode(self, raw: bytes, vr: str) -> str:
        if raw.isascii() and (self.codec is not None or b"\x1b" not in raw):
            return raw.decode("ascii")  # ISO 2022 escape sequences are 7-bit: those go to pydicom
        if self.codec is not None:
            if self.codec == "ascii" and len(self.terms) == 1:
                return None
            try:
                return raw.decode(self.codec)
            except UnicodeDecodeError:
                raise ConvertError(EXIT_UNICODE, f"a {vr} value is not valid {_name(self.terms) or 'ASCII'}") from None
        from pydicom import config
        from pydicom.charset import convert_encodings, decode_bytes

        delims = {0x0D, 0x0A, 0x09, 0x0C} if vr in TEXT_VRS else {0x5E, 0x3D, 0x5C} if vr == "PN" else {0x5C}
        old = config.settings.reading_validation_mode
        config.settings.reading_validation_mode = config.RAISE
        try:
            return decode_bytes(raw, convert_encodings(list(self.terms)), set(delims))
        except Exception:
            raise ConvertError(EXIT_UNICODE, f"a {vr} value cannot be decoded as {_name(self.terms)}") from None
        finally:
            config.settings.reading_validation_mode = old


def _name(terms) -> str:
    return "\\".join(terms)


ASCII = None  # no Specific Character Set: only ASCII is allowed in converted VRs


def _charset_value(value: bytes) -> tuple[str, ...]:
    text = value.decode("ascii", "replace").rstrip(" \0")
    terms = tuple(t.strip(" ") for t in text.split("\\"))
    if terms and terms[0] == "":
        terms = ("",) + terms[1:]
    return terms


def has_charset(elements) -> bool:
    """A Specific Character Set with a value, at any level (DCMTK converts then)."""
    for tag, vr, value in elements:
        if tag == SCS and isinstance(value, bytes) and value.strip(b" \0"):
            return True
        if vr == "SQ":
            for item in value:
                if has_charset(item):
                    return True
    return False


# -- the writer ------------------------------------------------------------------------


CACHED_SIZE = 256
CACHE_ENTRIES = 20_000
_CACHES: dict = {}


class Writer:
    def __init__(self, options: JsonOptions, transfer_syntax: str, sop_uid: str | None):
        self.o = options
        self.pretty = options.pretty
        self.nl = "\n" if options.pretty else ""
        self.sp = " " if options.pretty else ""
        self.level = 0
        self.out: list[str] = []
        self.ts = transfer_syntax
        self.bulk = options.bulk_size >= 0
        self.bulk_min = max(options.bulk_size, 0) << 10
        self.prefix = options.bulk_prefix
        self.bulk_dir = options.bulk_dir
        if self.bulk and options.bulk_subdir:
            sub = sop_uid or "1.2.276.0.7230010.3.1.4.1787205428.3192777.1748004619.679033"
            self.prefix += sub + "/"
            self.bulk_dir = os.path.join(self.bulk_dir, sub)
        self.bulk_files: list[Path] = []
        # the text of small elements, by value (not with bulk data: that writes files)
        self.cache = None if self.bulk else _CACHES.setdefault(options, {})

    def ind(self) -> str:
        return "  " * self.level if self.pretty else ""

    # the element frame ------------------------------------------------------------------
    def open(self, tag: int, vr: str) -> None:
        self.level += 1
        self.out.append(f'{self.ind()}"{tag:08X}":{self.sp}{{{self.nl}')
        self.level += 1
        self.out.append(f'{self.ind()}"vr":{self.sp}"{vr}"')

    def close(self) -> None:
        self.level -= 1
        self.out.append(f"{self.nl}{self.ind()}}}")
        self.level -= 1

    def values(self, texts: list[str]) -> None:
        out = self.out
        out.append(f',{self.nl}{self.ind()}"Value":{self.sp}[{self.nl}')
        self.level += 1
        out.append(f",{self.nl}{self.ind()}".join(texts) if self.pretty else ",".join(texts))
        if self.pretty:
            out[-1] = self.ind() + out[-1]
        self.level -= 1
        out.append(f"{self.nl}{self.ind()}]")

    # data sets ------------------------------------------------------------------------------
    def dataset(self, elements, big: bool, charset, braces: bool) -> bool:
        """Write the elements; returns whether any was written (group lengths are left out)."""
        out = self.out
        sep = "," + self.nl
        first = True
        # Files of a series share most values: the text of a small element is made once per
        # process and found again by tag and value (the level, byte order and character set
        # of this data set are part of the cache's key).
        cache = self.cache
        texts = None
        if cache is not None:
            key = (self.level, big, charset.terms if charset is not None else None)
            texts = cache.get(key)
            if texts is None:
                if sum(len(v) for c in cache.values() for v in c.values()) > CACHE_ENTRIES:
                    cache.clear()
                texts = cache[key] = {}
        for element in elements:
            tag, vr, value = element
            if not tag & 0xFFFF:
                continue
            if first:
                if braces:
                    out.append("{" + self.nl)
                first = False
            else:
                out.append(sep)
            if texts is None or vr == "SQ" or type(value) is not bytes or len(value) > CACHED_SIZE:
                self.element(element, big, charset)
                continue
            by_value = texts.get(tag)
            if by_value is None:
                by_value = texts[tag] = {}
            hit = by_value.get(value)
            if hit is not None and hit[0] == vr:
                out.append(hit[1])
                continue
            start = len(out)
            self.leaf(tag, vr, value, big, charset)
            text = "".join(out[start:])
            del out[start:]
            out.append(text)
            if len(by_value) < 1000:
                by_value[value] = (vr, text)
        if braces:
            out.append("{}" if first else f"{self.nl}{self.ind()}}}")
        return not first

    def element(self, element, big: bool, charset) -> None:
        tag, vr, value = element
        if vr == "SQ":
            self.open(tag, vr)
            if value:
                self.out.append(f',{self.nl}{self.ind()}"Value":{self.sp}[{self.nl}')
                self.level += 1
                for n, item in enumerate(value):
                    self.out.append(self.ind() if n == 0 else f",{self.nl}{self.ind()}")
                    self.dataset(item, big, self.item_charset(item, charset), True)
                self.level -= 1
                self.out.append(f"{self.nl}{self.ind()}]")
            self.close()
            return
        if isinstance(value, Encapsulated):
            self.encapsulated(tag, vr, value)
            return
        self.leaf(tag, vr, value, big, charset)

    def leaf(self, tag, vr, value, big, charset) -> None:
        self.open(tag, vr)
        if value:
            if vr in BINARY_VRS:
                self.binary(tag, vr, value, big)
            elif vr in NUMBER_FORMATS:
                self.numbers(tag, vr, value, big)
            elif vr == "AT":
                count = len(value) // 4
                words = struct.unpack((">" if big else "<") + "H" * (count * 2), value[:count * 4])
                if count:
                    self.values([f'"{words[i]:04X}{words[i + 1]:04X}"' for i in range(0, count * 2, 2)])
            else:
                self.strings(tag, vr, value, charset)
        self.close()

    def item_charset(self, item, charset):
        for tag, _vr, value in item:
            if tag == SCS:
                if isinstance(value, bytes) and value.strip(b" \0"):
                    return Charset(_charset_value(value))
                return charset
            if tag > SCS:
                break
        return charset

    # values --------------------------------------------------------------------------------
    def strings(self, tag: int, vr: str, raw: bytes, charset) -> None:
        if vr in CONVERTED:
            if charset is not None:
                text = charset.decode(raw, vr)
            if charset is None or text is None:
                if not raw.isascii():
                    raise ConvertError(EXIT_UNICODE, "Specific Character Set (0008,0005) is absent but a "
                                       f"{vr} value in ({tag >> 16:04x},{tag & 0xFFFF:04x}) has non-ASCII characters")
                text = raw.decode("ascii")
        else:
            text = raw.decode("utf-8", "surrogateescape") if not raw.isascii() else raw.decode("ascii")
        if vr == "UI":
            text = text.rstrip("\0")
        else:
            text = text.rstrip(" ")
        if not text:
            return
        if vr in ("DS", "IS") and self.bulk and len(raw) >= self.bulk_min:
            self.bulk_value(raw, ".bin")
            return
        if vr == "PN":
            self.person_names(text)
            return
        parts = [text] if vr in SINGLE_VALUED else text.split("\\")
        if vr in STRIP_BOTH:
            parts = [p.strip(" ") for p in parts]
        elif vr != "UI":
            parts = [p.rstrip(" ") for p in parts]
        else:
            parts = [p.rstrip("\0") for p in parts]
        if vr == "DS" or vr == "IS":
            self.values([self.number_string(p, vr) for p in parts])
        else:
            self.values([f'"{escape(p)}"' if p else "null" for p in parts])

    def number_string(self, text: str, vr: str) -> str:
        if not text:
            return "null"
        policy = self.o.numbers
        if policy == "string":
            return f'"{escape(text)}"'
        if vr == "DS":
            valid = len(text) <= 16 and DS_RE.match(text) is not None
        else:
            valid = len(text) <= 12 and IS_RE.match(text) is not None and -(2 ** 31) <= int(text) < 2 ** 31
        if not valid:
            if policy == "number":
                raise ConvertError(EXIT_JSON, f"{vr} value {text!r} is not a valid number")
            return f'"{escape(text)}"'
        return normalize_decimal(text) if vr == "DS" else normalize_integer(text)

    def numbers(self, tag: int, vr: str, raw: bytes, big: bool) -> None:
        size = SIZES[vr]
        count = len(raw) // size
        if not count:
            return
        values = struct.unpack((">" if big else "<") + NUMBER_FORMATS[vr] * count, raw[:count * size])
        if vr in ("FL", "FD"):
            if not self.o.extended and any(v != v or v in (float("inf"), float("-inf")) for v in values):
                raise ConvertError(EXIT_JSON, f"{vr} value in ({tag >> 16:04x},{tag & 0xFFFF:04x}) is inf or nan; "
                                   "use -ee (--encode-extended) to write it")
        if self.bulk and vr in ("FL", "FD", "SV", "UV") and len(raw) >= self.bulk_min:
            self.bulk_value(raw if not big else _swap(raw, size), ".bin")
            return
        if vr == "FL":
            texts = [_float_text(v, 9) for v in values]
        elif vr == "FD":
            texts = [_float_text(v, 17) for v in values]
        elif vr in ("SV", "UV"):
            texts = [str(v) if -MAX_SAFE <= v <= MAX_SAFE else f'"{v}"' for v in values]
        else:
            texts = [str(v) for v in values]
        self.values(texts)

    def binary(self, tag: int, vr: str, raw: bytes, big: bool) -> None:
        if big and vr in SWAP:
            raw = _swap(raw, SWAP[vr])
        if len(raw) & 1:
            raw += b"\0"  # DCMTK pads an odd length value to even
        if self.bulk and len(raw) >= self.bulk_min:
            self.bulk_value(raw, ".bin")
            return
        self.out.append(f',{self.nl}{self.ind()}"InlineBinary":{self.sp}"{base64.b64encode(raw).decode("ascii")}"')

    def encapsulated(self, tag: int, vr: str, value: Encapsulated) -> None:
        if not self.bulk:
            raise ConvertError(EXIT_JSON, "JSON InlineBinary encoding not supported for compressed pixel data; "
                               "use +b (--bulk-enabled) to write it as bulk data")
        frames = _number_of_frames(self.root)
        if frames not in (None, 1):
            raise ConvertError(EXIT_JSON, "encapsulated multi-frame images cannot be represented in JSON")
        if not value:
            raise ConvertError(EXIT_JSON, "the pixel sequence is empty")
        self.open(tag, vr)
        self.bulk_value(b"".join(value), extension(self.ts))
        self.close()

    root: list = []

    def bulk_value(self, raw: bytes, ext: str) -> None:
        import hashlib

        name = hashlib.sha256(raw).hexdigest() + ext
        path = os.path.join(self.bulk_dir, name)
        if not os.path.exists(path):
            try:
                from dcmpipe.safefile import write_atomic

                write_atomic(Path(path), raw)
            except OSError as exc:
                raise ConvertError(EXIT_WRITE, f"cannot write bulk data file {path}: {exc.strerror or exc}") from None
        self.bulk_files.append(Path(path))
        self.out.append(f',{self.nl}{self.ind()}"BulkDataURI":{self.sp}"{escape(self.prefix + name)}"')

    # person names ----------------------------------------------------------------------------
    def person_names(self, text: str) -> None:
        texts = []
        for value in _pn_values(text):
            if value is None:
                texts.append("null")
                continue
            self.level += 2
            ind = self.ind()
            self.level -= 1
            groups = [f'{ind}"{name}":{self.sp}"{escape(comp)}"' for name, comp in value]
            texts.append("{" + self.nl + ("," + self.nl).join(groups) + self.nl + self.ind() + "}")
            self.level -= 1
        if texts:
            self.values(texts)


GROUP_NAMES = ("Alphabetic", "Ideographic", "Phonetic")


def _pn_values(s: str):
    """DCMTK's reading of a PN value (a port of its lexer in dcvrpn.cc).

    Returns per value a list of (group name, text), or None for a JSON null.
    Empty components inside a group stay as ``^``, trailing ones go, spaces
    around components go, empty groups are left out, a fourth group is dropped.
    """
    end = len(s)
    st = {"it": 0, "group": 0, "comp": 0, "trailing": False}

    def handle_value():
        st["comp"] = 0
        st["group"] = 0
        st["trailing"] = True

    def handle_group():
        if st["group"] != 2:
            st["comp"] = 0
            st["group"] += 1
        else:  # a fourth group: skip to the end of it
            it = st["it"] + 1
            while it != end and s[it] not in "\\=":
                it += 1
            st["it"] = it - 1

    def next_significant(new_value: bool) -> bool:
        # DCMTK's nextValue (new_value) and nextComponentGroup: skip delimiters and spaces,
        # keeping count of groups and components; a '\\' starts the next value
        while st["it"] != end:
            c = s[st["it"]]
            if c == "\\":
                if not new_value:
                    st["it"] += 1
                handle_value()
                return new_value
            if c == "=":
                handle_group()
            elif c == "^":
                st["comp"] += 1
            elif c != " ":
                return True
            st["it"] += 1
        return st["trailing"] if new_value else False

    def next_component():
        while st["it"] != end:
            c = s[st["it"]]
            if c in "\\=":
                return False
            if c == "^":
                st["comp"] += 1
            elif c != " ":
                return True
            st["it"] += 1
        return False

    def component() -> str:
        prefix = "^" * st["comp"]
        st["comp"] = 0
        begin = it = st["it"]
        it += 1
        while it != end and s[it] not in "\\=^":
            it += 1
        st["it"] = it
        return prefix + s[begin:it].rstrip(" ")

    def current_value():
        st["trailing"] = False
        if not next_significant(False):
            return None
        groups = []
        while True:
            name = GROUP_NAMES[st["group"]]
            text = component()
            while next_component():
                text += component()
            groups.append((name, text))
            if not next_significant(False):
                return groups

    values = []
    while next_significant(True):
        values.append(current_value())
    return values


def _swap(raw: bytes, size: int) -> bytes:
    if size == 1:
        return raw
    import array

    code = {2: "H", 4: "I", 8: "Q"}[size]
    n = len(raw) - len(raw) % size
    a = array.array(code, raw[:n])
    a.byteswap()
    return a.tobytes() + raw[n:]


def _float_text(v: float, digits: int) -> str:
    """``OFStandard::ftoa(v, precision=digits)`` (DCMTK's own %g, quirks included), then DCMTK's normalisation."""
    return normalize_decimal(ftoa(v, digits))


def _digit(x: float) -> str:
    return chr(48 + int(x))


def _round(fract: float, out: list, start: int, ch: str | None, sign: list, expon: list | None) -> None:
    """DCMTK's ftoa_round: round the digits in ``out[start:]`` up when the next digit is 5 or more."""
    tmp = modf(fract * 10)[1] if fract else float(ord(ch) - 48)
    end = len(out) - 1
    if tmp > 4:
        while True:
            if out[end] == ".":
                end -= 1
            if out[end] != "9":
                out[end] = chr(ord(out[end]) + 1)
                break
            out[end] = "0"
            if end == start:
                if expon is not None:
                    out[end] = "1"
                    expon[0] += 1
                else:
                    out.insert(start, "1")
                break
            end -= 1
    elif sign[0] == "-":
        while end >= start:
            if out[end] == ".":
                end -= 1
            if out[end] != "0":
                break
            if end == start:
                sign[0] = ""
            end -= 1


def ftoa(val: float, prec: int) -> str:
    """A port of DCMTK's ``OFStandard::ftoa`` for the ``%g`` format (used for FL and FD values)."""
    if val != val:
        return "nan"
    if val in (float("inf"), float("-inf")):
        return "-inf" if val < 0 else "inf"
    sign = [""]
    if val < 0:
        sign[0] = "-"
        val = -val
    fract, integer = modf(val)
    rev = []
    while integer:
        tmp, integer = modf(integer / 10)
        rev.append(_digit((tmp + 0.01) * 10))
    expcnt = len(rev)
    digits = rev[::-1]
    out: list[str] = []
    if not prec:
        prec = 1
    if expcnt > prec or (not expcnt and fract and fract < 0.0001):
        prec -= 1
        exp = [expcnt]
        if expcnt:
            out.append(digits[0])
            if prec:
                out.append(".")
            k = 1
            while prec and k < len(digits):
                out.append(digits[k])
                k += 1
                prec -= 1
            if not prec and k < len(digits):
                fract = 0.0
                _round(0.0, out, 0, digits[k], sign, exp)
            exp[0] -= 1
        elif fract:
            exp[0] = -1
            while True:
                fract, tmp = modf(fract * 10)
                if tmp:
                    break
                exp[0] -= 1
            out.append(_digit(tmp))
            if prec:
                out.append(".")
        else:
            out.append("0")
            if prec:
                out.append(".")
        if fract:
            if prec:
                while True:
                    fract, tmp = modf(fract * 10)
                    out.append(_digit(tmp))
                    prec -= 1
                    if not (prec and fract):
                        break
            if fract:
                _round(fract, out, 0, None, sign, exp)
        out.extend("0" * max(prec, 0))
        while out and out[-1] == "0":
            out.pop()
        if out and out[-1] == ".":
            out.pop()
        e = exp[0]
        text = "".join(out) + "e" + ("-" if e < 0 else "+") + f"{abs(e):02d}"
        return sign[0] + text
    if expcnt:
        out.extend(digits)
        prec -= expcnt
    else:
        out.append("0")
    dotrim = bool(prec)
    if prec:
        out.append(".")
    if fract:
        if prec:
            while True:
                fract, tmp = modf(fract * 10)
                out.append(_digit(tmp))
                if tmp:
                    break
            while True:
                prec -= 1
                if not (prec and fract):
                    break
                fract, tmp = modf(fract * 10)
                out.append(_digit(tmp))
        if fract:
            _round(fract, out, 0, None, sign, None)
    if dotrim:
        while len(out) > 1 and out[-1] == "0":
            out.pop()
        if out[-1] == ".":
            out.pop()
    return sign[0] + "".join(out)


def normalize_decimal(value: str) -> str:
    """DCMTK's DS normalisation: no '+', no leading zeros, a digit on both sides of the point."""
    value = value.replace("+", "")
    minus = value.startswith("-")
    if minus:
        value = value[1:]
    stripped = value.lstrip("0")
    if not stripped:
        value = "0"
    elif stripped[0] in ".eE":  # DCMTK writes "0E0" as "E0", which is not JSON: keep a digit
        value = "0" + stripped
    else:
        value = stripped
    if minus:
        value = "-" + value
    pos = value.find(".")
    if pos != -1:
        if pos == len(value) - 1:
            value += "0"
        elif not value[pos + 1].isdigit():
            value = value[:pos + 1] + "0" + value[pos + 1:]
    return value


def normalize_integer(value: str) -> str:
    value = value.replace("+", "")
    minus = value.startswith("-")
    if minus:
        value = value[1:]
    value = value.lstrip("0") or "0"
    return "-" + value if minus else value


def _number_of_frames(elements) -> int | None:
    for tag, _vr, value in elements:
        if tag == 0x00280008:
            try:
                return int(value.decode("ascii").strip(" \0") or "1")
            except (ValueError, AttributeError):
                return 1
        if tag > 0x00280008:
            break
    return None


def sop_instance_uid(parsed: Parsed) -> str | None:
    for elements in (parsed.dataset, parsed.meta):
        for tag, _vr, value in elements:
            if tag in (0x00080018, 0x00020003) and isinstance(value, bytes):
                uid = value.decode("ascii", "replace").strip(" \0")
                if uid:
                    return uid
    return None


def to_json(parsed: Parsed, options: JsonOptions, read_dataset: bool = False) -> tuple[str, list[Path]]:
    """The JSON text of a parsed file, and the bulk data files it refers to."""
    dataset = parsed.dataset
    charset = ASCII
    root = next((e for e in dataset if e[0] == SCS), None)
    if root is not None:
        # DCMTK 3.6.7: a Specific Character Set element in the data set (even empty) means
        # "convert to UTF-8 and say so", except ISO_IR 6 (ASCII, left alone).
        if root[1] != "CS":
            raise ConvertError(EXIT_UNICODE, f"Specific Character Set (0008,0005) has VR {root[1]}, not CS")
        terms = _charset_value(root[2])
        charset = Charset(terms)
        if terms != ("ISO_IR 6",):
            dataset = _with_utf8(dataset)
    writer = Writer(options, parsed.transfer_syntax, sop_instance_uid(parsed) if options.bulk_subdir else None)
    writer.root = parsed.dataset
    if writer.bulk:
        try:
            os.makedirs(writer.bulk_dir, exist_ok=True)
        except OSError as exc:
            raise ConvertError(EXIT_WRITE,
                               f"cannot create bulk data folder {writer.bulk_dir}: {exc.strerror}") from None
    out = writer.out
    if options.meta and not read_dataset:
        out.append("{" + writer.nl)
        wrote = writer.dataset(parsed.meta, False, ASCII, False)
        if wrote and any(t & 0xFFFF for t, _v, _x in dataset):
            out.append("," + writer.nl)
        writer.dataset(dataset, parsed.big_endian, charset, False)
        out.append(writer.nl + "}" + writer.nl)
    else:
        writer.dataset(dataset, parsed.big_endian, charset, True)
        out.append(writer.nl)
    return "".join(out), writer.bulk_files


def _with_utf8(dataset):
    """The data set with its Specific Character Set set to UTF-8 (as DCMTK's convertToUTF8 does)."""
    out = [e for e in dataset if e[0] != SCS]
    element = (SCS, "CS", b"ISO_IR 192")
    for n, e in enumerate(out):
        if e[0] > SCS:
            out.insert(n, element)
            break
    else:
        out.append(element)
    return out
