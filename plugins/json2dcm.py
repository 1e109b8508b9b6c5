"""json2dcm: DICOM JSON (PS3.18 Annex F) back to DICOM files, the way back from dcm2json.

Steps (see docs/plugins/json2dcm.md):

* read ``dicom-json``: each ``.json`` file found becomes a DICOM item (its
  InlineBinary and file BulkDataURIs loaded), so any later step sees DICOM;
* export ``json2dcm``: writes each item's DICOM bytes to DESTINATION/NAME.dcm.

``dcmpipe json2dcm [options] jsonfile-in dcmfile-out`` takes DCMTK 3.7.0's
json2dcm command line.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import click

from dcmpipe import Exporter, Item, Reader, hookimpl, option

DESCRIPTION = "Convert JSON document to DICOM file or data set"
SYNTAXES = {"same": None, "little": "1.2.840.10008.1.2.1", "big": "1.2.840.10008.1.2.2",
            "implicit": "1.2.840.10008.1.2", "deflated": "1.2.840.10008.1.2.1.99"}


@dataclass(frozen=True)
class DicomJsonOptions:
    path: list[Path] = option(help="JSON files or folders of them (relative to the recipe's folder)")
    recursive: bool = option(False, help="descend into subfolders")
    pattern: str = option("*.json", help="file names to read (glob pattern)")
    bulk_dirs: list[Path] = option(factory=list, help="folders BulkDataURIs may point into (+Bd); none: refused")
    ignore_bulk: bool = option(False, help="leave values given by BulkDataURI empty (-Bu)")
    ignore_meta: bool = option(False, help="ignore file meta information in the JSON (-f)")
    transfer_syntax: Literal["same", "little", "big", "implicit", "deflated"] = option(
        "same", help="transfer syntax of the DICOM written: same as the JSON's meta information, or "
        "explicit little / big endian, implicit little endian, deflated (+t= +te +tb +ti +td)")


class DicomJson(Reader):
    """DICOM JSON files, each turned into a DICOM item (InlineBinary and file BulkDataURIs loaded)."""

    id = "dicom-json"
    Options = DicomJsonOptions

    def read(self):
        import fnmatch

        from ._dcm2json_encode import BulkLoader, EncodeError, encode, read_json_file

        bulk = BulkLoader([str(p) for p in self.options.bulk_dirs], self.options.ignore_bulk)
        found = []
        for root in self.options.path:
            if root.is_dir():
                for folder, dirs, files in os.walk(root):
                    dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if self.options.recursive else []
                    for name in sorted(files):
                        if not name.startswith(".") and fnmatch.fnmatch(name, self.options.pattern):
                            path = Path(folder) / name
                            found.append((path, os.path.relpath(path, root)))
            else:
                found.append((root, root.name))
        self.context.total = len(found)
        for path, relpath in found:
            stem = relpath[:-5] if relpath.endswith(".json") else relpath
            item = Item(extra={"relpath": stem, "label": str(path), "json": str(path)})
            try:
                item.data = encode(read_json_file(path), read_meta=not self.options.ignore_meta,
                                   transfer_syntax=SYNTAXES[self.options.transfer_syntax], bulk=bulk)
            except EncodeError as exc:
                item.status, item.reason = "failed", str(exc)
            yield item


@dataclass(frozen=True)
class Json2dcmOptions:
    extension: str = option(".dcm", help="file name extension of the DICOM files ('' for none)")


class Json2dcm(Exporter):
    """Write each item's DICOM data (from the dicom-json reader) to DESTINATION/NAME + '.dcm'."""

    id = "json2dcm"
    Options = Json2dcmOptions

    def _target(self, item, destination) -> Path:
        name = item.name if item.name is not None else item.extra.get("relpath")
        if name is None:
            raise ValueError("the item has no name: add a name step")
        if destination is None:
            source = item.extra.get("json")
            if source is None:
                raise ValueError("no destination: add a route step")
            return Path(source).with_suffix(self.options.extension)
        return Path(destination) / (name + self.options.extension)

    def describe(self, item, destination):
        return f"json2dcm: {item} -> {self._target(item, destination)}"

    def export(self, item, destination):
        from dcmpipe.safefile import write_atomic

        target = self._target(item, destination)
        data = item.data if item.data is not None else item.source.read_bytes()
        write_atomic(target, data)
        return [target]


@hookimpl
def dcmpipe_readers():
    return [DicomJson]


@hookimpl
def dcmpipe_exporters():
    return [Json2dcm]


# -- the command --------------------------------------------------------------------------


