"""DCMTK's command line for ``dcmpipe dcm2json``: ``+``/``-`` options, ``@file``, exit codes.

DCMTK's OFCommandLine rules: an argument starting with ``+`` or ``-``
(except ``-`` alone) is an option, matched exactly by its short or long
name; options may appear anywhere; of mutually exclusive options the
rightmost wins; ``@file`` is replaced by the words of that file (quotes
group words; a command file cannot name another).  click cannot express
``+b`` beside ``-b`` or ``-t=``, so this module parses the arguments itself.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from ._dcm2json_write import EXIT_SYNTAX


class UsageError(Exception):
    code = EXIT_SYNTAX


@dataclass(frozen=True)
class Opt:
    long: str
    short: str
    help: str
    values: int = 0
    metavar: str = ""


@dataclass
class Group:
    title: str
    subgroups: list = field(default_factory=list)  # (subtitle or "", [Opt])


def _o(long, short, help, values=0, metavar=""):
    return Opt(long, short, help, values, metavar)


GENERAL = [
    _o("--help", "-h", "print this help text and exit"),
    _o("--version", "", "print version information and exit"),
    _o("--arguments", "", "print expanded command line arguments"),
    _o("--quiet", "-q", "quiet mode, print no warnings and errors"),
    _o("--verbose", "-v", "verbose mode, print processing details"),
    _o("--debug", "-d", "debug mode, print debug information"),
    _o("--log-level", "-ll", "(fatal, error, warn, info, debug, trace)\nuse level l for the logger", 1,
       "[l]evel: string constant"),
    _o("--log-config", "-lc", "use config file f for the logger\n(a Python logging configuration file)", 1,
       "[f]ilename: string"),
]


def dcm2json_groups() -> list[Group]:
    return [
        Group("general options:", [("", GENERAL)]),
        Group("input options:", [
            ("input file format:", [
                _o("--read-file", "+f", "read file format or data set (default)"),
                _o("--read-file-only", "+fo", "read file format only"),
                _o("--read-dataset", "-f", "read data set without file meta information"),
            ]),
            ("input transfer syntax:", [
                _o("--read-xfer-auto", "-t=", "use TS recognition (default)"),
                _o("--read-xfer-detect", "-td", "ignore TS specified in the file meta header"),
                _o("--read-xfer-little", "-te", "read with explicit VR little endian TS"),
                _o("--read-xfer-big", "-tb", "read with explicit VR big endian TS"),
                _o("--read-xfer-implicit", "-ti", "read with implicit VR little endian TS"),
            ]),
        ]),
        Group("processing options:", [
            ("encoding of infinity and not-a-number:", [
                _o("--encode-strict", "-es", "report error for 'inf' and 'nan' (default)"),
                _o("--encode-extended", "-ee", "permit 'inf' and 'nan' in JSON numbers"),
            ]),
            ("encoding of IS and DS (integer/decimal string) elements:", [
                _o("--is-ds-auto", "-ia", "encode as number if valid, as string\notherwise (default)"),
                _o("--is-ds-num", "-in", "always encode as number, fail if invalid"),
                _o("--is-ds-string", "-is", "always encode as string"),
            ]),
            ("bulk data URI options:", [
                _o("--bulk-disabled", "-b", "write everything as inline binary (default)"),
                _o("--bulk-enabled", "+b", "write large attributes as bulk data"),
                _o("--bulk-size", "+bz", "use bulk data for attributes >= s kBytes", 1, "[s]ize: integer (default: 1)"),
                _o("--bulk-uri-prefix", "+bp", "use prefix u when generating bulk data URIs\n(default: file URI)", 1,
                   "[u]ri prefix: string"),
                _o("--bulk-dir", "+bd", "write bulk data files to d (default: '.')", 1, "[d]irectory: string"),
                _o("--bulk-subdir", "+bs", "create subdirectory for each SOP instance\n(default: no subdirectory)"),
            ]),
        ]),
        Group("output options:", [
            ("output format:", [
                _o("--formatted-code", "+fc", "enable whitespace formatting (default)"),
                _o("--compact-code", "-fc", "print only required characters"),
                _o("--write-meta", "+m", "write data set with meta information\n"
                   "(warning: not conforming to the DICOM standard)"),
            ]),
        ]),
        Group("dcmpipe options (a folder as dcmfile-in: a recipe over every file in it):", [
            ("", [
                _o("--jobs", "-j", "processes sharing the work (default: cores)", 1, "[n]umber: integer"),
                _o("--print-recipe", "", "print the recipe a folder conversion runs, and exit"),
                _o("--dry-run", "", "say what a folder conversion would write; write nothing"),
            ]),
        ]),
    ]


def expand_command_files(argv: list[str]) -> list[str]:
    """Replace every ``@file`` by the words of the file, as DCMTK does."""
    out: list[str] = []
    for arg in argv:
        if arg.startswith("@") and len(arg) > 1:
            try:
                with open(arg[1:], encoding="utf-8", errors="surrogateescape") as f:
                    text = f.read()
            except OSError as exc:
                raise UsageError(f"cannot read command file {arg[1:]}: {exc.strerror}") from None
            lexer = shlex.shlex(text, posix=True)
            lexer.whitespace_split = True
            lexer.commenters = ""
            lexer.escape = ""
            try:
                words = list(lexer)
            except ValueError as exc:
                raise UsageError(f"command file {arg[1:]}: {exc}") from None
            if any(w.startswith("@") and len(w) > 1 for w in words):
                raise UsageError(f"command file {arg[1:]} names another command file; that is not allowed")
            out.extend(words)
        else:
            out.append(arg)
    return out


def parse_args(argv: list[str], groups: list[Group], max_params: int):
    """(options as [(long name, [values])] in order, parameters)."""
    table: dict[str, Opt] = {}
    for group in groups:
        for _title, opts in group.subgroups:
            for opt in opts:
                table[opt.long] = opt
                if opt.short:
                    table[opt.short] = opt
    options: list[tuple[str, list[str]]] = []
    params: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if len(arg) > 1 and arg[0] in "+-" and not _is_number(arg):
            opt = table.get(arg)
            if opt is None:
                raise UsageError(f"Unknown option {arg}")
            values = argv[i + 1:i + 1 + opt.values]
            if len(values) < opt.values:
                raise UsageError(f"Missing value for option {opt.long}")
            options.append((opt.long, values))
            i += 1 + opt.values
        else:
            params.append(arg)
            i += 1
    if len(params) > max_params:
        raise UsageError("Too many parameters")
    return options, params


def arguments_line(prog: str, args: list[str], groups: list[Group]) -> str:
    """DCMTK's --arguments line: the arguments after @file expansion, options by their long names."""
    names = {}
    for group in groups:
        for _title, opts in group.subgroups:
            for opt in opts:
                names[opt.long] = names[opt.short or opt.long] = opt.long
    shown = [names.get(a, a) for a in args]
    return f"I: calling '{prog}' with {len(args)} arguments: " + " ".join(f"'{a}'" for a in shown) + " "


