"""dicomeread: Enhanced MR files as n-D arrays, checked against the scanner's own PAR/REC (read by nibabel)."""

from __future__ import annotations

import copy
import gzip
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest

import dcmpipe
from dcmpipe.enhanced import EnhancedError

HERE = Path(__file__).resolve().parent
T2STAR = HERE / "data" / "enhanced" / "T2_.dcm"
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
BALLS = SHARED / "philips" / "nitest-balls1"
ENH = SHARED / "philips" / "dcm_qa_philips_enh" / "In" / "enh"
ASL = ENH / "1903_WIP_SOURCE_-_3DpCASL.dcm.gz"
FIELDMAP = ENH / "2001_WIP_fcMRI_Field_Mapping_e2_phMag.dcm.gz"
CORPUS = SHARED / "corpus"

needs_balls = pytest.mark.skipif(not BALLS.is_dir(), reason="../shared/philips/nitest-balls1 (paired PAR/REC) absent")
nibabel = pytest.importorskip("nibabel")


def load(path) -> pydicom.Dataset:
    path = Path(path)
    if path.suffix == ".gz":
        with gzip.open(path) as fh:
            return pydicom.dcmread(io.BytesIO(fh.read()))
    return pydicom.dcmread(path)


def with_frames(ds: pydicom.Dataset, keep: list[int]) -> pydicom.Dataset:
    """A copy of ``ds`` holding the frames ``keep`` (0-based, in that order): items and pixel bytes."""
    out = copy.deepcopy(ds)
    size = ds.Rows * ds.Columns * ds.BitsAllocated // 8
    pixels = bytes(ds.PixelData)
    out.PerFrameFunctionalGroupsSequence = pydicom.Sequence(
        [copy.deepcopy(ds.PerFrameFunctionalGroupsSequence[k]) for k in keep])
    out.PixelData = b"".join(pixels[k * size:(k + 1) * size] for k in keep)
    out.NumberOfFrames = len(keep)
    return out


def save(ds, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=False)
    return path


def div(item) -> list:
    return list(item.FrameContentSequence[0].DimensionIndexValues)


def par_volumes(name: str):
    """The PAR/REC's scaled data as (slice, volume, row, column), as the DICOM reader lays it out."""
    img = nibabel.load(BALLS / "PARREC" / f"{name}.PAR", scaling="dv")
    data = np.asanyarray(img.dataobj).astype(np.float32)
    if data.ndim == 3:
        data = data[..., None]
    return img, np.transpose(data, (2, 3, 1, 0))  # (x=column, y=row, slice, volume) -> (slice, volume, row, column)


# -- against the scanner's PAR/REC --------------------------------------------------------------

@needs_balls
@pytest.mark.parametrize("name", ["T1", "T2", "T2-interleaved", "T2_"])
def test_same_volumes_as_the_paired_par_rec(name):
    array, info = dcmpipe.dicomeread(BALLS / "DICOM" / f"{name}.dcm")
    _, par = par_volumes(name)
    ours = array if array.ndim == 4 else array[:, None]
    assert ours.shape == par.shape
    assert info.labels[0] == "In-Stack Position Number"
    assert info.labels[-2:] == ["Rows", "Columns"]
    # PAR/REC values are the console's displayed values; stored in 16 bits, so equal to float32 precision.
    np.testing.assert_allclose(ours, par, rtol=1e-5, atol=1e-3)


@needs_balls
def test_dti_gives_eight_volumes_matching_the_par_by_b_and_gradient_number():
    array, info = dcmpipe.dicomeread(BALLS / "DICOM" / "DTI.dcm")
    assert array.shape == (10, 8, 80, 80)
    vol = info.axes[1]
    assert vol.label == "Diffusion b-Value/Diffusion Gradient Orientation"
    assert info.merged == ["Diffusion b-Value/Diffusion Gradient Orientation"]
    assert info.dropped == ["Stack ID"]
    bvals = [b for b, _ in vol.values]
    assert sorted(bvals) == [0.0] + [1000.0] * 7
    directions = [d for _, d in vol.values]
    assert directions.count(None) == 2  # b0 and the derived isotropic volume
    assert all(abs(np.linalg.norm(d) - 1) < 1e-4 for d in directions if d is not None)
    img, par = par_volumes("DTI")
    defs = img.header.image_defs
    n_slices = 10
    # Each PAR volume, identified by its (b value number, gradient orientation number), is our volume
    # with the same Dimension Index Values.
    order = img.header.get_sorted_slice_indices()
    keys = [(int(defs["diffusion b value number"][i]), int(defs["gradient orientation number"][i])) for i in order]
    for v in range(8):
        key = keys[v * n_slices]
        ours = vol.index_values.index(key)
        np.testing.assert_allclose(array[:, ours], par[:, v], rtol=1e-5, atol=1e-3)
    assert info.frames.shape == (10, 8) and sorted(info.frames.ravel()) == list(range(1, 81))


