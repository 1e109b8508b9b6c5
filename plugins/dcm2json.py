"""dcm2json: DICOM to the DICOM JSON Model, as DCMTK's dcm2json writes it.

Steps (see docs/plugins/dcm2json.md):

* export ``dcm2json``: one ``.json`` file per item, named by the recipe's
  name step or after the input file.

The ``dcmpipe dcm2json`` command takes DCMTK's command line (``+``/``-``
options, ``@file`` command files, the manual's exit codes) and converts
one file; a folder as input runs the export over every file in it.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import click

from dcmpipe import Exporter, hookimpl, option

DESCRIPTION = "Convert DICOM file and data set to JSON"
TOOL_VERSION = "dcmpipe dcm2json (DCMTK dcm2json 3.7.0 command line)"


@dataclass(frozen=True)
class Dcm2jsonOptions:
    compact: bool = option(False, help="print only required characters (-fc); default: formatted (+fc)")
    write_meta: bool = option(False, help="also write the file meta information (+m; not standard DICOM JSON)")
    extended: bool = option(False, help="permit inf and nan in JSON numbers (-ee); default: refuse them (-es)")
    numbers: Literal["auto", "number", "string"] = option(
        "auto", help="IS and DS as number if valid else string (auto, -ia), always number (-in), always string (-is)")
    bulk: bool = option(False, help="write large values as bulk data files with a BulkDataURI (+b)")
    bulk_size: int = option(1, help="bulk data for values of at least this many KB (+bz)")
    bulk_prefix: str = option("", help="prefix of the BulkDataURIs (+bp); default: file URI of the bulk folder")
    bulk_dir: Path | None = option(None, help="folder for bulk data files (+bd); default: beside each JSON file")
    bulk_subdir: bool = option(False, help="one bulk data subfolder per SOP Instance UID (+bs)")
    extension: str = option(".json", help="file name extension of the JSON files")
    fsync_each: bool = option(False, help="flush every JSON file to disk as it is written (slow); default: "
                              "once, when the step's process finishes")

    def __post_init__(self):
        if self.bulk_size < 0:
            raise ValueError("option 'bulk_size': give 0 or more (KB)")
        if not self.extension.startswith(".") or "/" in self.extension:
            raise ValueError("option 'extension': give a file name extension such as '.json'")


def json_options(opts: Dcm2jsonOptions, bulk_dir: str):
    from ._dcm2json_write import JsonOptions, file_uri

    prefix = opts.bulk_prefix
    if opts.bulk and not prefix:
        os.makedirs(bulk_dir, exist_ok=True)
        prefix = file_uri(bulk_dir)
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return JsonOptions(pretty=not opts.compact, meta=opts.write_meta, extended=opts.extended, numbers=opts.numbers,
                       bulk_size=opts.bulk_size if opts.bulk else -1, bulk_prefix=prefix, bulk_dir=bulk_dir,
                       bulk_subdir=opts.bulk_subdir)


class Dcm2json(Exporter):
    """One DICOM JSON file per item (DCMTK dcm2json's output), named by the name step or after the input."""

    id = "dcm2json"
    Options = Dcm2jsonOptions
    tags = ()
    parallel = True

    def __init__(self, options, context):
        super().__init__(options, context)
        self.unsynced = False

    def close(self) -> None:
        # JSON files are derived data: one flush at the end costs far less than one fsync per file
        if self.unsynced:
            os.sync()
            self.unsynced = False

    def _target(self, item, destination) -> Path:
        ext = self.options.extension
        if item.name is not None:
            name = item.name
        elif "relpath" in item.extra:
            name = item.extra["relpath"]
        elif item.source is not None:
            name = item.source.name
        else:
            raise ValueError("the item has no file name: add a name step")
        if destination is None:
            if item.source is None:
                raise ValueError("no destination: add a route step")
            return item.source.parent / (item.source.name + ext)
        return Path(destination) / (name + ext)

    def describe(self, item, destination):
        return f"dcm2json: {item} -> {self._target(item, destination)}"

    def export(self, item, destination):
        from dcmpipe.safefile import write_atomic

        from ._dcm2json_parse import ParseError, parse
        from ._dcm2json_write import ConvertError, to_json

        target = self._target(item, destination)
        data = item.source.read_bytes() if item.source is not None else (item.data or b"")
        try:
            parsed = parse(data)
        except ParseError as exc:
            raise ValueError(f"cannot read: {exc}") from None
        bulk_dir = str(self.options.bulk_dir or target.parent)
        try:
            text, _bulk = to_json(parsed, json_options(self.options, bulk_dir))
        except ConvertError as exc:
            raise ValueError(str(exc)) from None
        write_atomic(target, text.encode("utf-8", "surrogateescape"), fsync=self.options.fsync_each)
        self.unsynced = not self.options.fsync_each
        return [target]


@hookimpl
def dcmpipe_exporters():
    return [Dcm2json]


# -- the command ------------------------------------------------------------------------------


def convert(argv: list[str]) -> int:
    """Run ``dcm2json`` with DCMTK's arguments; returns the exit code."""
    from ._dcm2json_cli import (UsageError, arguments_line, dcm2json_groups, expand_command_files, help_text,
                                parse_args, replace_atomic)
    from ._dcm2json_write import EXIT_NO_INPUT, EXIT_READ, EXIT_SYNTAX, EXIT_WRITE

    log = logging.getLogger("dcmpipe.dcm2json")
    groups = dcm2json_groups()
    usage = help_text("dcm2json", DESCRIPTION, "[options] dcmfile-in [jsonfile-out]", [
        ("dcmfile-in", 'DICOM input filename to be converted\n("-" for stdin; a folder: every file in it)'),
        ("jsonfile-out", "JSON output filename (default: stdout;\na folder when dcmfile-in is a folder)"),
    ], groups, footer=EXAMPLES)
    try:
        args = expand_command_files(argv)
        options, params = parse_args(args, groups, 2)
    except UsageError as exc:
        click.echo(f"dcm2json: error: {exc}", err=True)
        return EXIT_SYNTAX
    names = [name for name, _ in options]
    if not args or "--help" in names:
        click.echo(usage, nl=False)
        return 0
    if "--version" in names:
        from dcmpipe import __version__

        click.echo(f"{TOOL_VERSION}, dcmpipe {__version__}")
        return 0
    if "--arguments" in names:
        click.echo(arguments_line("dcm2json", args, groups), err=True)
    try:
        setup = _settings(options)
    except UsageError as exc:
        click.echo(f"dcm2json: error: {exc}", err=True)
        return EXIT_SYNTAX
    _configure_logging(setup, log)
    if not params:
        click.echo("dcm2json: error: Missing parameter dcmfile-in", err=True)
        return EXIT_SYNTAX
    source = params[0]
    target = params[1] if len(params) > 1 else None
    if not source:
        log.error("dcm2json: invalid filename: <empty string>")
        return EXIT_NO_INPUT
    if source != "-" and os.path.isdir(source):
        return _convert_folder(source, target, setup)
    from ._dcm2json_parse import ParseError, parse
    from ._dcm2json_write import ConvertError, to_json

    try:
        data = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    except OSError as exc:
        log.error("dcm2json: error (%s) reading file: %s", exc.strerror or exc, source)
        return EXIT_READ
    try:
        log.info("reading DICOM file: %s", source)
        parsed = parse(data, setup["read_mode"], setup["forced"], setup["detect"])
        log.info("%s, transfer syntax %s, %d elements", "file format" if parsed.has_meta else "data set",
                 parsed.transfer_syntax, len(parsed.dataset))
    except ParseError as exc:
        log.error("dcm2json: error (%s) reading file: %s", exc, source)
        return EXIT_READ
    opts = setup["options"]
    bulk_dir = str(opts.bulk_dir or ".")
    try:
        text, _bulk = to_json(parsed, json_options(opts, bulk_dir), read_dataset=setup["read_mode"] == "dataset")
    except ConvertError as exc:
        log.error("dcm2json: %s: %s", exc, source)
        return exc.code
    except OSError as exc:
        log.error("dcm2json: cannot create bulk data folder %s: %s", bulk_dir, exc.strerror or exc)
        return EXIT_WRITE
    payload = text.encode("utf-8", "surrogateescape")
    log.info("writing %d bytes of JSON to %s", len(payload), "standard output" if target in (None, "-") else target)
    if target is None or target == "-":
        try:
            sys.stdout.buffer.write(payload)
            sys.stdout.flush()
        except OSError as exc:
            log.error("dcm2json: cannot write to standard output: %s", exc.strerror or exc)
            return EXIT_WRITE
        return 0
    try:
        # DCMTK replaces an existing output file; so do we, but atomically (never half a file).
        replace_atomic(Path(target), payload)
    except OSError as exc:
        log.error("dcm2json: cannot write output file %s: %s", target, exc.strerror or exc)
        return EXIT_WRITE
    return 0


def _settings(options) -> dict:
    from ._dcm2json_cli import UsageError

    s = {"read_mode": "auto", "forced": None, "detect": False, "level": logging.WARNING, "log_config": None,
         "jobs": None, "print_recipe": False, "dry_run": False}
    o = dict(compact=False, write_meta=False, extended=False, numbers="auto", bulk=False, bulk_size=1,
             bulk_prefix="", bulk_dir=None, bulk_subdir=False)
    ts = {"--read-xfer-little": "1.2.840.10008.1.2.1", "--read-xfer-big": "1.2.840.10008.1.2.2",
          "--read-xfer-implicit": "1.2.840.10008.1.2"}
    levels = {"fatal": logging.CRITICAL, "error": logging.ERROR, "warn": logging.WARNING, "info": logging.INFO,
              "debug": logging.DEBUG, "trace": logging.DEBUG}
    later = []
    for name, values in options:
        if name in ("--read-file", "--read-file-only", "--read-dataset"):
            s["read_mode"] = {"--read-file": "auto", "--read-file-only": "file", "--read-dataset": "dataset"}[name]
        elif name == "--read-xfer-auto":
            s["forced"], s["detect"] = None, False
        elif name == "--read-xfer-detect":
            s["detect"] = True
        elif name in ts:
            s["forced"] = ts[name]
            later.append((name, "--read-dataset", lambda: s["read_mode"] == "dataset"))
        elif name in ("--encode-strict", "--encode-extended"):
            o["extended"] = name == "--encode-extended"
        elif name in ("--is-ds-auto", "--is-ds-num", "--is-ds-string"):
            o["numbers"] = {"--is-ds-auto": "auto", "--is-ds-num": "number", "--is-ds-string": "string"}[name]
        elif name in ("--bulk-disabled", "--bulk-enabled"):
            o["bulk"] = name == "--bulk-enabled"
        elif name == "--bulk-size":
            try:
                o["bulk_size"] = int(values[0])
            except ValueError:
                raise UsageError(f"Invalid parameter value for option --bulk-size: {values[0]!r} is not an integer")
            if o["bulk_size"] < 0:
                raise UsageError("Invalid parameter value for option --bulk-size: must be >= 0")
            later.append((name, "--bulk-enabled", lambda: o["bulk"]))
        elif name == "--bulk-uri-prefix":
            o["bulk_prefix"] = values[0]
            later.append((name, "--bulk-enabled", lambda: o["bulk"]))
        elif name == "--bulk-dir":
            o["bulk_dir"] = Path(values[0])
            later.append((name, "--bulk-enabled", lambda: o["bulk"]))
        elif name == "--bulk-subdir":
            o["bulk_subdir"] = True
            later.append((name, "--bulk-enabled", lambda: o["bulk"]))
        elif name in ("--formatted-code", "--compact-code"):
            o["compact"] = name == "--compact-code"
        elif name == "--write-meta":
            o["write_meta"] = True
        elif name == "--quiet":
            s["level"] = logging.CRITICAL
        elif name == "--verbose":
            s["level"] = logging.INFO
        elif name == "--debug":
            s["level"] = logging.DEBUG
        elif name == "--log-level":
            if values[0] not in levels:
                raise UsageError("Invalid log level for --log-level option")
            s["level"] = levels[values[0]]
        elif name == "--log-config":
            s["log_config"] = values[0]
        elif name == "--jobs":
            try:
                s["jobs"] = int(values[0])
                assert s["jobs"] >= 1
            except (ValueError, AssertionError):
                raise UsageError(f"Invalid parameter value for option --jobs: {values[0]!r}") from None
        elif name == "--print-recipe":
            s["print_recipe"] = True
        elif name == "--dry-run":
            s["dry_run"] = True
    for name, needed, check in later:
        if not check():
            raise UsageError(f"{name} only allowed with {needed}")
    if o["write_meta"] and s["read_mode"] == "dataset":
        raise UsageError("--write-meta not allowed with --read-dataset")
    s["options"] = Dcm2jsonOptions(**o)
    return s


def _configure_logging(setup: dict, log: logging.Logger) -> None:
    if setup["log_config"]:
        from logging import config as logging_config

        try:
            logging_config.fileConfig(setup["log_config"], disable_existing_loggers=False)
        except Exception as exc:  # a bad configuration file: say so, keep the default
            click.echo(f"dcm2json: warning: cannot use log config {setup['log_config']}: {exc}", err=True)
            return
        host = logging.getLogger("dcmpipe")
        if all(type(h).__name__ == "_Handler" for h in host.handlers):
            # the file configures the root logger: let our messages reach it instead of the console
            host.handlers.clear()
            host.propagate = True
            host.setLevel(logging.NOTSET)
        return
    logger = logging.getLogger("dcmpipe")
    logger.setLevel(setup["level"])
    log.setLevel(setup["level"])


def _convert_folder(source: str, target: str | None, setup: dict) -> int:
    """A folder: the dcm2json export over every file in it, as a recipe."""
    from dcmpipe.cli import run_tool

    opts = setup["options"]
    export = {"export": "dcm2json"}
    defaults = Dcm2jsonOptions()
    for key in ("compact", "write_meta", "extended", "numbers", "bulk", "bulk_size", "bulk_prefix", "bulk_subdir"):
        if getattr(opts, key) != getattr(defaults, key):
            export[key] = getattr(opts, key)
    if opts.bulk_dir is not None:
        export["bulk_dir"] = str(Path(opts.bulk_dir).resolve())
    steps = [{"read": "files", "path": [str(Path(source).resolve())], "recursive": True, "settle": 0.0}]
    if target:
        steps.append({"route": "fixed", "dest": str(Path(target).resolve())})
    steps.append(export)
    data = {"recipe": {"name": "dcm2json"}, "step": steps}
    quiet = setup["level"] >= logging.ERROR
    try:
        run_tool(data, print_recipe=setup["print_recipe"], dry_run=setup["dry_run"], jobs=setup["jobs"], quiet=quiet,
                 verbose=setup["level"] <= logging.INFO)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


EXAMPLES = """examples:
  dcmpipe dcm2json image.dcm                 JSON on standard output
  dcmpipe dcm2json -fc +m image.dcm out.json compact, with the meta information
  dcmpipe dcm2json +b +bd bulk image.dcm     large values as files in bulk/
  dcmpipe dcm2json -f -ti raw.ds             a raw data set in implicit VR
  dcmpipe dcm2json -j 2 incoming json/       a folder tree, one .json per file
exit codes: 0 ok, 1 command line, 20 cannot read input, 21 no input,
  40 cannot write output, 80 cannot convert to Unicode, 81 cannot write valid JSON"""


@click.command("dcm2json", context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                                            "allow_interspersed_args": False, "help_option_names": []},
               add_help_option=False, help="Convert a DICOM file to JSON, with DCMTK's dcm2json command line "
               "(dcmpipe dcm2json -h).", short_help="DICOM to JSON like DCMTK's dcm2json")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def dcm2json_command(args):
    sys.exit(convert(list(args)))


@hookimpl
def dcmpipe_register_commands(cli):
    cli.add_command(dcm2json_command)
