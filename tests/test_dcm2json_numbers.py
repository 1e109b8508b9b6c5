"""Property tests: numbers (DS/IS, FL/FD with inf and nan, SV/UV) and character sets, there and back."""

from __future__ import annotations

import json
import math
import struct

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from _dcm2json_helpers import DCMTK, needs_dcmtk, to_json_text  # noqa: E402

SETTINGS = settings(max_examples=int(__import__("os").environ.get("D2J_EXAMPLES", "150")), deadline=None, database=None)
BASE = {"00080016": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.7"]},
        "00080018": {"vr": "UI", "Value": ["1.2.3.4"]}}


def _dicom(attrs: dict, **options) -> bytes:
    from dcmpipe.plugins._dcm2json_encode import encode

    return encode({**BASE, **attrs}, **options)


def _json(attrs: dict, **options) -> dict:
    return json.loads(to_json_text(_dicom(attrs), **options))


def _back(document: dict) -> dict:
    """JSON -> DICOM -> JSON."""
    from dcmpipe.plugins._dcm2json_encode import encode, load_json

    return json.loads(to_json_text(encode(load_json(json.dumps(document)))))


# -- DS and IS ----------------------------------------------------------------------------

decimal_strings = st.builds(
    lambda sign, whole, frac, exp: f"{sign}{whole}{frac}{exp}",
    st.sampled_from(["", "+", "-"]),
    st.text("0123456789", min_size=1, max_size=5),
    st.sampled_from(["", "."]) | st.text("0123456789", min_size=1, max_size=5).map(lambda s: "." + s),
    st.sampled_from(["", "e5", "E-3", "e+07"]),
).filter(lambda s: len(s) <= 16)


@SETTINGS
@given(decimal_strings, st.sampled_from(["", " ", "  "]))
def test_valid_ds_is_a_json_number_of_the_same_value(text, padding):
    value = _json({"00181050": {"vr": "DS", "Value": [padding + text]}})["00181050"]["Value"][0]
    assert isinstance(value, (int, float)) and value == pytest.approx(float(text), rel=1e-15, abs=0)


@SETTINGS
@given(st.integers(-(2 ** 31), 2 ** 31 - 1), st.sampled_from(["", "+", "0", "00"]))
def test_valid_is_is_the_integer(number, prefix):
    text = (prefix if number >= 0 else "") + str(number)
    if len(text) > 12:
        text = str(number)
    value = _json({"00200012": {"vr": "IS", "Value": [text]}})["00200012"]["Value"][0]
    assert value == number and isinstance(value, int)


@SETTINGS
@given(st.text("0123456789.eE+- ,abc", min_size=1, max_size=16))
def test_any_ds_text_gives_valid_json_a_number_or_the_string(text):
    from dcmpipe.plugins._dcm2json_write import DS_RE

    stripped = text.strip(" ")
    if "\\" in text or not stripped:
        return
    value = _json({"00181050": {"vr": "DS", "Value": [text]}})["00181050"]["Value"][0]
    if DS_RE.match(stripped):
        assert value == pytest.approx(float(stripped), rel=1e-15)
    else:
        assert value == stripped  # invalid: kept as a string, as written
    as_strings = _json({"00181050": {"vr": "DS", "Value": [text]}}, numbers="string")
    assert as_strings["00181050"]["Value"] == [stripped]


# -- FL / FD -------------------------------------------------------------------------------


@SETTINGS
@given(st.lists(st.floats(min_value=-1e300, max_value=1e300), min_size=1, max_size=4))
def test_fd_values_read_back_within_dcmtk_precision(values):
    """17 significant digits by DCMTK's own ftoa (ported): the double comes back, but for the
    last bit of very large numbers, where DCMTK's digit extraction is itself inexact (near the
    largest double DCMTK even writes a number beyond it: we write what DCMTK writes)."""
    got = _json({"00189089": {"vr": "FD", "Value": [repr(v) for v in values]}})["00189089"]["Value"]
    assert [float(g) for g in got] == pytest.approx(values, rel=1e-14, abs=1e-300)


@needs_dcmtk
@pytest.mark.dcmtk
def test_floats_are_formatted_exactly_as_dcmtk(tmp_path):
    """3,000 random doubles and floats in one file: DCMTK's text and ours are the same, digit for digit."""
    import random
    import subprocess

    rng = random.Random(20261122)
    doubles = []
    for _ in range(3000):
        kind = rng.random()
        if kind < 0.3:
            v = rng.uniform(-1e3, 1e3)
        elif kind < 0.6:
            v = struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0]
        else:
            v = round(rng.uniform(-100, 100), rng.randint(0, 6)) * rng.choice([1, 1e-4, 1e9])
        doubles.append(v if math.isfinite(v) else 1.0)
    floats = [struct.unpack("<f", struct.pack("<f", v if abs(v) < 3e38 else 1.0))[0] for v in doubles]
    path = tmp_path / "floats.dcm"
    path.write_bytes(_dicom({"00189089": {"vr": "FD", "Value": [repr(v) for v in doubles]},
                             "00189219": {"vr": "FL", "Value": [repr(v) for v in floats]}}))
    theirs = subprocess.run([DCMTK, "-fc", str(path)], capture_output=True).stdout.decode()
    assert theirs and theirs == to_json_text(path.read_bytes(), pretty=False)