# -- independence from frame order and index values ---------------------------------------------

def test_frame_order_and_index_values_do_not_matter(tmp_path):
    base, info = dcmpipe.dicomeread(T2STAR)
    assert base.shape == (10, 2, 80, 80)
    assert info.axes[1].label == "Temporal Position Index"
    ds = load(T2STAR)
    rng = np.random.default_rng(7)
    shuffled = with_frames(ds, list(rng.permutation(len(ds.PerFrameFunctionalGroupsSequence))))
    for item in shuffled.PerFrameFunctionalGroupsSequence:  # sparse, 0-based: never offsets
        slice_, dyn = div(item)[1], div(item)[2]
        item.FrameContentSequence[0].DimensionIndexValues = [5, 3 * slice_ - 3, {1: 0, 2: 9}[dyn]]
    array, info2 = dcmpipe.dicomeread(save(shuffled, tmp_path / "shuffled.dcm"))
    np.testing.assert_array_equal(array, base)
    assert info2.axes[1].index_values == [0, 9]
    # the frame number behind each position follows the frames
    first = int(info2.frames[0, 0]) - 1
    assert div(shuffled.PerFrameFunctionalGroupsSequence[first])[1:] == [0, 0]


def test_non_slice_axis_first_which_nibabel_refuses(tmp_path):
    from nibabel.nicom import dicomwrappers

    ds = load(T2STAR)
    dims = list(ds.DimensionIndexSequence)
    ds.DimensionIndexSequence = pydicom.Sequence([dims[0], dims[2], dims[1]])
    for item in ds.PerFrameFunctionalGroupsSequence:
        v = div(item)
        item.FrameContentSequence[0].DimensionIndexValues = [v[0], v[2], v[1]]
    path = save(ds, tmp_path / "time-first.dcm")
    with pytest.raises(Exception):
        dicomwrappers.wrapper_from_file(path).get_data()
    array, info = dcmpipe.dicomeread(path)
    assert info.labels[:2] == ["Temporal Position Index", "In-Stack Position Number"]
    base, _ = dcmpipe.dicomeread(T2STAR)
    np.testing.assert_array_equal(array, base.transpose(1, 0, 2, 3))
    again, info = dcmpipe.dicomeread(path, order=["in-stack position number"])
    np.testing.assert_array_equal(again, base)
    again, _ = dcmpipe.dicomeread(path, order=[1])
    np.testing.assert_array_equal(again, base)


# -- scaling ------------------------------------------------------------------------------------

def test_scaling_is_per_frame(tmp_path):
    ds = load(T2STAR)
    stored = np.frombuffer(ds.PixelData, "<u2").reshape(20, 80, 80)
    item = ds.PerFrameFunctionalGroupsSequence[3]
    pvt = item.PixelValueTransformationSequence[0]
    pvt.RescaleSlope, pvt.RescaleIntercept = 2.5, -7
    slice_, dyn = div(item)[1:]
    path = save(ds, tmp_path / "slope.dcm")
    array, info = dcmpipe.dicomeread(path)
    np.testing.assert_allclose(array[slice_ - 1, dyn - 1], stored[3] * 2.5 - 7, rtol=1e-6)
    other = ds.PerFrameFunctionalGroupsSequence[0].PixelValueTransformationSequence[0]
    s0, d0 = div(ds.PerFrameFunctionalGroupsSequence[0])[1:]
    np.testing.assert_allclose(array[s0 - 1, d0 - 1],
                               stored[0] * float(other.RescaleSlope) + float(other.RescaleIntercept), rtol=1e-6)
    raw, info = dcmpipe.dicomeread(path, noscale=True)
    assert raw.dtype == np.uint16 and info.scaling == "raw"
    np.testing.assert_array_equal(raw[slice_ - 1, dyn - 1], stored[3])


