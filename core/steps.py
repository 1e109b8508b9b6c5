"""Items and steps: what travels through a pipeline and what works on it.

One :class:`Item` travels per DICOM object (or per non-DICOM file found, so
that it can be reported or put aside).  Its header is read lazily, once, with
the tags every step of the recipe declared (``Step.tags``); the full pydicom
data set only when a step asks for ``item.dataset()``.

A step is a class.  Subclass the base of its verb, give it an ``id`` and an
``Options`` dataclass, and return it from the matching registration hook::

    @dataclasses.dataclass(frozen=True)
    class ByPrefixOptions:
        root: Path = option(help="folder that holds the site's study folders")
        prefix: str = option("", help="only Study Descriptions with this prefix")

    class ByPrefix(Router):
        id = "by-prefix"
        Options = ByPrefixOptions
        tags = ("StudyDescription",)

        def route(self, item):
            ...
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterable, Iterator

log = logging.getLogger("dcmpipe")

GROUP_LEVELS = ("item", "series", "study", "run")


def option(default: Any = dataclasses.MISSING, *, help: str = "", factory=None):
    """Declare one recipe key of a step's ``Options`` dataclass.

    ``default`` left out makes the key required.  ``help`` is shown by
    ``dcmpipe plugins`` and in the docs.  ``factory`` gives a mutable default.
    """
    meta = {"help": help}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class NoOptions:
    """A step without options."""


class Skip(Exception):
    """Raised by a step to leave an item alone, with the reason as message.

    The item is counted as skipped, not failed, and later steps do not see it.
    """


def known_tag(keyword: str) -> int | None:
    """The tag of a dictionary keyword, from the host's own table (no pydicom import), else None."""
    from .keywords import keywords

    return keywords().get(keyword)


def known_keyword(tag: int) -> str | None:
    """The keyword of a dictionary tag, from the host's own table (no pydicom import), else None."""
    from .keywords import tags

    return tags().get(tag)


@functools.lru_cache(maxsize=1024)
def tag_of(key: int | str) -> int:
    """Turn ``0x0020000D``, ``"0020,000D"``, ``"(0020,000d)"`` or a keyword into a tag."""
    if isinstance(key, int):
        return key
    text = key.strip().strip("()")
    if "," in text:
        group, elem = text.split(",", 1)
        return (int(group, 16) << 16) | int(elem, 16)
    tag = known_tag(text)
    if tag is not None:
        return tag
    from pydicom.datadict import tag_for_keyword

    tag = tag_for_keyword(text)
    if tag is None:
        raise ValueError(f"unknown DICOM keyword {key!r}")
    return tag


@dataclass(eq=False)
class Item:
    """One object travelling through a run.

    ``source``: the file it came from (None for data received from the network,
    which then holds its bytes in ``data``).  ``name``, ``destination`` and
    ``outputs`` are what the steps decided.  ``status`` is ``"ok"`` until a
    step skips, fails or the header turns out not to be DICOM (``"bad"``);
    ``reason`` then says why, in a few words.  ``extra`` is free for plugins
    (the files reader puts the path relative to its root in ``extra["relpath"]``).
    """

    source: Path | None = None
    data: bytes | None = None
    header: dict | None = None
    name: str | None = None
    destination: Path | None = None
    outputs: list = field(default_factory=list)
    status: str = "ok"
    reason: str = ""
    extra: dict = field(default_factory=dict)
    wanted: frozenset | None = None

    def __str__(self) -> str:
        return str(self.source) if self.source is not None else self.extra.get("label", "<item>")

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def is_dicom(self) -> bool:
        return self.header is not None

    def load_header(self, tags: frozenset[int] | None) -> None:
        """Read the header (the given tags; None = all) unless already read.

        A file that is not DICOM makes the item ``bad`` with the reason.
        """
        if self.header is not None or self.status != "ok":
            return
        from .errors import NotDicomError
        from .header import read_header

        self.wanted = tags
        try:
            self.header = read_header(self.data_source(), tags)
        except NotDicomError as exc:
            self.status, self.reason = "bad", exc.reason

    def data_source(self):
        if self.source is not None:
            return self.source
        import io

        return io.BytesIO(self.data or b"")

    def get(self, key: int | str, default: Any = None) -> Any:
        """The value of a top-level element, by keyword or tag; ``default`` if absent."""
        tag = tag_of(key)
        if self.header is None:
            return default
        if tag not in self.header and self.wanted is not None and tag not in self.wanted:
            from .header import read_header

            # A step asked for a tag it did not declare: read the whole header once.
            self.header = read_header(self.data_source(), None)
            self.wanted = None
        value = self.header.get(tag)
        return default if value is None else value

    def dataset(self, pixels: bool = False):
        """The full pydicom data set (without pixel data unless ``pixels``)."""
        from pydicom import dcmread

        return dcmread(self.data_source(), stop_before_pixels=not pixels, force=True)

    def group_key(self, level: str):
        """The key that ties items of one series or study together."""
        if level == "run":
            return ()
        study = self.get("StudyInstanceUID", "")
        if level == "study":
            return (study,)
        return (study, self.get("SeriesInstanceUID", ""))


