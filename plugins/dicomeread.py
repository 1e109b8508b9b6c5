"""dicomeread: Enhanced MR files as n-D arrays (.npy, or NIfTI with nibabel).

The reading is :func:`dcmpipe.dicomeread` (module ``dcmpipe.enhanced``); this
plugin offers it as an export step and as ``dcmpipe dicomeread FILE -o OUT``.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import click

from dcmpipe import DcmpipeError, Exporter, hookimpl, option

from ._enhanced_common import files_recipe, require_enhanced, target, without_path

SUFFIXES = {"npy": ".npy", "nifti": ".nii.gz"}
FILE_SUFFIXES = (".npy", ".nii", ".nii.gz")


@dataclass(frozen=True)
class DicomereadOptions:
    output: Path = option(help="file (.npy, .nii, .nii.gz) for one input, or a folder for <name>.npy/.nii.gz")
    format: Literal["npy", "nifti"] = option("npy", help="what to write into a folder output")
    order: list[str] = option(factory=list, help="frame axes to put first, by label or 0-based number")
    combine: list[str] = option(factory=list, help="frame axes (label or number >= 1) merged into the axis to their left")
    scaling: Literal["dv", "fp", "raw"] = option("dv", help="dv: stored*slope+intercept per frame; fp: Philips FP; raw: stored values")
    layout: Literal["numpy", "matlab"] = option("numpy", help="numpy: (axes..., rows, columns); matlab: (rows, columns, axes...)")
    keep_singletons: bool = option(False, help="keep frame axes with one position")
    fill: bool = option(False, help="leave missing frames (a partial last dynamic) NaN instead of failing")
    sidecar: bool = option(False, help="also write <output>.json: labels, coordinates, frame numbers")
    show: bool = option(True, help="print the dimensions and labels of every file read")


class Dicomeread(Exporter):
    """An Enhanced MR file as one n-D array with labelled axes (.npy or NIfTI)."""

    id = "dicomeread"
    Options = DicomereadOptions
    tags = ("SOPClassUID",)
    parallel = True

    def _target(self, item) -> Path:
        suffix = SUFFIXES[self.options.format]
        return target(item.source, self.options.output, FILE_SUFFIXES, suffix)

    def describe(self, item, destination):
        return f"dicomeread: {item} -> {self._target(item)}"

    def export(self, item, destination):
        from dcmpipe.enhanced import EnhancedError, dicomeread
        from dcmpipe.safefile import write_atomic

        require_enhanced(item)
        o = self.options
        out = self._target(item)
        try:
            array, info = dicomeread(item.source, order=o.order or None, combine=o.combine or None,
                                     scaling=o.scaling, layout=o.layout, keep_singletons=o.keep_singletons, fill=o.fill)
        except EnhancedError as exc:
            raise without_path(exc, item.source) from None
        name = str(out)
        if name.endswith((".nii", ".nii.gz")):
            data = nifti_bytes(array, info, item.source, gz=name.endswith(".gz"))
        else:
            import numpy as np

            buf = io.BytesIO()
            np.save(buf, array, allow_pickle=False)
            data = buf.getvalue()
        side = json.dumps(info.as_dict(), indent=1).encode() + b"\n" if o.sidecar else None
        written = [out]
        write_atomic(out, data)
        if side is not None:
            written.append(out.with_name(out.name + ".json"))
            write_atomic(written[-1], side)
        if o.show:
            click.echo(info.describe().replace(f"{info.path}:", f"{info.path} -> {out}:", 1))
        return written


def nifti_bytes(array, info, source, gz: bool) -> bytes:
    """The array as NIfTI-1: x = columns, y = rows, z = the slice axis (In-Stack Position), then the others."""
    import gzip

    import numpy as np

    try:
        import nibabel
    except ImportError:
        raise DcmpipeError("NIfTI output needs nibabel: pip install 'dcmpipe[nifti]'") from None
    labels = [a.label for a in info.axes]
    data = np.moveaxis(array, (0, 1), (-2, -1)) if info.layout == "matlab" else array
    n = len(labels)
    slice_axis = next((k for k, a in enumerate(info.axes) if "(0020,9057)" in a.pointers and len(a.pointers) == 1),
                      None)
    rest = [k for k in range(n) if k != slice_axis]
    axes_order = ([slice_axis] if slice_axis is not None else []) + rest
    # numpy (axes..., rows, columns) -> (columns, rows, slice, others...)
    data = np.transpose(data, (n + 1, n, *axes_order))
    if slice_axis is None:
        data = data[:, :, None, ...]
    affine = _affine(info, source, slice_axis)
    img = nibabel.Nifti1Image(np.ascontiguousarray(data), affine)
    img.header.set_xyzt_units("mm", "sec")
    raw = img.to_bytes()
    return gzip.compress(raw, compresslevel=6) if gz else raw


def _affine(info, source, slice_axis):
    """Voxel (column, row, slice) -> RAS mm, from the frames at the first position of the other axes."""
    import numpy as np

    from dcmpipe.enhanced import frame_item, read_dataset

    ds = read_dataset(source, pixels=False, lean=True)
    first = tuple(0 for _ in info.axes)
    f0 = int(info.frames[first]) - 1 if info.axes else 0

    def geometry(f):
        pos = frame_item(ds, f, 0x00209113)  # Plane Position Sequence
        ori = frame_item(ds, f, 0x00209116)  # Plane Orientation Sequence
        meas = frame_item(ds, f, 0x00289110)  # Pixel Measures Sequence
        if pos is None or ori is None or meas is None:
            return None
        return (np.array([float(v) for v in pos.ImagePositionPatient]),
                np.array([float(v) for v in ori.ImageOrientationPatient]),
                [float(v) for v in meas.PixelSpacing], float(getattr(meas, "SliceThickness", 1) or 1))

    g = geometry(max(f0, 0))
    if g is None:
        return np.eye(4)
    ipp, iop, (row_spacing, col_spacing), thickness = g
    row_dir, col_dir = iop[:3], iop[3:]
    slice_step = np.cross(row_dir, col_dir) * thickness
    if slice_axis is not None and len(info.axes[slice_axis]) > 1:
        second = list(first)
        second[slice_axis] = 1
        f1 = int(info.frames[tuple(second)]) - 1
        g1 = geometry(f1) if f1 >= 0 else None
        if g1 is not None:
            slice_step = g1[0] - ipp
    lps = np.eye(4)
    lps[:3, 0] = row_dir * col_spacing   # along a row = next column
    lps[:3, 1] = col_dir * row_spacing   # along a column = next row
    lps[:3, 2] = slice_step
    lps[:3, 3] = ipp
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


@hookimpl
def dcmpipe_exporters():
    return [Dicomeread]


# -- the `dcmpipe dicomeread` command --------------------------------------------------------

HELP = """Read Enhanced MR FILES into n-D arrays: one axis per dimension, then rows, columns.

