"""Shared by tests/test_dcm2json*.py and tests/test_json2dcm*.py: data, DCMTK runs, our runs."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
DATA = HERE / "data" / "dcm2json"
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CORPUS = SHARED / "corpus"
DCMTK = shutil.which("dcm2json")

needs_dcmtk = pytest.mark.skipif(DCMTK is None, reason="DCMTK dcm2json is not installed (apt install dcmtk)")
needs_corpus = pytest.mark.skipif(not (CORPUS / "MANIFEST.tsv").is_file(),
                                  reason=f"reference corpus {CORPUS} is absent")

# Files where Debian's DCMTK 3.6.7 and dcmpipe differ on purpose (see docs/plugins/dcm2json.md):
# name -> (DCMTK's exit code, ours, why).
EXCEPTIONS = {
    "chrH31.dcm": (80, 0, "ISO 2022 IR 87: glibc iconv lacks it, pydicom decodes it"),
    "chrH32.dcm": (80, 0, "ISO 2022 IR 87: glibc iconv lacks it, pydicom decodes it"),
    "chrJapMulti.dcm": (80, 0, "ISO 2022 IR 87: glibc iconv lacks it, pydicom decodes it"),
    "chrJapMultiExplicitIR6.dcm": (80, 0, "ISO 2022 IR 87: glibc iconv lacks it, pydicom decodes it"),
    "chrSQEncoding1.dcm": (80, 0, "ISO 2022 IR 87: glibc iconv lacks it, pydicom decodes it"),
    "J2K_pixelrep_mismatch.dcm": (80, 81, "ISO 2022 IR 87 decoded; then compressed pixel data without +b"),
    "chrSQEncoding.dcm": (0, 0, "DCMTK 3.6.7 ignores the Specific Character Set of sequence items"),
}


def corpus_files() -> list[str]:
    lines = (CORPUS / "MANIFEST.tsv").read_text().splitlines()[1:]
    return [line.split("\t")[0] for line in lines]


def dcmtk(path, *options) -> tuple[int, bytes, str]:
    result = subprocess.run([DCMTK, *options, str(path)], capture_output=True, timeout=60)
    return result.returncode, result.stdout, result.stderr.decode("utf-8", "replace")


def ours(path, *options, tmp_path: Path | None = None) -> tuple[int, bytes]:
    """Run dcmpipe's dcm2json command in this process; (exit code, output bytes)."""
    from dcmpipe.plugins.dcm2json import convert

    import tempfile

    folder = Path(tempfile.mkdtemp(dir=tmp_path))
    out = folder / "out.json"
    code = convert([*options, str(path), str(out)])
    return code, out.read_bytes() if out.exists() else b""


def to_json_text(data: bytes, **options) -> str:
    """Our JSON of DICOM bytes, in process, without the command line."""
    from dcmpipe.plugins._dcm2json_parse import parse
    from dcmpipe.plugins._dcm2json_write import JsonOptions, to_json

    return to_json(parse(data), JsonOptions(**options))[0]


def dicom_bytes(dataset, implicit=False, little=True) -> bytes:
    """A pydicom data set written as a Part 10 file."""
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    ds = dataset.copy()
    ts = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian if little else ExplicitVRBigEndian
    from pydicom.dataset import FileMetaDataset

    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = getattr(ds, "SOPClassUID", "1.2.840.10008.5.1.4.1.1.7")
    ds.file_meta.MediaStorageSOPInstanceUID = getattr(ds, "SOPInstanceUID", "1.2.3.4")
    ds.file_meta.TransferSyntaxUID = ts
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def parsed(text: bytes | str):
    return json.loads(text)