@needs_balls
def test_fp_scaling_matches_nibabel_fp():
    array, _ = dcmpipe.dicomeread(BALLS / "DICOM" / "T1.dcm", scaling="fp")
    img = nibabel.load(BALLS / "PARREC" / "T1.PAR", scaling="fp")
    par = np.transpose(np.asanyarray(img.dataobj), (2, 1, 0))
    np.testing.assert_allclose(array, par, rtol=1e-5)


# -- incomplete grids, combine, layout ---------------------------------------------------------

@pytest.mark.skipif(not FIELDMAP.is_file(), reason="field map of dcm_qa_philips_enh absent")
def test_field_map_magnitude_and_phase_merge_into_two_volumes(tmp_path):
    full, info = dcmpipe.dicomeread(FIELDMAP, noscale=True)
    assert [a.label for a in info.axes] == ["In-Stack Position Number", "Private ImageTypeMR", "Effective Echo Time"]
    assert info.axes[1].values == ["M", "P"] and info.axes[1].index_values == [0, 3]  # Philips: enumeration codes
    # Older field maps hold magnitude at one echo and phase at the other: keep just those frames.
    ds = load(FIELDMAP)
    keep = [k for k, item in enumerate(ds.PerFrameFunctionalGroupsSequence)
            if (div(item)[2], div(item)[3]) in ((0, 1), (3, 2))]
    array, info = dcmpipe.dicomeread(save(with_frames(ds, keep), tmp_path / "fmap.dcm"), noscale=True)
    assert array.shape == (53, 2, 80, 80)
    assert info.axes[1].label == "Private ImageTypeMR/Effective Echo Time"
    assert info.axes[1].values == [("M", 2.3), ("P", 4.6)]
    np.testing.assert_array_equal(array[:, 0], full[:, 0, 0])
    np.testing.assert_array_equal(array[:, 1], full[:, 1, 1])


@pytest.mark.skipif(not ASL.is_file(), reason="ASL of dcm_qa_philips_enh absent")
def test_asl_label_control_axis_from_a_private_pointer():
    from nibabel.nicom import dicomwrappers

    array, info = dcmpipe.dicomeread(ASL)
    assert info.labels == ["In-Stack Position Number", "Temporal Position Index", "Private Label Type", "Rows", "Columns"]
    assert info.axes[2].values == ["CONTROL", "LABEL"]
    assert info.axes[2].index_values == [0, 1]  # 0-based private index values
    # nibabel's multiframe reader: stored values as (row, column, slice, dynamic, label), slices in the
    # order of their position along the slice normal (here the reverse of In-Stack Position).
    ref = dicomwrappers.wrapper_from_data(load(ASL)).get_data()
    raw, _ = dcmpipe.dicomeread(ASL, noscale=True)
    np.testing.assert_array_equal(raw, np.transpose(ref, (2, 3, 4, 0, 1))[::-1])
    slope = float(load(ASL).PerFrameFunctionalGroupsSequence[0].PixelValueTransformationSequence[0].RescaleSlope)
    np.testing.assert_allclose(array, raw * slope, rtol=1e-6)
    combined, info = dcmpipe.dicomeread(ASL, combine="Private Label Type")
    assert combined.shape == (40, 6, 96, 96)
    assert info.axes[1].values[:2] == [(1, "CONTROL"), (1, "LABEL")]
    np.testing.assert_array_equal(combined.reshape(array.shape), array)
    matlab, info = dcmpipe.dicomeread(ASL, layout="matlab", order=["Private Label Type"])
    assert matlab.shape == (96, 96, 2, 40, 3)
    assert info.labels == ["Rows", "Columns", "Private Label Type", "In-Stack Position Number", "Temporal Position Index"]
    np.testing.assert_array_equal(matlab[:, :, 1, 4, 2], array[4, 2, 1])


