"""Recipes: TOML files that chain steps.

::

    [recipe]
    name = "sort scanner data"

    [[step]]
    read = "files"          # the verb key names the step; the other keys are its options
    path = "incoming"

    [[step]]
    export = "dicom"
    mode = "move"

The whole recipe is validated before any file is touched; every problem is
reported with its step number and key, all of them at once.  Relative paths
are relative to the recipe's folder.
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from pathlib import Path
from typing import Any, NamedTuple

from .errors import RecipeError
from .steps import GROUP_LEVELS, VERBS

TOP_LEVEL_KEYS = ("recipe", "step")
RECIPE_KEYS = ("name", "description")


class StepSpec(NamedTuple):  # not dataclasses, which cost ~0.6 ms each to define at start-up
    """One validated step: its place, verb, id, class and options."""

    index: int
    verb: str
    id: str
    cls: type
    options: Any

    def label(self) -> str:
        return f"step {self.index} ({self.verb} = {self.id!r})"


class Recipe:
    """A validated recipe: its name, steps (StepSpec), the folder of relative paths, where it came
    from and the dict it was built from."""

    def __init__(self, name: str, steps: list, base_dir: Path, source: str = "recipe", data: dict | None = None):
        self.name, self.steps, self.base_dir, self.source = name, steps, base_dir, source
        self.data = {} if data is None else data

    def __repr__(self) -> str:
        return f"Recipe({self.name!r}, {len(self.steps)} steps, from {self.source})"

    @property
    def readers(self) -> list[StepSpec]:
        return [s for s in self.steps if s.verb == "read"]

    @property
    def workers(self) -> list[StepSpec]:
        return [s for s in self.steps if s.verb != "read"]


def _loads(text: str) -> dict:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    return tomllib.loads(text)


def load_recipe(path: str | Path, registry=None) -> Recipe:
    """Read and validate a recipe file; :class:`RecipeError` lists every problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RecipeError([f"cannot read: {exc.strerror or exc}"], source=str(path)) from None
    try:
        data = _loads(text)
    except Exception as exc:  # tomllib.TOMLDecodeError names line and column
        raise RecipeError([f"not valid TOML: {exc}"], source=str(path)) from None
    return build_recipe(data, path.resolve().parent, source=str(path), registry=registry)


def _suggest(word: str, choices) -> str:
    import difflib  # only for messages: not imported by a run that has none

    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def option_fields(options_cls) -> list[tuple[str, Any, Any, str]]:
    """(key, type, default or MISSING, help) for every option of a step."""
    hints = typing.get_type_hints(options_cls)
    out = []
    for f in dataclasses.fields(options_cls):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = dataclasses.MISSING
        out.append((f.name, hints.get(f.name, Any), default, f.metadata.get("help", "")))
    return out


def type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in typing.get_args(tp))
    if origin is list:
        (arg,) = typing.get_args(tp) or (Any,)
        return f"list of {type_name(arg)}"
    if tp is type(None):
        return "none"
    if tp is Path:
        return "path"
    return getattr(tp, "__name__", str(tp))


