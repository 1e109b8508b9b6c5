"""dcminfo's helpers: values found in data sets, Enhanced MR frames, the table, dumps, settings.

pydicom is imported inside the functions that read whole data sets.
"""

from __future__ import annotations

import os
from pathlib import Path

from dcmpipe.plugins._dcmls_common import number, text

ABSENT = "-"


# -- settings: ~/.dcminforc or dcminfo.toml in the user's config folder --------------------------------


def config_folder() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "dcmpipe"


def load_settings() -> tuple[list[str] | None, int | None, list[str]]:
    """``(tags, width, sources)`` from the user's settings; ``None`` where not set.

    ``~/.dcminforc`` is read first (``Tags t1 t2 ...`` and ``MaxWidth N`` lines, as the
    original tool read them); ``dcminfo.toml`` in the config folder (``tags = [...]``,
    ``max_width = N``) wins where it sets a value.
    """
    tags: list[str] | None = None
    width: int | None = None
    sources = []
    rc = Path(os.path.expanduser("~")) / ".dcminforc"
    if rc.is_file():
        sources.append(str(rc))
        for n, line in enumerate(rc.read_text(errors="replace").splitlines(), 1):
            words = line.split("#", 1)[0].split()
            if not words:
                continue
            key = words[0].lower()
            if key == "tags":
                tags = (tags or []) + words[1:]
            elif key == "maxwidth" and len(words) == 2 and words[1].isdigit():
                width = int(words[1])
            else:
                raise ValueError(f"{rc}, line {n}: expected 'Tags t1 t2 ...' or 'MaxWidth N', found {line.strip()!r}")
    toml_file = config_folder() / "dcminfo.toml"
    if toml_file.is_file():
        import tomllib

        sources.append(str(toml_file))
        try:
            data = tomllib.loads(toml_file.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{toml_file}: {exc}") from None
        unknown = set(data) - {"tags", "max_width"}
        if unknown:
            raise ValueError(f"{toml_file}: unknown keys {', '.join(sorted(unknown))} (known: tags, max_width)")
        if "tags" in data:
            if not isinstance(data["tags"], list) or not all(isinstance(t, str) for t in data["tags"]):
                raise ValueError(f"{toml_file}: tags must be a list of strings")
            tags = list(data["tags"])
        if "max_width" in data:
            if not isinstance(data["max_width"], int) or data["max_width"] < 20:
                raise ValueError(f"{toml_file}: max_width must be a whole number of at least 20")
            width = data["max_width"]
    return tags, width, sources


# -- values in data sets --------------------------------------------------------------------------------


def read_dataset(path, pixels: bool = False):
    """The whole header with pydicom (and the pixel data element if ``pixels``)."""
    import warnings

    from pydicom import dcmread

    with warnings.catch_warnings():  # pydicom's complaints about odd values are not the user's business here
        warnings.simplefilter("ignore")
        return dcmread(path, stop_before_pixels=not pixels, force=True)


def occurrences(ds, tag: int, first: bool) -> list:
    """Values of ``tag`` anywhere in ``ds``, depth first in file order (the first only if ``first``)."""
    found = []

    def walk(dataset) -> bool:
        for elem in dataset:
            if elem.tag == tag:
                found.append(_value(elem))
                if first:
                    return True
            if elem.VR == "SQ" and elem.value is not None:
                for item in elem.value:
                    if walk(item):
                        return True
        return False

    walk(ds)
    return found


def _value(elem, as_written: bool = False) -> str:
    """One element's value as text (sequences summarised, binary values sized); numbers in text
    (DS, IS) as written in the file if ``as_written``, else as numbers (``80.0000`` -> ``80``)."""
    if elem.VR == "SQ":
        count = len(elem.value or ())
        return f"<{count} item{'s' if count != 1 else ''}>"
    if as_written and elem.VR in ("DS", "IS") and elem.value is not None:
        values = elem.value if type(elem.value).__name__ == "MultiValue" else [elem.value]
        return "\\".join(str(v) for v in values)
    return text(_plain(elem.value))


def _plain(value):
    """pydicom's value types as the header reader gives them: float, int, str, tuples."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return tuple(_plain(v) for v in value)
    for kind in (float, int):  # DSfloat, IS, ...
        if isinstance(value, kind):
            return kind(value)
    return None if value is None else str(value)


def frame_table(ds) -> tuple[dict[str, str], list[dict[str, str]]]:
    """An Enhanced (multi-frame) data set's functional groups: ``(shared, frames)``.

    ``shared``: label -> value of the Shared Functional Groups; ``frames``: one dict per
    frame of the Per-Frame Functional Groups. Labels are keywords (``EffectiveEchoTime``),
    prefixed with the enclosing sequence where a keyword appears in two places.
    """
    shared = {}
    if "SharedFunctionalGroupsSequence" in ds and ds.SharedFunctionalGroupsSequence:
        shared = _flatten(ds.SharedFunctionalGroupsSequence[0])
    frames = [_flatten(item) for item in ds.get("PerFrameFunctionalGroupsSequence") or ()]
    return shared, frames


def _flatten(item, parent: str = "", out: dict | None = None) -> dict[str, str]:
    out = {} if out is None else out
    for elem in item:
        label = _elem_name(elem)
        if elem.VR == "SQ":
            seq = elem.value or ()
            for n, sub in enumerate(seq, 1):
                _flatten(sub, label if len(seq) == 1 else f"{label}[{n}]", out)
            continue
        out[label if label not in out else f"{parent}>{label}"] = _value(elem)
    return out


def _elem_name(elem) -> str:
    if elem.tag.is_private:
        if elem.tag.is_private_creator:
            return ".PrivateCreator"
        known = (elem.name or "").strip("[]")
        return "." + (known if known and not known.startswith("Private") else number(int(elem.tag)))
    return elem.keyword or number(int(elem.tag))


# -- the table --------------------------------------------------------------------------------------------


def render(rows: list[tuple[str, dict[str, str]]], columns: list[str], width: int, title: str,
           described: dict[str, str] | None = None) -> str:
    """Columns whose value is the same in every row first (``name  value``), then a table of
    the others, one line per row, folded into several tables if wider than ``width``."""
    described = described or {}
    lines = []
    same, differ = [], []
    for col in columns:
        values = {r.get(col, ABSENT) for _, r in rows}
        (same if len(values) == 1 else differ).append(col)
    if same:
        lines.append(title)
        label_width = max(len(_label(c, described)) for c in same)
        for col in same:
            value = rows[0][1].get(col, ABSENT) if rows else ABSENT
            lines += _fold(_label(col, described), label_width, value, width)
    if differ:
        if lines:
            lines.append("")
        lines.append(f"Different ({len(differ)}):")
        lines += _table(rows, differ, width)
    return "\n".join(lines) + "\n"


def _fold(label: str, label_width: int, value: str, width: int) -> list[str]:
    """``  label  value``, a value too long for the width continued on the next lines (below the
    value, or below the label when the labels leave too little room)."""
    indent = label_width + 4 if width - label_width - 4 >= 20 else 4
    room = max(width - indent, 10)
    parts = [value[i:i + room] for i in range(0, len(value), room)] or [""]
    if indent == 4 and len(f"  {label}  {value}") > width:
        return [f"  {label}"] + [f"    {part}" for part in parts]
    head = f"  {label.ljust(label_width)}  {parts[0]}".rstrip()
    return [head] + [" " * indent + part for part in parts[1:]]


def _label(col: str, described: dict[str, str]) -> str:
    return f"{col} {described[col]}" if col in described else col


def _cut(value: str, limit: int) -> str:
    limit = max(limit, 8)
    return value if len(value) <= limit else value[:limit - 3] + "..."


def _table(rows, columns, width) -> list[str]:
    first_width = max([len("file")] + [len(label) for label, _ in rows])
    first_width = min(first_width, max(width // 2, 12))
    room = max(width - first_width - 2, 10)
    cells = {col: [_cut(r.get(col, ABSENT), room) for _, r in rows] for col in columns}
    widths = {col: max(len(col[:room]), *(len(v) for v in cells[col])) for col in columns}
    # fold: as many columns per table as fit in the width, the row labels repeated
    groups, current, used = [], [], first_width
    for col in columns:
        need = widths[col] + 2
        if current and used + need > width:
            groups.append(current)
            current, used = [], first_width
        current.append(col)
        used += need
    if current:
        groups.append(current)
    lines = []
    for n, group in enumerate(groups):
        if n:
            lines.append("")
        head = "file".ljust(first_width) + "".join("  " + col[:room].ljust(widths[col]) for col in group)
        lines.append(head.rstrip())
        for i, (label, _) in enumerate(rows):
            row = _cut(label, first_width).ljust(first_width)
            row += "".join("  " + cells[col][i].ljust(widths[col]) for col in group)
            lines.append(row.rstrip())
    return lines


# -- whole-file forms: -l and -a ------------------------------------------------------------------------


def element_list(ds, by_keyword: bool) -> list[str]:
    """Every element's name and tag (nested ones too, once each), sorted by tag or by name."""
    seen: dict[int, str] = {}

    def walk(dataset):
        for elem in dataset:
            seen.setdefault(int(elem.tag), _elem_name(elem))
            if elem.VR == "SQ":
                for item in elem.value or ():
                    walk(item)

    walk(ds.file_meta)
    walk(ds)
    pairs = sorted(seen.items(), key=(lambda p: (p[1].lower(), p[0])) if by_keyword else (lambda p: p[0]))
    label = max((len(n) for n in seen.values()), default=0)
    if by_keyword:
        return [f"{n.ljust(label)}  {number(t)}" for t, n in pairs]
    return [f"{number(t)}  {n}" for t, n in pairs]


def dump(ds) -> list[str]:
    """Every element, one per line: ``Name  value``; sequences indented; private names start with ``.``."""
    lines = []

    def walk(dataset, depth):
        items = list(dataset)
        label = max((len(_elem_name(e)) for e in items), default=0)
        for elem in items:
            pad = "  " * depth
            if elem.VR == "SQ":
                count = len(elem.value or ())
                lines.append(f"{pad}{_elem_name(elem)}  ({count} item{'s' if count != 1 else ''})")
                for n, item in enumerate(elem.value or (), 1):
                    lines.append(f"{pad}  - item {n}")
                    walk(item, depth + 2)
            else:
                lines.append(f"{pad}{_elem_name(elem).ljust(label)}  {_value(elem, as_written=True)}".rstrip())

    walk(ds.file_meta, 0)
    walk(ds, 0)
    return lines


__all__ = ["load_settings", "occurrences", "frame_table", "render", "element_list", "dump", "read_dataset"]
