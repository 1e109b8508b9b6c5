"""dcmpipe: DICOM pipelines for MR labs, built from plugins.

The public API for plugin authors::

    import dcmpipe
    from dcmpipe import hookimpl, Item, Reader, Transform, Namer, Router, Exporter, Sender, option

Everything importable from ``dcmpipe`` itself is public; so are
``dcmpipe.dicomeread`` (an Enhanced MR file as an n-D array, from
``dcmpipe.enhanced``), ``dcmpipe.safefile`` (never-overwrite file operations), ``dcmpipe.naming``
(safe path components), ``dcmpipe.header`` (the fast header reader) and
``dcmpipe.runner.run_recipe``.  This module stays cheap to import: pydicom,
pynetdicom and numpy are imported where they are used.
"""

from __future__ import annotations

import pluggy

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("dcmpipe")

from .errors import DcmpipeError, NotDicomError, PluginError, RecipeError  # noqa: E402
from .steps import (  # noqa: E402
    Context,
    Exporter,
    GroupComplete,
    Item,
    Namer,
    NoOptions,
    Reader,
    Router,
    Sender,
    Skip,
    Step,
    Transform,
    option,
)

__all__ = [
    "__version__", "hookimpl", "DcmpipeError", "NotDicomError", "PluginError", "RecipeError",
    "Context", "Exporter", "GroupComplete", "Item", "Namer", "NoOptions", "Reader", "Router",
    "Sender", "Skip", "Step", "Transform", "option", "dicomeread",
]


def __getattr__(name):
    # dcmpipe.dicomeread lives in dcmpipe.enhanced (numpy, pydicom): imported on first use only.
    if name == "dicomeread":
        from .enhanced import dicomeread

        return dicomeread
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
