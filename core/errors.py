"""Errors meant for users: each prints as one line, without a traceback."""

from __future__ import annotations


class DcmpipeError(Exception):
    """A problem the user can act on; the CLI prints ``str(error)`` as one line."""

    exit_code = 1


class NotDicomError(DcmpipeError):
    """A file is not DICOM, or is damaged so that its header cannot be read."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class RecipeError(DcmpipeError):
    """A recipe has problems; ``problems`` lists every one with its place."""

    exit_code = 2

    def __init__(self, problems: list[str], source: str = "recipe"):
        self.problems = list(problems)
        self.source = source
        count = len(self.problems)
        head = f"{source}: {count} problem{'s' if count != 1 else ''}"
        super().__init__(head + "".join(f"\n  {p}" for p in self.problems))


class PluginError(DcmpipeError):
    """A plugin could not be loaded, or two plugins claim one step name."""