@dataclass
class GroupComplete:
    """Put in the item stream by a never-ending reader: this group is complete."""

    level: str
    key: tuple


@dataclass
class Context:
    """What a step knows about its run."""

    base_dir: Path = field(default_factory=Path.cwd)
    dry_run: bool = False
    interactive: bool = False
    total: int | None = None
    stopping: bool = False
    log: logging.Logger = log

    def resolve(self, path: str | os.PathLike) -> Path:
        """A recipe path, relative to the recipe's folder."""
        return (self.base_dir / Path(path).expanduser()).resolve()


class Step:
    """Base of every step class.  Subclasses set the class attributes."""

    verb: ClassVar[str] = ""
    #: the name a recipe uses: lower case, words joined by hyphens
    id: ClassVar[str] = ""
    #: a frozen dataclass; its fields are the recipe keys
    Options: ClassVar[type] = NoOptions
    #: "item", or "series"/"study"/"run" for steps that need the whole group
    group: ClassVar[str] = "item"
    #: header elements the step reads (keywords or tags)
    tags: ClassVar[tuple] = ()
    #: worth spreading over worker processes (CPU-heavy per item)
    parallel: ClassVar[bool] = False
    #: also receives items that are not DICOM (status "bad")
    accepts_bad: ClassVar[bool] = False
    #: runs in the main process, items in order (a step writing one stream, like a listing)
    main_process: ClassVar[bool] = False

    def __init__(self, options: Any, context: Context):
        self.options = options
        self.context = context

    def close(self) -> None:
        """Release what the step holds (files, associations); called once."""

    def start_group(self, items: list[Item]) -> None:
        """A group step of a per-item verb (route, export, send) sees its whole group here first.

        Called once per complete group, in dry runs too, before the items are handed over one
        by one (a sender learns every SOP class of a study before it associates).  Raising
        fails the group's items.
        """

    @classmethod
    def describe_step(cls) -> str:
        return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""


class Reader(Step):
    verb = "read"

    def read(self) -> Iterator[Item | GroupComplete]:
        raise NotImplementedError


class Transform(Step):
    verb = "transform"

    def transform(self, item: Item) -> Item | None:
        return item

    def transform_group(self, items: list[Item]) -> list[Item]:
        return [out for out in map(self.transform, items) if out is not None]


class Namer(Step):
    verb = "name"

    def name(self, item: Item) -> str:
        raise NotImplementedError

    def name_group(self, items: list[Item]) -> list[str]:
        return [self.name(item) for item in items]


class Router(Step):
    verb = "route"

    def route(self, item: Item) -> Path | None:
        raise NotImplementedError


class Exporter(Step):
    verb = "export"

    def export(self, item: Item, destination: Path | None) -> list:
        raise NotImplementedError

    def describe(self, item: Item, destination: Path | None) -> str:
        target = destination / item.name if destination and item.name else destination
        return f"{self.id}: {item} -> {target}"


class Sender(Step):
    verb = "send"

    def send(self, item: Item) -> str:
        raise NotImplementedError

    def describe(self, item: Item) -> str:
        return f"{self.id}: would send {item}"


STEP_BASES: dict[str, type[Step]] = {
    cls.verb: cls for cls in (Reader, Transform, Namer, Router, Exporter, Sender)
}
VERBS = tuple(STEP_BASES)


def chunked(iterable: Iterable, size: int) -> Iterator[list]:
    chunk: list = []
    for thing in iterable:
        chunk.append(thing)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
