"""The movegui form: fields from a click command's parameters, and back to a recipe.

Nothing here knows the ``move`` switches one by one: the fields are the
command's ``params`` (a flag is a checkbox, a choice a list, a folder a text
field with a folder picker), the values become the command line, and the
recipe is what the command itself prints for ``--print-recipe``.  So a new
switch of ``dcmpipe move`` appears in the page without code here.
"""

from __future__ import annotations

import contextlib
import io
import os
import shlex
import threading
from pathlib import Path

import click

# Switches that steer the command line itself, not the work: the page has its own buttons for them.
CONTROL = {"help", "print_recipe", "dry_run", "debug", "quiet", "verbose", "gui"}
# Per tool: switches the page always gives (the preview's boxes replace move's per-study question).
IMPLIED = {"move": {"all_studies": True}}
ARGUMENT_HELP = {"destdir": "destination folder"}
_capture_lock = threading.Lock()


class FormError(Exception):
    """Bad input: ``errors`` maps a field name (or "" for the whole form) to a message."""

    def __init__(self, errors: dict[str, str]):
        super().__init__("; ".join(errors.values()))
        self.errors = errors


def _default(param):
    value = param.default
    if callable(value):
        value = value()
    if value is not None and not isinstance(value, (str, int, float, bool, Path)):
        return None  # click's "unset" marker
    return value


def _kind(param) -> str:
    if getattr(param, "is_flag", False) and not getattr(param, "count", False):
        return "flag"
    t = param.type
    if isinstance(t, click.Choice):
        return "choice"
    if isinstance(t, click.Path):
        return "folder" if not t.file_okay else "path"
    if isinstance(t, (click.types.IntParamType, click.types.FloatParamType)):
        return "number"
    return "text"


def fields(command, command_name: str) -> list[dict]:
    """One field per switch or argument of ``command``, in declaration order."""
    implied = IMPLIED.get(command_name, {})
    out = []
    for param in command.params:
        if param.name in CONTROL or param.name in implied or getattr(param, "hidden", False):
            continue
        is_argument = isinstance(param, click.Argument)
        switch = param.human_readable_name if is_argument else min(param.opts, key=len)
        kind = _kind(param)
        default = _default(param)
        field = {
            "name": param.name,
            "switch": switch,
            "long": "" if is_argument else max(param.opts + param.secondary_opts, key=len),
            "help": (ARGUMENT_HELP.get(param.name, "") if is_argument else param.help) or "",
            "kind": kind,
            "argument": is_argument,
            "default": bool(default) if kind == "flag" else ("" if default is None else str(default)),
            "output": kind == "folder" and not getattr(param.type, "exists", False),
        }
        if kind == "choice":
            field["choices"] = list(param.type.choices)
        out.append(field)
    return [f for f in out if not f["argument"]] + [f for f in out if f["argument"]]  # command-line order


def argv(command, command_name: str, values: dict) -> list[str]:
    """The command line (without the command name) the form ``values`` stand for."""
    options, arguments = [], []
    implied = IMPLIED.get(command_name, {})
    for param in command.params:
        name = param.name
        if name in CONTROL or getattr(param, "hidden", False):
            continue
        if name in implied:
            value = implied[name]
        else:
            value = values.get(name)
        kind = _kind(param)
        if isinstance(param, click.Argument):
            if value not in (None, ""):
                arguments.append(str(value))
            continue
        switch = min(param.opts, key=len)
        if kind == "flag":
            if bool(value) != bool(_default(param)):
                options.append(switch if value else (param.secondary_opts or [switch])[0])
            continue
        if value in (None, ""):
            continue
        default = _default(param)
        if default is not None and str(value) == str(default):
            continue
        options += [switch, str(value)]
    if any(a.startswith("-") for a in arguments):
        arguments.insert(0, "--")
    return options + arguments


def with_options(args: list[str], *extra: str) -> list[str]:
    """``args`` with more options, put before the arguments."""
    args = list(args)
    end = args.index("--") if "--" in args else len(args)
    return args[:end] + list(extra) + args[end:]