def coerce(value, tp, base_dir: Path):
    """Check ``value`` against the declared type; return it converted, or raise TypeError."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin is typing.Literal:
        if value in typing.get_args(tp):
            return value
        raise TypeError(f"must be one of {type_name(tp)}, not {value!r}")
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, base_dir)
            except TypeError:
                pass
        raise TypeError(f"must be {type_name(tp)}, not {_kind(value)}")
    if origin is list:
        (arg,) = typing.get_args(tp) or (Any,)
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise TypeError(f"must be a list, not {_kind(value)}")
        return [coerce(v, arg, base_dir) for v in value]
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is Path:
        if isinstance(value, str) and value:
            return (base_dir / Path(value).expanduser()).resolve() if value != "-" else Path("-")
    elif isinstance(tp, type) and isinstance(value, tp):
        return value
    raise TypeError(f"must be {type_name(tp)}, not {_kind(value)}")


def _kind(value) -> str:
    return {bool: "true/false", int: "a number", float: "a number", str: "text", list: "a list", dict: "a table"}.get(
        type(value), type(value).__name__
    ) + f" ({value!r})"


def build_recipe(data: dict, base_dir: Path, source: str = "recipe", registry=None) -> Recipe:
    """Validate a recipe given as a dict (parsed TOML) and resolve its steps.

    Without ``registry``, only the built-in plugins offering the recipe's steps are imported (and
    the installed ones); a recipe with a problem is validated again against every plugin, so that
    the messages name every step there is.
    """
    if registry is None:
        from .registry import get_registry

        partial = get_registry(_step_names(data))
        try:
            return build_recipe(data, base_dir, source, partial)
        except RecipeError:
            registry = get_registry()
            if registry is partial:  # every plugin was loaded already: the same answer
                raise
    problems: list[str] = []
    for key in data:
        if key not in TOP_LEVEL_KEYS:
            problems.append(f"unknown top-level key {key!r}{_suggest(key, TOP_LEVEL_KEYS)}")
    head = data.get("recipe", {})
    if not isinstance(head, dict):
        problems.append("[recipe] must be a table")
        head = {}
    for key in head:
        if key not in RECIPE_KEYS:
            problems.append(f"[recipe]: unknown key {key!r}{_suggest(key, RECIPE_KEYS)}")
    raw_steps = data.get("step", [])
    if not isinstance(raw_steps, list) or not raw_steps:
        problems.append("no steps: add [[step]] tables")
        raw_steps = [] if not isinstance(raw_steps, list) else raw_steps
    specs: list[StepSpec] = []
    seen_other = False
    for index, raw in enumerate(raw_steps, start=1):
        if not isinstance(raw, dict):
            problems.append(f"step {index}: must be a table")
            continue
        verbs = [k for k in raw if k in VERBS]
        if not verbs:
            problems.append(f"step {index}: no verb key; a step starts with one of {', '.join(VERBS)}")
            continue
        if len(verbs) > 1:
            problems.append(f"step {index}: has {' and '.join(repr(v) for v in verbs)}; a step has exactly one verb key")
            continue
        verb = verbs[0]
        step_id = raw[verb]
        where = f"step {index} ({verb} = {step_id!r})"
        if not isinstance(step_id, str):
            problems.append(f"step {index}: {verb} must name a plugin step, not {_kind(step_id)}")
            continue
        if verb == "read" and seen_other:
            problems.append(f"{where}: read steps come before the other steps")
        seen_other = seen_other or verb != "read"
        found = _find_step(registry, verb, step_id, where, problems)
        if found is None:
            continue
        options = _build_options(found.cls, {k: v for k, v in raw.items() if k != verb}, base_dir, where, problems)
        if options is not None:
            if found.cls.group not in GROUP_LEVELS:
                problems.append(f"{where}: plugin declares unknown group {found.cls.group!r}")
            specs.append(StepSpec(index, verb, step_id, found.cls, options))
    if raw_steps and not any(isinstance(r, dict) and "read" in r for r in raw_steps):
        problems.append("no read step: a recipe needs a source, e.g. [[step]] read = \"files\"")
    if problems:
        raise RecipeError(problems, source=source)
    return Recipe(str(head.get("name", Path(source).stem)), specs, base_dir, source, data)


def _step_names(data: dict) -> set[tuple[str, str]]:
    """The (verb, id) pairs a recipe dict names, whatever else is wrong with it."""
    steps = data.get("step")
    return {(verb, raw[verb]) for raw in steps if isinstance(raw, dict)
            for verb in VERBS if isinstance(raw.get(verb), str)} if isinstance(steps, list) else set()


def _find_step(registry, verb: str, step_id: str, where: str, problems: list):
    from .errors import PluginError

    try:
        return registry.lookup(verb, step_id)
    except PluginError as exc:
        if (verb, step_id) in registry.conflicts:
            problems.append(f"{where}: {exc}")
            return None
    elsewhere = [v for v in VERBS if step_id in registry.steps[v]]
    if elsewhere:
        problems.append(f"{where}: {step_id!r} is not a {verb} step; it offers {', '.join(elsewhere)}")
    else:
        known = registry.steps[verb]
        hint = _suggest(step_id, known) or (f"; {verb} steps: {', '.join(sorted(known))}" if known else "")
        problems.append(f"{where}: unknown {verb} step {step_id!r}{hint}")
    return None


def _build_options(cls, given: dict, base_dir: Path, where: str, problems: list):
    fields = {name: (tp, default) for name, tp, default, _ in option_fields(cls.Options)}
    values = {}
    ok = True
    for key, value in given.items():
        if key in VERBS:
            continue
        if key not in fields:
            problems.append(f"{where}: unknown option {key!r}{_suggest(key, fields) or _options_hint(fields)}")
            ok = False
            continue
        try:
            values[key] = coerce(value, fields[key][0], base_dir)
        except TypeError as exc:
            problems.append(f"{where}: option {key!r} {exc}")
            ok = False
    for key, (_, default) in fields.items():
        if default is dataclasses.MISSING and key not in given:
            problems.append(f"{where}: missing required option {key!r}")
            ok = False
    if not ok:
        return None
    try:
        return cls.Options(**values)
    except (TypeError, ValueError) as exc:  # __post_init__ checks of a plugin
        problems.append(f"{where}: {exc}")
        return None


def _options_hint(fields) -> str:
    return f"; options: {', '.join(fields)}" if fields else "; this step has no options"


# -- writing recipes (for --print-recipe and "Save recipe") -------------------


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    text = str(value)
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    return f'"{escaped}"'


def dump_recipe(data: dict) -> str:
    """Write a recipe dict (``{"recipe": {...}, "step": [...]}``) as TOML."""
    lines = []
    head = data.get("recipe") or {}
    if head:
        lines.append("[recipe]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in head.items()]
    for step in data.get("step", []):
        lines += ["", "[[step]]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in step.items() if v is not None]
    return "\n".join(lines) + "\n"