def _groups():
    from ._dcm2json_cli import GENERAL, Group, Opt

    o = Opt
    return [
        Group("general options:", [("", GENERAL)]),
        Group("input options:", [("input file format:", [
            o("--read-meta-info", "+f", "read meta information if present (default)"),
            o("--ignore-meta-info", "-f", "ignore file meta information"),
        ])]),
        Group("processing options:", [
            ("unique identifiers:", [
                o("--generate-new-uids", "+Ug", "generate new Study/Series/SOP Instance UID"),
                o("--dont-overwrite-uids", "-Uo", "do not overwrite existing UIDs (default)"),
                o("--overwrite-uids", "+Uo", "overwrite existing UIDs"),
            ]),
            ("bulkdata URI handling:", [
                o("--parse-bulkdata-uri", "+Bu", "parse Bulkdata URIs (default)"),
                o("--ignore-bulkdata-uri", "-Bu", "ignore Bulkdata URIs"),
                o("--add-bulkdata-dir", "+Bd", "add d to list of permitted bulk data sources", 1,
                  "[d]irectory: string"),
            ]),
            ("handling of arrays with multiple data sets:", [
                o("--array-reject", "-ar", "reject multiple data sets (default)"),
                o("--array-select", "+as", "select data set n from array", 1, "[n]umber: integer"),
            ]),
        ]),
        Group("output options:", [
            ("output file format:", [
                o("--write-file", "+F", "write file format (default)"),
                o("--write-dataset", "-F", "write data set without file meta information"),
                o("--update-meta-info", "+Fu", "update particular file meta information"),
            ]),
            ("output transfer syntax:", [
                o("--write-xfer-same", "+t=", "write with same TS as input (default)"),
                o("--write-xfer-little", "+te", "write with explicit VR little endian TS"),
                o("--write-xfer-big", "+tb", "write with explicit VR big endian TS"),
                o("--write-xfer-implicit", "+ti", "write with implicit VR little endian TS"),
                o("--write-xfer-deflated", "+td", "write with deflated explicit VR little endian TS"),
            ]),
            ("error handling:", [
                o("--stop-on-error", "-E", "do not write if document is invalid (default)"),
                o("--ignore-errors", "+E", "attempt to write even if document is invalid"),
            ]),
            ("length encoding in sequences and items:", [
                o("--length-explicit", "+e", "write with explicit lengths (default)"),
                o("--length-undefined", "-e", "write with undefined lengths"),
            ]),
            ("charset handling:", [
                o("--charset-accept", "+c", "write with the given charset in JSON (default)"),
                o("--charset-replace", "-c", "replace the given charset in JSON with UTF-8"),
            ]),
            ("deflate compression level (only with --write-xfer-deflated):", [
                o("--compression-level", "+cl", "0=uncompressed, 1=fastest, 9=best compression", 1,
                  "[l]evel: integer (default: 6)"),
            ]),
        ]),
    ]


EXAMPLES = """examples:
  dcmpipe json2dcm image.json image.dcm
  dcmpipe json2dcm +Bd bulk image.json image.dcm     BulkDataURIs into bulk/ allowed
  dcmpipe json2dcm +ti -F image.json image.ds        raw data set, implicit VR
exit codes: 0 ok, 1 command line, 20 cannot read input, 40 cannot write output,
  65 invalid JSON content, 66 BulkDataURI not supported or not permitted"""