def _is_number(arg: str) -> bool:
    try:
        float(arg)
        return True
    except ValueError:
        return False


def help_text(prog: str, description: str, usage: str, params: list[tuple[str, str]], groups: list[Group],
              footer: str = "") -> str:
    lines = [f"{prog}: {description}", f"usage: {prog} {usage}", "", "parameters:"]
    for name, text in params:
        first, *rest = text.split("\n")
        lines.append(f"  {name:<29}{first}")
        lines += [" " * 31 + r for r in rest]
    for group in groups:
        lines.append(group.title)
        for title, opts in group.subgroups:
            pad = "  "
            if title:
                lines.append("  " + title)
                pad = "    "
            for opt in opts:
                short = f"{opt.short:<5}" if opt.short else " " * 5
                head = f"{pad}{short}{opt.long}"
                texts = ([opt.metavar] if opt.metavar else []) + opt.help.split("\n")
                if len(head) > 30:
                    lines.append(head)
                    lines += [" " * 31 + t for t in texts]
                else:
                    lines.append(f"{head:<31}{texts[0]}")
                    lines += [" " * 31 + t for t in texts[1:]]
    if footer:
        lines += ["", footer]
    return "\n".join(lines) + "\n"


def replace_atomic(target, payload: bytes) -> None:
    """Write ``payload`` to ``target`` through a fsynced temporary file renamed over it.

    The commands replace an existing output file, as DCMTK's do (the user named
    it); a reader never sees half a file.
    """
    import os
    from pathlib import Path

    target = Path(target)
    tmp = target.parent / f".{target.name}.{os.getpid()}.dcmpipe-part"
    try:
        with open(tmp, "xb") as out:
            out.write(payload)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)
