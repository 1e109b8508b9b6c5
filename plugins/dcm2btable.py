"""dcm2btable: the b-value table (b and gradient direction per diffusion volume) of Enhanced MR files.

One line per diffusion volume, ``b g1 g2 g3``, from the standard MR Diffusion
Sequence (0018,9117); Philips' private b-factor (2001,1003) and direction
(2005,10B0-10B2) are the fallback, and a warning says when both exist and
disagree.  Volumes are the distinct combinations of the frames' non-spatial
Dimension Index Values (b-value and gradient indices), in index order.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import click

from dcmpipe import Exporter, hookimpl, option

from ._enhanced_common import files_recipe, require_enhanced, stem, without_path

log = logging.getLogger("dcmpipe")

B_VALUE, GRADIENT, DIFFUSION_SQ = 0x00189087, 0x00189089, 0x00189117
SPATIAL = (0x00209056, 0x00209057)  # Stack ID, In-Stack Position Number
PRIVATE_B_INDEX, PRIVATE_G_INDEX = 0x20051412, 0x20051413


@dataclass
class Volume:
    b: float
    direction: tuple  # (x, y, z) in the patient frame (LPS: x = RL, y = AP, z = FH)
    kind: str  # DIRECTIONAL, NONE (b0), ISOTROPIC (derived), or PRIVATE (from private tags only)
    frame: int  # 1-based frame number of the volume's first frame


def diffusion_volumes(path, tolerance: float = 1e-3) -> tuple[list, list]:
    """``(volumes, warnings)`` of an Enhanced MR file, one :class:`Volume` per diffusion volume."""
    from dcmpipe import enhanced as E

    ds = E.read_dataset(path, pixels=False, lean=True)
    if "PerFrameFunctionalGroupsSequence" not in ds:
        raise E.EnhancedError(f"{path}: lacks the Per-frame Functional Groups Sequence (5200,9230)")
    dims = E.dimensions(ds, path)
    div = E.frame_indices(ds, path, dims)
    nframes = div.shape[0]
    pointers = [d.pointer for d in dims]
    if B_VALUE in pointers or GRADIENT in pointers:
        cols = [k for k, p in enumerate(pointers) if p not in SPATIAL]
        keys = [tuple(row) for row in div[:, cols].tolist()]
    else:  # no diffusion dimensions: Philips' private b-value and gradient numbers
        keys = []
        for f in range(nframes):
            item = E.frame_item(ds, f, E.PRIVATE_FG, E.PHILIPS_MR_DD005)
            pair = tuple(E.element_value(E.find_private(item, t, E.PHILIPS_MR_DD005)) if item is not None else None
                         for t in (PRIVATE_B_INDEX, PRIVATE_G_INDEX))
            if None in pair:
                raise E.EnhancedError(f"{path}: not a diffusion series: no b-value dimension and frame {f + 1} "
                                      f"lacks Philips' b-value/gradient numbers (2005,1412/1413)")
            keys.append(pair)
        if len(set(keys)) < 2:
            raise E.EnhancedError(f"{path}: not a diffusion series: no Diffusion b-Value dimension and one "
                                  f"b-value/gradient number pair (2005,1412/1413) for all frames")
    first: dict = {}
    for f, key in enumerate(keys):
        first.setdefault(key, f)
    volumes, warnings = [], []
    for n, key in enumerate(sorted(first), 1):
        f = first[key]
        public = _public(E, ds, f)
        private = _private(E, ds, f)
        if public is None and private is None:
            raise E.EnhancedError(f"{path}: frame {f + 1} has neither an MR Diffusion Sequence (0018,9117) with a "
                                  f"b-value nor Philips' private b-factor (2001,1003)")
        if public is not None and private is not None and not _agree(public, private, tolerance):
            warnings.append(f"{path}: volume {n} (frame {f + 1}): MR Diffusion Sequence b={_num(public.b)} "
                            f"{_vec(public.direction)} and Philips private b={_num(private.b)} "
                            f"{_vec(private.direction)} disagree; the standard values are used")
        volume = public or private
        volume.frame = f + 1
        volumes.append(volume)
    return volumes, warnings


def _public(E, ds, f):
    item = E.frame_item(ds, f, DIFFUSION_SQ)
    if item is None:
        return None
    b = E.element_value(item.get(B_VALUE))
    if b is None:
        return None
    kind = str(E.element_value(item.get(0x00189075)) or "").upper() or "DIRECTIONAL"
    direction = (0.0, 0.0, 0.0)
    if kind == "DIRECTIONAL":
        found = E.find_nested(item, GRADIENT, None)
        value = E.element_value(found)
        if isinstance(value, tuple) and len(value) == 3:
            direction = tuple(float(v) for v in value)
    return Volume(b=float(b), direction=direction, kind=kind, frame=0)


def _private(E, ds, f):
    item = E.frame_item(ds, f, E.PRIVATE_FG, E.PHILIPS_MR_DD005)
    if item is None:
        return None
    b = E.element_value(E.find_private(item, 0x20011003, E.PHILIPS_DD001))
    if b is None:
        return None
    parts = [E.element_value(E.find_private(item, t, E.PHILIPS_MR_DD001)) for t in (0x200510B0, 0x200510B1, 0x200510B2)]
    direction = tuple(float(v) for v in parts) if None not in parts else (0.0, 0.0, 0.0)
    zero = all(abs(v) < 1e-9 for v in direction)
    kind = "NONE" if float(b) == 0 else "ISOTROPIC" if zero else "DIRECTIONAL"
    return Volume(b=float(b), direction=direction, kind=kind, frame=0)


def _agree(a: Volume, b: Volume, tolerance: float) -> bool:
    if abs(a.b - b.b) > max(0.5, tolerance * abs(a.b)):
        return False
    return all(abs(x - y) <= tolerance for x, y in zip(a.direction, b.direction))


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _vec(direction) -> str:
    return " ".join(f"{(v if abs(v) >= 5e-7 else 0.0):.6f}" for v in direction)


def table_lines(volumes, *, isotropic: bool = False, par_order: bool = False, philips_input: bool = False) -> list:
    """The table as text lines: ``b g1 g2 g3`` (or ``g1 g2 g3 b``, b0 first, for Philips' gradient input file)."""
    rows = [v for v in volumes if isotropic or v.kind != "ISOTROPIC"]
    if philips_input:
        rows = [v for v in rows if v.b == 0] + [v for v in rows if v.b != 0]
    lines = []
    for v in rows:
        x, y, z = v.direction
        vec = _vec((y, z, x) if par_order else (x, y, z))  # PAR: ap fh rl
        lines.append(f"{vec} {_num(v.b)}" if philips_input else f"{_num(v.b)} {vec}")
    return lines


@dataclass(frozen=True)
class BtableOptions:
    output: Path = option(Path("-"), help="'-' for standard output, a file for one input, or a folder for <name>.txt")
    isotropic: bool = option(False, help="include the derived isotropic (trace) volume")
    par_order: bool = option(False, help="vectors as PAR columns: ap fh rl (default: x y z = RL AP FH, patient LPS)")
    philips_input: bool = option(False, help="Philips gradient input file: 'x y z b' per line, b0 first")


class Btable(Exporter):
    """The b-value table of a diffusion Enhanced MR file: 'b g1 g2 g3' per volume."""

    id = "btable"
    Options = BtableOptions
    tags = ("SOPClassUID",)
    main_process = True

    def _target(self, item):
        out = self.options.output
        if str(out) == "-":
            return None
        return out if out.suffix in (".txt", ".bvec", ".tsv", ".btable") else out / f"{stem(item.source)}.txt"

    def describe(self, item, destination):
        return f"btable: {item} -> {self._target(item) or 'standard output'}"

    def export(self, item, destination):
        from dcmpipe.enhanced import EnhancedError
        from dcmpipe.safefile import write_atomic

        require_enhanced(item)
        try:
            volumes, warnings = diffusion_volumes(item.source)
        except EnhancedError as exc:
            raise without_path(exc, item.source) from None
        for text in warnings:
            log.warning("%s", text)
        o = self.options
        lines = table_lines(volumes, isotropic=o.isotropic, par_order=o.par_order, philips_input=o.philips_input)
        out = self._target(item)
        if out is None:
            if (self.context.total or 0) > 1:
                click.echo(f"# {item.source}")
            click.echo("\n".join(lines))
            return []
        write_atomic(out, ("\n".join(lines) + "\n").encode())
        return [out]


@hookimpl
def dcmpipe_exporters():
    return [Btable]


HELP = """Print the b-value table of diffusion Enhanced MR FILES: 'b g1 g2 g3' per volume.

\b
b and the gradient direction come from the MR Diffusion Sequence of each
volume's frames; Philips' private tags are the fallback, and a warning says
when both are present and disagree.  The direction is in the patient frame
(x = right-to-left, y = anterior-to-posterior, z = feet-to-head, as stored);
the b0 volume is '0 0 0 0'.  The isotropic (trace) image Philips derives is
left out unless --isotropic.

\b
Examples:
  dcmpipe dcm2btable DTI.dcm                   print the table
  dcmpipe dcm2btable DTI.dcm -o dti.txt        write it
  dcmpipe dcm2btable --par-order DTI.dcm       vectors as PAR columns (ap fh rl)
  dcmpipe dcm2btable --philips-input DTI.dcm   'x y z b', b0 first (dti_vectors_input.txt)
  dcmpipe dcm2btable *.dcm -o tables/          one <name>.txt per file
"""


@click.command("dcm2btable", help=HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("files", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--output", default="-", show_default=True, type=click.Path(),
              help="'-' = standard output; a .txt file; or a folder")
@click.option("--isotropic", is_flag=True, help="include the derived isotropic volume")
@click.option("--par-order", is_flag=True, help="vector components in PAR order: ap fh rl")
@click.option("--philips-input", is_flag=True, help="the scanner's gradient input format: 'x y z b', b0 first")
@click.option("-q", "--quiet", is_flag=True, help="only errors")
@click.option("-v", "--verbose", is_flag=True, help="say what happens to every file")
@click.option("--dry-run", is_flag=True, help="say what would be written; write nothing")
@click.option("--print-recipe", is_flag=True, help="print the equivalent TOML recipe and exit")
@click.option("--debug", is_flag=True, help="show tracebacks")
def dcm2btable_command(files, output, isotropic, par_order, philips_input, quiet, verbose, dry_run, print_recipe,
                       debug):
    from dcmpipe.cli import run_tool

    if len(files) > 1 and str(output) != "-" and Path(output).suffix in (".txt", ".bvec", ".tsv", ".btable"):
        raise click.UsageError(f"{len(files)} files need a folder as -o, not a file name")
    step = {"export": "btable"}
    if output != "-":
        step["output"] = str(output)
    for key, value in (("isotropic", isotropic), ("par_order", par_order), ("philips_input", philips_input)):
        if value:
            step[key] = True
    data = files_recipe("dcm2btable", files, step)
    run_tool(data, print_recipe=print_recipe, dry_run=dry_run, jobs=1, quiet=quiet,
             verbose=verbose, debug=debug)


@hookimpl
def dcmpipe_register_commands(cli):
    cli.add_command(dcm2btable_command)