\b
Each file's Dimension Index Sequence gives the axes (slice, dynamic, b-value
and direction, echo, label/control ...); frames are placed by their index
values, never by their order in the file.  Axes with one position are left
out; a grid with holes (DTI's b0, a field map's magnitude/phase) gets the two
axes that lack combinations merged into one.  The dimensions and their labels
are printed.  OUT is a .npy, .nii or .nii.gz file for one input, or a folder.

\b
Examples:
  dcmpipe dicomeread DTI.dcm -o dti.npy
  dcmpipe dicomeread bold.dcm -o bold.nii.gz               (needs nibabel)
  dcmpipe dicomeread asl.dcm -o asl.npy --order "Private Label Type"
  dcmpipe dicomeread fmap.dcm -o fmap.npy --combine 2 --noscale
  dcmpipe dicomeread *.dcm -o arrays/ --json               one .npy (+ .json) per file
"""


def dicomeread_recipe(files, output, fmt, order, combine, scaling, layout, keep_singletons, fill, sidecar) -> dict:
    step = {"export": "dicomeread", "output": str(output)}
    if fmt != "npy":
        step["format"] = fmt
    if order:
        step["order"] = list(order)
    if combine:
        step["combine"] = list(combine)
    if scaling != "dv":
        step["scaling"] = scaling
    if layout != "numpy":
        step["layout"] = layout
    for key, value in (("keep_singletons", keep_singletons), ("fill", fill), ("sidecar", sidecar)):
        if value:
            step[key] = True
    return files_recipe("dicomeread", files, step)


@click.command("dicomeread", help=HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("files", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(), help="output file (.npy/.nii/.nii.gz) or folder")
@click.option("--nifti", "fmt", is_flag=True, help="write .nii.gz into a folder output")
@click.option("--order", multiple=True, metavar="AXIS", help="put this frame axis first (label or number; repeat)")
@click.option("--combine", multiple=True, metavar="AXIS", help="merge this axis into the one to its left (repeat)")
@click.option("--noscale", is_flag=True, help="stored values, no rescaling (same as --scaling raw)")
@click.option("--scaling", type=click.Choice(["dv", "fp", "raw"]), default="dv", show_default=True,
              help="dv: displayed values; fp: Philips floating point; raw: stored values")
@click.option("--matlab", is_flag=True, help="MATLAB layout: rows, columns, then the frame axes")
@click.option("--keep-singletons", is_flag=True, help="keep axes with one position")
@click.option("--fill", is_flag=True, help="NaN for missing frames (a partial last dynamic) instead of an error")
@click.option("--json", "sidecar", is_flag=True, help="also write OUT.json with labels, coordinates, frame numbers")
@click.option("-q", "--quiet", is_flag=True, help="only errors")
@click.option("-v", "--verbose", is_flag=True, help="say what happens to every file")
@click.option("--dry-run", is_flag=True, help="say what would be written; write nothing")
@click.option("--print-recipe", is_flag=True, help="print the equivalent TOML recipe and exit")
@click.option("--debug", is_flag=True, help="show tracebacks")
def dicomeread_command(files, output, fmt, order, combine, noscale, scaling, matlab, keep_singletons, fill, sidecar,
                       quiet, verbose, dry_run, print_recipe, debug):
    from dcmpipe.cli import run_tool

    fmt = "nifti" if fmt else "npy"
    if len(files) > 1 and str(output).endswith(FILE_SUFFIXES):
        raise click.UsageError(f"{len(files)} files need a folder as -o, not a file name")
    if str(output).endswith((".nii", ".nii.gz")):
        fmt = "nifti"
    data = dicomeread_recipe(files, output, fmt, order, combine, "raw" if noscale else scaling,
                             "matlab" if matlab else "numpy", keep_singletons, fill, sidecar)
    if quiet:
        data["step"][1]["show"] = False
    run_tool(data, print_recipe=print_recipe, dry_run=dry_run, jobs=1, quiet=quiet, verbose=verbose, debug=debug)


@hookimpl
def dcmpipe_register_commands(cli):
    cli.add_command(dicomeread_command)