def test_keep_singletons_and_combine_by_number():
    array, info = dcmpipe.dicomeread(T2STAR, keep_singletons=True)
    assert array.shape == (1, 10, 2, 80, 80) and info.labels[0] == "Stack ID"
    merged, info = dcmpipe.dicomeread(T2STAR, combine=1)
    assert merged.shape == (20, 80, 80)
    assert info.axes[0].index_values[:3] == [(1, 1), (1, 2), (2, 1)]


def test_partial_last_dynamic_is_an_error_that_names_dcmshortacq(tmp_path):
    ds = load(T2STAR)
    keep = [k for k, item in enumerate(ds.PerFrameFunctionalGroupsSequence) if not (div(item)[2] == 2 and div(item)[1] > 6)]
    path = save(with_frames(ds, keep), tmp_path / "short.dcm")
    with pytest.raises(EnhancedError, match=r"short\.dcm: the last dynamic .* 6 of 10 frames.*dcmshortacq"):
        dcmpipe.dicomeread(path)
    array, info = dcmpipe.dicomeread(path, fill=True)
    assert array.shape == (10, 2, 80, 80)
    assert np.isnan(array[6:, 1]).all() and not np.isnan(array[:6]).any()
    assert (info.frames[6:, 1] == 0).all()


# -- bad input ----------------------------------------------------------------------------------

def test_bad_inputs_name_the_file_and_what_is_missing(tmp_path):
    truncated = tmp_path / "cut.dcm"
    truncated.write_bytes(T2STAR.read_bytes()[:200_000])
    with pytest.raises(EnhancedError, match=r"cut\.dcm: .*(truncated|Pixel Data)"):
        dcmpipe.dicomeread(truncated)
    text = tmp_path / "notes.dcm"
    text.write_text("not dicom\n")
    with pytest.raises(EnhancedError, match=r"notes\.dcm: not a DICOM file"):
        dcmpipe.dicomeread(text)
    ds = load(T2STAR)
    del ds.DimensionIndexSequence
    with pytest.raises(EnhancedError, match=r"nodims\.dcm: lacks the Dimension Index Sequence"):
        dcmpipe.dicomeread(save(ds, tmp_path / "nodims.dcm"))
    ds = load(T2STAR)
    ds.PerFrameFunctionalGroupsSequence[4].FrameContentSequence[0].DimensionIndexValues = [1, 1]
    with pytest.raises(EnhancedError, match=r"frame 5 has 2 Dimension Index Values"):
        dcmpipe.dicomeread(save(ds, tmp_path / "div.dcm"))
    ds = load(T2STAR)
    ds.PerFrameFunctionalGroupsSequence[4].FrameContentSequence[0].DimensionIndexValues = \
        div(ds.PerFrameFunctionalGroupsSequence[5])
    with pytest.raises(EnhancedError, match=r"frames 5 and 6 have the same Dimension Index Values"):
        dcmpipe.dicomeread(save(ds, tmp_path / "dup.dcm"))


@pytest.mark.skipif(not (CORPUS / "pydicom-data" / "emri_small.dcm").is_file(), reason="corpus absent")
def test_enhanced_mr_without_functional_groups_is_refused():
    with pytest.raises(EnhancedError, match="emri_small.dcm: Enhanced MR file lacks the Per-frame Functional Groups"):
        dcmpipe.dicomeread(CORPUS / "pydicom-data" / "emri_small.dcm")


# -- the command ------------------------------------------------------------------------------

def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "dcmpipe", *map(str, args)], capture_output=True, text=True, cwd=cwd)


def test_command_writes_npy_and_prints_dimensions(tmp_path):
    out = tmp_path / "bold.npy"
    r = run("dicomeread", T2STAR, "-o", out, "--json")
    assert r.returncode == 0, r.stderr
    assert "10 x 2 x 80 x 80" in r.stdout and "Temporal Position Index" in r.stdout
    array, info = dcmpipe.dicomeread(T2STAR)
    np.testing.assert_array_equal(np.load(out), array)
    side = json.loads((tmp_path / "bold.npy.json").read_text())
    assert side["labels"] == info.labels and side["axes"][1]["values"] == [1, 2]
    # never overwritten: a different file at the name is an error, the file stays
    r = run("dicomeread", T2STAR, "-o", out, "--noscale")
    assert r.returncode != 0 and "already exists" in r.stderr
    np.testing.assert_array_equal(np.load(out), array)