def convert(argv: list[str]) -> int:
    """Run ``json2dcm`` with DCMTK's arguments; returns the exit code."""
    from ._dcm2json_cli import (UsageError, arguments_line, expand_command_files, help_text, parse_args,
                                replace_atomic)
    from ._dcm2json_encode import (EXIT_SYNTAX, EXIT_WRITE, BulkLoader, EncodeError, encode, load_json,
                                   read_json_file)

    log = logging.getLogger("dcmpipe.json2dcm")
    groups = _groups()
    try:
        args = expand_command_files(argv)
        options, params = parse_args(args, groups, 2)
    except UsageError as exc:
        click.echo(f"json2dcm: error: {exc}", err=True)
        return EXIT_SYNTAX
    names = [n for n, _ in options]
    if not args or "--help" in names:
        click.echo(help_text("json2dcm", DESCRIPTION, "[options] jsonfile-in dcmfile-out", [
            ("jsonfile-in", 'JSON input filename to be converted\n("-" for stdin)'),
            ("dcmfile-out", "DICOM output filename"),
        ], groups, footer=EXAMPLES), nl=False)
        return 0
    if "--version" in names:
        from dcmpipe import __version__

        click.echo(f"dcmpipe json2dcm (DCMTK json2dcm 3.7.0 command line), dcmpipe {__version__}")
        return 0
    if "--arguments" in names:
        click.echo(arguments_line("json2dcm", args, groups), err=True)
    s = dict(read_meta=True, new_uids=False, overwrite=False, ignore_bulk=False, dirs=[], select=None,
             write_file=True, ts=None, ignore_errors=False, undefined=False, replace_charset=False, level=6)
    level = logging.WARNING
    try:
        for name, values in options:
            if name in ("--read-meta-info", "--ignore-meta-info"):
                s["read_meta"] = name == "--read-meta-info"
            elif name == "--generate-new-uids":
                s["new_uids"] = True
            elif name in ("--dont-overwrite-uids", "--overwrite-uids"):
                s["overwrite"] = name == "--overwrite-uids"
                s["uid_option"] = name
            elif name in ("--parse-bulkdata-uri", "--ignore-bulkdata-uri"):
                s["ignore_bulk"] = name == "--ignore-bulkdata-uri"
            elif name == "--add-bulkdata-dir":
                if not os.path.isdir(values[0]):
                    raise UsageError(f"--add-bulkdata-dir: {values[0]} is not a folder")
                s["dirs"].append(values[0])
            elif name == "--array-reject":
                s["select"] = None
            elif name == "--array-select":
                try:
                    s["select"] = int(values[0])
                    assert s["select"] >= 1
                except (ValueError, AssertionError):
                    raise UsageError("Invalid parameter value for option --array-select: must be >= 1") from None
            elif name in ("--write-file", "--update-meta-info"):
                s["write_file"] = True
                if name == "--update-meta-info":
                    s["update_meta"] = True
            elif name == "--write-dataset":
                s["write_file"] = False
            elif name.startswith("--write-xfer-"):
                s["ts"] = SYNTAXES[name[len("--write-xfer-"):]]
            elif name in ("--stop-on-error", "--ignore-errors"):
                s["ignore_errors"] = name == "--ignore-errors"
            elif name in ("--length-explicit", "--length-undefined"):
                s["undefined"] = name == "--length-undefined"
            elif name in ("--charset-accept", "--charset-replace"):
                s["replace_charset"] = name == "--charset-replace"
            elif name == "--compression-level":
                try:
                    s["level"] = int(values[0])
                    assert 0 <= s["level"] <= 9
                except (ValueError, AssertionError):
                    raise UsageError("Invalid parameter value for option --compression-level: 0..9") from None
                s["level_option"] = True
            elif name in ("--quiet", "--verbose", "--debug", "--log-level"):
                level = {"--quiet": logging.CRITICAL, "--verbose": logging.INFO, "--debug": logging.DEBUG}.get(
                    name, {"fatal": 50, "error": 40, "warn": 30, "info": 20, "debug": 10, "trace": 10}.get(
                        values[0] if values else "", -1))
                if level == -1:
                    raise UsageError("Invalid log level for --log-level option")
        if "uid_option" in s and not s["new_uids"]:
            raise UsageError(f"{s['uid_option']} only allowed with --generate-new-uids")
        if s.get("update_meta") and not s["write_file"]:
            raise UsageError("--update-meta-info not allowed with --write-dataset")
        if s.get("level_option") and s["ts"] != SYNTAXES["deflated"]:
            raise UsageError("--compression-level only allowed with --write-xfer-deflated")
        if len(params) < 2:
            raise UsageError("Missing parameter " + ("jsonfile-in" if not params else "dcmfile-out"))
    except UsageError as exc:
        click.echo(f"json2dcm: error: {exc}", err=True)
        return EXIT_SYNTAX
    logging.getLogger("dcmpipe").setLevel(level)
    source, target = params
    try:
        if source == "-":
            document = load_json(sys.stdin.buffer.read().decode("utf-8", "replace"))
        else:
            document = read_json_file(Path(source))
        data = encode(document, read_meta=s["read_meta"], transfer_syntax=s["ts"], write_file=s["write_file"],
                      bulk=BulkLoader(s["dirs"], s["ignore_bulk"]), undefined_lengths=s["undefined"],
                      replace_charset=s["replace_charset"], new_uids=s["new_uids"], overwrite_uids=s["overwrite"],
                      ignore_errors=s["ignore_errors"], compression=s["level"], select=s["select"], log=log)
    except EncodeError as exc:
        log.error("json2dcm: %s: %s", source, exc)
        return exc.code
    try:
        if target == "-":
            sys.stdout.buffer.write(data)
            sys.stdout.flush()
        else:
            replace_atomic(Path(target), data)
    except OSError as exc:
        log.error("json2dcm: cannot write output file %s: %s", target, exc.strerror or exc)
        return EXIT_WRITE
    return 0


@click.command("json2dcm", context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                                            "allow_interspersed_args": False, "help_option_names": []},
               add_help_option=False, help="Convert DICOM JSON to a DICOM file, with DCMTK's json2dcm command "
               "line (dcmpipe json2dcm -h).", short_help="DICOM JSON to DICOM like DCMTK's json2dcm")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def json2dcm_command(args):
    sys.exit(convert(list(args)))


@hookimpl
def dcmpipe_register_commands(cli):
    cli.add_command(json2dcm_command)
