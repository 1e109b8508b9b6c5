"""Safe names: tag values become path components that cannot leave a folder."""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from .errors import DcmpipeError

_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


class UnsafePathError(DcmpipeError):
    """A name would leave its destination folder."""


def component(value, fallback: str = "unknown", limit: int = 64) -> str:
    """One path component from a tag value.

    Runs of characters other than letters, digits and ``._+-`` become ``_``;
    leading dots are dropped (no hidden files, no ``..``); empty becomes
    ``fallback``.  ``"T1 3D/sag"`` -> ``"T1_3D_sag"``.
    """
    if isinstance(value, (list, tuple)):
        value = "_".join(str(v) for v in value)
    text = _UNSAFE.sub("_", "" if value is None else str(value))
    text = re.sub(r"^[._]+", "", text).rstrip("_")
    return text[:limit].rstrip("_") or fallback


def number(value, width: int) -> str:
    """A number zero-padded to ``width`` digits (wider numbers keep all digits)."""
    try:
        return f"{int(value):0{width}d}"
    except (TypeError, ValueError):
        return component(value)


def check_relative(name: str) -> PurePosixPath:
    """Return ``name`` as a relative path, or raise if it could leave its root."""
    path = PurePosixPath(str(name).replace("\\", "/"))
    if not name or path.is_absolute() or any(p in ("..", "") for p in path.parts) or "\0" in str(name):
        raise UnsafePathError(f"unsafe name {name!r}: must be a relative path without '..'")
    return path