def command_line(command_name: str, args: list[str]) -> str:
    return shlex.join(["dcmpipe", command_name] + args)


def _field_of(command, text: str) -> str:
    """The field a usage error is about: the first switch or argument its message names."""
    words = set(text.replace(",", " ").replace(":", " ").replace("'", " ").split())
    for param in command.params:
        names = [param.human_readable_name] if isinstance(param, click.Argument) else param.opts
        if any(n in words for n in names):
            return param.name
    return ""


def parse(command, command_name: str, args: list[str]) -> dict:
    """Check ``args`` as the command would; the parameters by name, or FormError next to a field."""
    try:
        ctx = command.make_context(command_name, list(args), resilient_parsing=False)
    except click.BadParameter as exc:
        name = exc.param.name if exc.param is not None else ""
        raise FormError({name: exc.format_message()}) from None
    except click.UsageError as exc:
        raise FormError({_field_of(command, exc.format_message()): exc.format_message()}) from None
    return ctx.params


def recipe_of(command, command_name: str, args: list[str]) -> dict:
    """The recipe the command runs for ``args``: what it prints for ``--print-recipe``."""
    import tomllib

    parse(command, command_name, args)
    with _capture_lock:
        buffer = io.StringIO()
        try:
            with contextlib.redirect_stdout(buffer):
                command.main(with_options(args, "--print-recipe"), prog_name=f"dcmpipe {command_name}",
                             standalone_mode=False)
        except click.UsageError as exc:
            raise FormError({_field_of(command, exc.format_message()): exc.format_message()}) from None
    return tomllib.loads(buffer.getvalue())


# -- checks of the folders, with the message shown next to the field ----------


def resolve(text: str) -> Path:
    return Path(os.path.expandvars(text)).expanduser().resolve()


def check_folders(form: list[dict], values: dict) -> dict:
    """Resolve the folder fields and check them; return the values with absolute paths.

    Raises FormError naming each bad field: a source that is missing, not a
    folder or unreadable; a destination that is not a folder or cannot be
    written; a destination inside the source of a recursive run.
    """
    errors: dict[str, str] = {}
    out = dict(values)
    sources, outputs = [], []
    for f in form:
        if f["kind"] != "folder":
            continue
        text = str(values.get(f["name"]) or "").strip()
        if not text:
            if f["output"]:
                out[f["name"]] = ""
                continue
            errors[f["name"]] = "choose a folder"
            continue
        path = resolve(text)
        out[f["name"]] = str(path)
        if not f["output"]:
            if not path.exists():
                errors[f["name"]] = f"{path} does not exist"
            elif not path.is_dir():
                errors[f["name"]] = f"{path} is not a folder"
            elif not os.access(path, os.R_OK | os.X_OK):
                errors[f["name"]] = f"{path} cannot be read (permissions)"
            else:
                sources.append(path)
            continue
        if path.exists() and not path.is_dir():
            errors[f["name"]] = f"{path} exists and is not a folder"
            continue
        existing = path
        while not existing.exists():
            existing = existing.parent
        if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
            errors[f["name"]] = f"{existing} cannot be written (permissions)"
            continue
        outputs.append((f["name"], path))
    if values.get("recurse"):
        for name, path in outputs:
            for source in sources:
                if path == source or source in path.parents:
                    errors[name] = f"{path} is inside the source folder {source}, which is read recursively (-R)"
    if errors:
        raise FormError(errors)
    return out


def browse(text: str) -> dict:
    """The sub-folders of a folder, for the folder picker (the nearest existing folder if missing)."""
    path = resolve(text) if text.strip() else Path.home().resolve()
    while not path.is_dir() and path != path.parent:
        path = path.parent
    folders, files, error = [], 0, ""
    try:
        with os.scandir(path) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                try:
                    if entry.is_dir():
                        folders.append(entry.name)
                    else:
                        files += 1
                except OSError:
                    continue
    except OSError as exc:
        error = f"cannot list {path}: {exc.strerror}"
    folders.sort(key=str.lower)
    parent = str(path.parent) if path.parent != path else ""
    return {"path": str(path), "parent": parent, "folders": folders[:2000], "files": files, "error": error}
