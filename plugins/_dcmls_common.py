"""Tags and values for dcmls and dcminfo: parse tag lists, name tags, show values.

Shared by the two listing tools (``dcmls`` and ``dcminfo``), with :class:`Output`, the
stream both write to.  Kept free of
pydicom at import time: pydicom's dictionary is consulted only for a keyword
or tag that is not in the host's table of common keywords (dcmpipe.steps.known_tag).
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from dcmpipe import DcmpipeError
from dcmpipe.steps import known_keyword, known_tag

_NUMBER = re.compile(r"^\(?\s*([0-9A-Fa-f]{4})\s*,?\s*([0-9A-Fa-f]{4})\s*\)?$")


class TagError(ValueError):
    """A tag in a tag list is neither a keyword nor a group,element number."""


def parse_tag(text: str | int) -> int:
    """``SeriesDescription``, ``0008,103e``, ``(0008,103E)`` or ``0008103e`` -> 0x0008103E."""
    if isinstance(text, int):
        return text
    text = text.strip()
    match = _NUMBER.match(text)
    if match:
        return int(match.group(1), 16) << 16 | int(match.group(2), 16)
    tag = known_tag(text)  # the common keywords cost no pydicom import
    if tag is not None:
        return tag
    if text.isidentifier():
        from pydicom.datadict import tag_for_keyword

        tag = tag_for_keyword(text)
        if tag is not None:
            return tag
        raise TagError(f"unknown tag {text!r}: not a DICOM keyword{_did_you_mean(text)}")
    raise TagError(f"unknown tag {text!r}: give a keyword (SeriesDescription) or a number (0008,103e)")


def _did_you_mean(text: str) -> str:
    import difflib

    from pydicom.datadict import keyword_dict

    close = difflib.get_close_matches(text, list(keyword_dict), n=1, cutoff=0.8)
    return f" (did you mean {close[0]}?)" if close else ""


def parse_tags(values) -> list[int]:
    """Tags from a list of strings, each possibly holding several (``A:B``); no repeats.

    ``,`` separates tags only where it cannot be part of a number (``0008,103e``).
    """
    tags: list[int] = []
    for value in values:
        if isinstance(value, int):
            parts = [value]
        else:
            parts = [p for p in re.split(r"[:\s;]+", value.strip()) if p]
            parts = [q for p in parts for q in ([p] if _NUMBER.match(p) else p.split(",")) if q]
        for part in parts:
            tag = parse_tag(part)
            if tag not in tags:
                tags.append(tag)
    return tags


def check_tags(tags: list[str], allow_all: bool = False) -> None:
    """Raise ValueError naming every unknown tag of a step's ``tags`` option (``*`` allowed if ``allow_all``)."""
    problems = []
    for entry in tags:
        if allow_all and entry.strip() == "*":
            continue
        try:
            parse_tags([entry])
        except ValueError as exc:
            problems.append(str(exc))
    if problems:
        raise ValueError("option 'tags': " + "; ".join(problems))


def name(tag: int) -> str:
    """The keyword of a tag, or ``(gggg,eeee)`` for private and unknown tags."""
    keyword = known_keyword(tag)
    if keyword:
        return keyword
    if not (tag >> 16) % 2:
        from pydicom.datadict import keyword_for_tag

        keyword = keyword_for_tag(tag)
        if keyword:
            return keyword
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def number(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def text(value) -> str:
    """A header value as one line of text: multiple values joined with ``\\``."""
    if type(value) is str and value.isprintable():  # the common case first
        return value
    if value is None:
        return ""
    if isinstance(value, (tuple, list)):
        return "\\".join(text(v) for v in value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    if not isinstance(value, (str, int)):  # a sequence
        try:
            return f"<sequence of {len(value)} item{'s' if len(value) != 1 else ''}>"
        except TypeError:
            return str(value)
    out = str(value)
    if "\n" in out or "\r" in out or "\t" in out:
        out = re.sub(r"[\r\n\t]+", " ", out)
    return out


def plain(value):
    """A header value for JSON: numbers stay numbers, multiple values a list."""
    if isinstance(value, (tuple, list)):
        return [plain(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return text(value)


def shown(path, cwd: list = []) -> str:  # noqa: B006 (the current folder, looked up once)
    """A path as the user gave it: relative to the current folder when below it."""
    text = str(path)
    if not cwd:
        cwd.append(os.getcwd())
    cwd = cwd[0]
    if text.startswith(cwd + os.sep):
        return text[len(cwd) + 1:]
    return "." if text == cwd else text


class Output:
    """Standard output, or a file written as a hidden part and linked to its name at the end."""

    def __init__(self, target: Path | None):
        self.target = target
        self.part = None
        self.broken = False
        if target is None:
            self.stream = sys.stdout
            return
        if os.path.lexists(target):
            raise DcmpipeError(f"{target}: already exists; the listing never overwrites a file")
        target.parent.mkdir(parents=True, exist_ok=True)
        self.part = target.parent / f".{target.name}.{os.getpid()}.dcmpipe-part"
        self.stream = open(self.part, "x", encoding="utf-8", newline="\n")

    def write(self, text: str) -> None:
        if self.broken:
            return
        try:
            self.stream.write(text)
        except BrokenPipeError:  # `dcmpipe ls | head`: the reader is gone; stop quietly
            self.broken = True
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)

    def close(self, keep: bool = True) -> None:
        if self.part is None:
            try:
                self.stream.flush()
            except BrokenPipeError:
                self.broken = True
            return
        self.stream.flush()
        os.fsync(self.stream.fileno())
        self.stream.close()
        try:
            if keep:
                os.link(self.part, self.target)  # fails rather than replace a file made meanwhile
        except FileExistsError:
            raise DcmpipeError(f"{self.target}: appeared during the run; listing left unwritten") from None
        finally:
            os.unlink(self.part)
