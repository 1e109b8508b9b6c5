"""The classic files of one series, read lean: files laid out alike are walked once.

Shared by dcms2e (not a plugin itself).  The classic files of one dynamic come from one
reconstruction: the same elements in the same order with values of the same lengths, so they differ
only inside values (UIDs, positions, instance numbers...).  The host's lean reader
(``dcmpipe.enhanced.read_dataset``) walks a file element by element (0.5 ms for a classic MR file);
here a file whose bytes outside values (element headers, item and delimiter tags, the file's size)
equal those of a file already walked gets that file's element locations without a walk: a numpy
comparison of a few kilobytes.  The decisions of the walk depend only on those bytes, and on two
values checked here as the host checks them (transfer syntax, character set), so the result is the
data set the walk would give.  Anything else (another layout, .gz, what the lean reader leaves to
pydicom) is read by ``read_dataset`` itself.
"""

from __future__ import annotations

from pathlib import Path

_GROUP_LENGTH = 0x00020000
_TRANSFER_SYNTAX = 0x00020010
_CHARSET = 0x00080005


class _Layout:
    """A walked file: its data set and where its structure (everything but values) lies."""

    __slots__ = ("size", "ds", "data", "positions", "structure", "fixed_values", "skeleton", "meta")

    def __init__(self, data: bytes, ds):
        import numpy as np

        self.size = len(data)
        self.ds, self.data = ds, data
        self.skeleton = _Skeleton(ds.layout)
        self.meta = dict(ds.file_meta.layout)
        structural = np.ones(len(data), dtype=bool)
        structural[:128] = False  # the preamble: anything
        end = _value_ranges(ds.file_meta.layout, structural)
        end = max(end, _value_ranges(ds.layout, structural))
        structural[end:] = False  # after the last element walked: not looked at by the walk either
        self.positions = np.flatnonzero(structural)
        self.structure = np.frombuffer(data, dtype=np.uint8)[self.positions]
        # Values the walk decides on: they must be equal too.
        self.fixed_values = [(entry[1], entry[1] + entry[2]) for raw, tag in
                             ((ds.file_meta.layout, _GROUP_LENGTH), (ds.file_meta.layout, _TRANSFER_SYNTAX),
                              (ds.layout, _CHARSET))
                             if (entry := raw.get(tag)) is not None and entry[2] >= 0]

    def bind(self, data: bytes):
        """The data set of ``data`` (a file of this layout)."""
        from dcmpipe.enhanced import LeanDataset

        ds = LeanDataset(data, self.skeleton.bind(data))
        ds.file_meta = LeanDataset(data, dict(self.meta))
        return ds

    def matches(self, data: bytes) -> bool:
        import numpy as np

        if len(data) != self.size:
            return False
        if not np.array_equal(np.frombuffer(data, dtype=np.uint8)[self.positions], self.structure):
            return False
        reference = self.data
        return all(data[a:b] == reference[a:b] for a, b in self.fixed_values)


def _value_ranges(raw: dict, structural) -> int:
    """Mark the values of a walked data set (and of its walked items) as not structural; its end."""
    end = 0
    for vr, start, length in raw.values():
        if length == -2:  # an undefined-length sequence, walked: its items
            for item in start:
                end = max(end, _value_ranges(item.layout, structural))
            continue
        structural[start:start + length] = False
        end = max(end, start + length)
    return end


class _Skeleton:
    """The element locations of a walked data set, to be bound to another buffer of the same layout."""

    __slots__ = ("raw", "sequences")

    def __init__(self, raw: dict):
        self.raw = raw
        self.sequences = [(tag, entry[0], [_Skeleton(item.layout) for item in entry[1]])
                          for tag, entry in raw.items() if entry[2] == -2]

    def bind(self, buf) -> dict:
        from dcmpipe.enhanced import LeanDataset

        out = dict(self.raw)
        for tag, vr, items in self.sequences:
            out[tag] = (vr, [LeanDataset(buf, item.bind(buf)) for item in items], -2)
        return out


def read_series(paths: list):
    """Yield ``(path, data set, bytes, layout)`` per path: lean data sets where the lean reader reads the
    file, else pydicom's (as ``read_dataset(path, pixels=True, lean=True)`` gives them).  ``bytes``: the
    file's bytes, in which the lean data set's elements lie (None for .gz and pydicom data sets);
    ``layout``: a number shared by the files laid out alike (None if not known)."""
    from dcmpipe.enhanced import LeanDataset, read_dataset

    layouts: list[_Layout] = []
    for path in paths:
        path = Path(path)
        ds = data = number = None
        if path.suffix != ".gz" and layouts:
            data = _read(path)
            if data is not None:
                for k, layout in enumerate(layouts):
                    if layout.matches(data):
                        ds, number = layout.bind(data), k
                        break
        if ds is None:
            data = None
            ds = read_dataset(path, pixels=True, lean=True)
            if isinstance(ds, LeanDataset) and path.suffix != ".gz" and len(layouts) < 8:
                layout = _layout_of(ds)
                if layout is not None:
                    layouts.append(layout)
                    ds, data, number = layout.ds, layout.data, len(layouts) - 1
        yield path, ds, data, number


def _read(path: Path):
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError:
        return None  # read_dataset says what is wrong


def _layout_of(ds):
    """The layout of a file the lean reader walked, over a copy of its bytes (not its mapping)."""
    try:
        data = bytes(ds.buffer)
        layout = _Layout(data, ds)
        layout.ds = layout.bind(data)
        return layout
    except (AttributeError, TypeError, ValueError):  # not the lean reader this was written for
        return None