@SETTINGS
@given(st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False), min_size=1, max_size=4))
def test_fl_values_read_back_to_the_same_float32(values):
    got = _json({"00189219": {"vr": "FL", "Value": [repr(v) for v in values]}})["00189219"]["Value"]
    assert [struct.unpack("<f", struct.pack("<f", g))[0] for g in got] == values


@SETTINGS
@given(st.lists(st.sampled_from([math.nan, math.inf, -math.inf, 1.5, 0.0]), min_size=1, max_size=4))
def test_inf_and_nan_refused_strictly_written_when_extended(values):
    from dcmpipe.plugins._dcm2json_write import ConvertError

    data = _dicom({"00189089": {"vr": "FD", "Value": [repr(v) for v in values]}})
    special = any(math.isnan(v) or math.isinf(v) for v in values)
    try:
        text = to_json_text(data)
        assert not special
        json.loads(text)
    except ConvertError as exc:
        assert special and exc.code == 81
    extended = to_json_text(data, extended=True, pretty=False)
    words = extended.split('"00189089":{"vr":"FD","Value":[')[1].split("]")[0].split(",")
    assert words == [{"nan": "nan", "inf": "inf", "-inf": "-inf"}.get(repr(v), None) or
                     ("1.5" if v == 1.5 else "0") for v in values]


# -- SV / UV -----------------------------------------------------------------------------


@SETTINGS
@given(st.lists(st.integers(-(2 ** 63), 2 ** 63 - 1), min_size=1, max_size=4),
       st.lists(st.integers(0, 2 ** 64 - 1), min_size=1, max_size=4))
def test_sv_uv_numbers_within_2_53_strings_beyond_and_back(signed, unsigned):
    safe = 9007199254740991
    document = _json({"00720082": {"vr": "SV", "Value": [str(v) for v in signed]},
                      "00720081": {"vr": "UV", "Value": [str(v) for v in unsigned]}})
    for tag, values in (("00720082", signed), ("00720081", unsigned)):
        got = document[tag]["Value"]
        assert got == [v if -safe <= v <= safe else str(v) for v in values]
    back = _back(document)
    assert back["00720082"] == document["00720082"] and back["00720081"] == document["00720081"]


# -- character sets -------------------------------------------------------------------------

names = st.text(st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="\\^="),
                min_size=1, max_size=20).map(str.strip).filter(bool)
CHARSETS = [("ISO_IR 100", "latin_1"), ("ISO_IR 144", "iso8859_5"), ("ISO_IR 126", "iso8859_7"),
            ("ISO_IR 192", "utf_8"), ("GB18030", "gb18030")]


@SETTINGS
@given(st.sampled_from(CHARSETS), names, names)
def test_text_in_any_decodable_charset_comes_out_as_unicode_and_back(charset, family, given_name):
    term, codec = charset
    try:
        (family + given_name).encode(codec)
    except UnicodeEncodeError:
        return  # not representable in this character set
    document = {"00080005": {"vr": "CS", "Value": [term]},
                "00100010": {"vr": "PN", "Value": [{"Alphabetic": f"{family}^{given_name}"}]},
                "00081030": {"vr": "LO", "Value": [family]}}
    data = _json(document)
    assert data["00100010"]["Value"] == [{"Alphabetic": f"{family}^{given_name}"}]
    assert data["00081030"]["Value"] == [family]
    assert data["00080005"]["Value"] == ["ISO_IR 192"]
    assert _back(data)["00100010"] == data["00100010"]


@SETTINGS
@given(st.sampled_from(["ISO 2022 IR 13\\ISO 2022 IR 87", "\\ISO 2022 IR 149"]))
def test_iso_2022_sets_through_pydicom(term):
    text = {"ISO 2022 IR 13\\ISO 2022 IR 87": "山田^太郎", "\\ISO 2022 IR 149": "김희중"}[term]
    data = _json({"00080005": {"vr": "CS", "Value": term.split("\\")},
                  "00100010": {"vr": "PN", "Value": [{"Ideographic": text}]}})
    assert data["00100010"]["Value"] == [{"Ideographic": text}]
