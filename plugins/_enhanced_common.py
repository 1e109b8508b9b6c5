"""Shared by the Enhanced MR tools (dicomeread, dcm2btable, dcmshortacq): output names and errors."""

from __future__ import annotations

from pathlib import Path

from dcmpipe import DcmpipeError

ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"


def stem(source: Path) -> str:
    """The input's name without .gz and .dcm: ``DTI.dcm.gz`` -> ``DTI``."""
    name = source.name
    for suffix in (".gz", ".dcm", ".DCM", ".ima", ".IMA"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name or source.name


def target(source: Path, output: Path, file_suffixes: tuple, default_suffix: str) -> Path:
    """``output`` itself when it names a file (ends with one of ``file_suffixes``), else ``output/<stem><suffix>``."""
    text = str(output)
    if any(text.endswith(s) for s in file_suffixes):
        return output
    return output / (stem(source) + default_suffix)


def require_enhanced(item) -> None:
    """Fail an item that is not an Enhanced MR image, saying what it is."""
    sop = str(item.get("SOPClassUID") or "")
    if sop != ENHANCED_MR:
        from pydicom.uid import UID

        what = UID(sop).name if sop else "no SOP Class UID"
        raise DcmpipeError(f"not an Enhanced MR image ({what})")


def without_path(exc: Exception, path) -> DcmpipeError:
    """The error again, without the leading ``<path>: `` (the run's report names the file already)."""
    text, prefix = str(exc), f"{path}: "
    return DcmpipeError(text[len(prefix):] if text.startswith(prefix) else text)


def files_recipe(name: str, files, step: dict, **read_options) -> dict:
    """The recipe of a command over FILES: read them (no settling time), then ``step``."""
    read = {"read": "files", "path": [str(Path(f).resolve()) for f in files], "settle": 0.0, **read_options}
    return {"recipe": {"name": name}, "step": [read, step]}