@needs_balls
def test_command_nifti_matches_nibabels_par_conversion(tmp_path):
    out = tmp_path / "bold.nii.gz"
    r = run("dicomeread", BALLS / "DICOM" / "T2_.dcm", "-o", out)
    assert r.returncode == 0, r.stderr
    ours = nibabel.load(out)
    par = nibabel.load(BALLS / "PARREC" / "T2_.PAR", scaling="dv")
    assert ours.shape == par.shape
    np.testing.assert_allclose(ours.get_fdata(), par.get_fdata(), rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(ours.affine, par.affine, atol=0.05)


def test_command_bad_input_one_line_error(tmp_path):
    bad = tmp_path / "junk.dcm"
    bad.write_bytes(b"\0" * 64)
    r = run("dicomeread", bad, "-o", tmp_path / "x.npy")
    assert r.returncode != 0
    assert "junk.dcm" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "x.npy").exists()
    r = run("dicomeread", T2STAR, T2STAR, "-o", tmp_path / "x.npy")
    assert r.returncode == 2 and "folder" in r.stderr


def test_import_dcmpipe_stays_light():
    code = "import sys, dcmpipe; assert 'numpy' not in sys.modules and 'pydicom' not in sys.modules; " \
           "f = dcmpipe.dicomeread; assert f.__module__ == 'dcmpipe.enhanced'; print('ok')"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.stdout.strip() == "ok", r.stderr


LEAN_FILES = [T2STAR, BALLS / "DICOM" / "DTI.dcm", BALLS / "DICOM" / "T1.dcm", ASL, FIELDMAP,
              CORPUS / "nibabel" / "philips_mprage.dcm", CORPUS / "nibabel-sdist" / "4d_multiframe_test_8frames.dcm"]


@pytest.mark.parametrize("path", LEAN_FILES, ids=lambda p: p.name)
def test_lean_walk_gives_what_pydicom_gives(path, monkeypatch):
    """The fast Explicit VR Little Endian walk and pydicom read every file alike."""
    from dcmpipe import enhanced

    if not path.is_file():
        pytest.skip(f"{path} absent")
    assert isinstance(enhanced.read_dataset(path, lean=True), enhanced.LeanDataset)
    fast, fast_info = dcmpipe.dicomeread(path)

    def unsure(*args):
        raise enhanced._LeanUnsure("test")

    monkeypatch.setattr(enhanced, "_lean_read", unsure)
    slow, slow_info = dcmpipe.dicomeread(path)
    np.testing.assert_array_equal(fast, slow)
    assert fast.dtype == slow.dtype
    assert json.dumps(fast_info.as_dict()) == json.dumps(slow_info.as_dict())


def test_files_the_lean_walk_leaves_to_pydicom(tmp_path):
    from dcmpipe import enhanced

    ds = load(T2STAR)
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    path = tmp_path / "implicit.dcm"
    ds.save_as(path, implicit_vr=True, little_endian=True)
    assert not isinstance(enhanced.read_dataset(path, lean=True), enhanced.LeanDataset)
    array, _ = dcmpipe.dicomeread(path)
    np.testing.assert_array_equal(array, dcmpipe.dicomeread(T2STAR)[0])


def test_lean_walk_reads_defined_length_sequences(tmp_path):
    from dcmpipe import enhanced

    ds = load(T2STAR)

    def define(dataset):
        for element in dataset:
            if element.VR == "SQ":
                element.is_undefined_length = False
                for item in element.value:
                    item.is_undefined_length_sequence_item = False
                    define(item)

    define(ds)
    path = save(ds, tmp_path / "defined.dcm")
    assert b"\xff\xff\xff\xff" not in path.read_bytes()[: path.read_bytes().find(b"\xe0\x7f\x10\x00")]
    assert isinstance(enhanced.read_dataset(path, lean=True), enhanced.LeanDataset)
    array, info = dcmpipe.dicomeread(path)
    base, base_info = dcmpipe.dicomeread(T2STAR)
    np.testing.assert_array_equal(array, base)
    assert info.as_dict()["axes"] == base_info.as_dict()["axes"]
