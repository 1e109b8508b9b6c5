"""parrec: PAR/REC as a recipe source, tolerant of the variants found in the wild."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import DATA, SHARED

PHILIPS = DATA / "philips"
CORPUS_PARREC = SHARED / "corpus" / "parrec"


def _items(path, **options):
    from dcmpipe import Context
    from dcmpipe.plugins.parrec import Parrec, ParrecOptions

    return list(Parrec(ParrecOptions(path=[Path(path)], **options), Context(base_dir=Path("."))).read())


def _key(item):
    image = item.extra["image"]
    return (image["slice"], image["dynamic"], image["echo"], image["type"])


def test_one_item_per_image_with_pixels_and_attributes():
    import numpy as np
    import pydicom

    from dcmpipe.plugins.parrec import read_pixels

    items = _items(PHILIPS / "T2_.PAR")
    assert len(items) == 20 and all(i.ok for i in items)
    first = items[0]
    assert first.get("Rows") == 80 and first.get("Columns") == 80
    assert first.get("ProtocolName") == "T2* SENSE"
    assert first.get("EchoTime") == pytest.approx(35.0)
    assert first.extra["version"] == "4.2" and first.extra["general"]["Max. number of dynamics"] == 2
    # The pixels are the Enhanced DICOM frame of the same slice and dynamic.
    ds = pydicom.dcmread(PHILIPS / "T2_.dcm")
    frames = ds.pixel_array
    by_key = {}
    for number, frame in enumerate(ds.PerFrameFunctionalGroupsSequence):
        private = frame[0x2005, 0x140F][0]
        by_key[(int(private[0x2001, 0x100A].value), int(private.TemporalPositionIdentifier))] = number
    for item in items:
        image = item.extra["image"]
        assert np.array_equal(read_pixels(item), frames[by_key[(image["slice"], image["dynamic"])]])


def test_images_are_located_by_their_index_not_their_row(tmp_path):
    import numpy as np

    from dcmpipe.plugins.parrec import read_pixels

    text = (PHILIPS / "T2_.PAR").read_bytes().decode("latin-1")
    lines = text.split("\r\n")
    image_rows = [n for n, line in enumerate(lines) if line[:1] == " " and line.strip()[:1].isdigit()]
    shuffled = [lines[n] for n in reversed(image_rows)]
    for n, line in zip(image_rows, shuffled):
        lines[n] = line
    (tmp_path / "x.PAR").write_bytes("\n".join(lines).encode("latin-1"))  # LF only, too
    shutil.copy(PHILIPS / "T2_.REC", tmp_path / "x.REC")
    original = {_key(i): read_pixels(i) for i in _items(PHILIPS / "T2_.PAR")}
    shuffled_items = _items(tmp_path / "x.PAR")
    assert shuffled_items[0].extra["row"] == 0 and shuffled_items[0].extra["image"]["index"] == 19
    for item in shuffled_items:
        assert np.array_equal(read_pixels(item), original[_key(item)])


def test_truncated_rec_fails_only_the_missing_images(tmp_path):
    shutil.copy(PHILIPS / "T2_.PAR", tmp_path / "t.PAR")
    (tmp_path / "t.REC").write_bytes((PHILIPS / "T2_.REC").read_bytes()[: 80 * 80 * 2 * 15])
    items = _items(tmp_path / "t.PAR")
    assert sum(i.ok for i in items) == 15
    bad = [i for i in items if not i.ok]
    assert len(bad) == 5 and "truncated REC" in bad[0].reason


def test_missing_rec_and_not_a_par(tmp_path):
    shutil.copy(PHILIPS / "T2_.PAR", tmp_path / "alone.PAR")
    (tmp_path / "junk.PAR").write_text("hello\n")
    items = _items(tmp_path)
    junk = [i for i in items if i.source.name == "junk.PAR"]
    assert len(junk) == 1 and junk[0].status == "failed" and "not a PAR file" in junk[0].reason
    alone = [i for i in items if i.source.name == "alone.PAR"]
    assert len(alone) == 20 and all("no REC" in i.reason for i in alone)


def test_file_items():
    (item,) = _items(PHILIPS / "T2_.PAR", items="file")
    assert item.ok and len(item.extra["images"]) == 20


def _nibabel_images(path):
    nib = pytest.importorskip("nibabel")
    return nib.load(path, permit_truncated=True)


@pytest.mark.parametrize("name", [
    "phantom_EPI_asc_CLEAR_2_1.PAR", "phantom_varscale.PAR", "phantom_truncated.PAR",
])
def test_reads_the_pixels_nibabel_reads(name):
    import numpy as np

    from dcmpipe.plugins.parrec import read_pixels

    path = CORPUS_PARREC / name
    if not path.exists():
        pytest.skip(f"{path} not found")
    img = _nibabel_images(path)
    theirs = np.asarray(img.dataobj.get_unscaled())
    theirs = theirs.reshape(theirs.shape[0], theirs.shape[1], -1)
    theirs_sums = sorted(int(theirs[:, :, k].astype(np.int64).sum()) for k in range(theirs.shape[2]))
    items = [i for i in _items(path) if i.ok]
    ours_sums = sorted(int(read_pixels(i).astype(np.int64).sum()) for i in items)
    assert ours_sums == theirs_sums


def test_reads_every_par_of_the_corpus():
    """Every console, third-party, V4/V4.1, truncated and variant PAR parses with all its image lines."""
    pars = sorted(CORPUS_PARREC.glob("*.PAR")) + sorted((SHARED / "philips" / "parrec_oblique").rglob("*.PAR"))
    if not pars:
        pytest.skip("no PAR corpus in ../shared")
    from dcmpipe.plugins import _philips_par as par

    for path in pars:
        parsed = par.read_par(path)
        lines = [line for line in path.read_bytes().decode("latin-1").splitlines()
                 if line.strip()[:1].isdigit()]
        assert len(parsed.records) == len(lines) > 0, path.name
        assert parsed.get("Max. number of slices/locations") is not None, path.name


def test_recipe_reads_parrec(tmp_path):
    from dcmpipe.testing import run

    summary = run({"step": [{"read": "parrec", "path": [str(PHILIPS / "T2_.PAR")]}]}, base_dir=tmp_path)
    assert summary.read == 20 and summary.failed == 0


def test_column_parsing_equals_line_by_line():
    """PAR image lines converted column by column give the records of the line-by-line conversion."""
    from dcmpipe.plugins import _philips_par as par

    folder = SHARED / "philips" / "nitest-balls1" / "PARREC"
    pars = sorted(folder.glob("*.PAR")) if folder.exists() else []
    pars += sorted(PHILIPS.glob("*.PAR"))
    assert pars
    for path in pars:
        parsed = par.read_par(path)
        lines = [line.split() for line in path.read_text("latin-1").splitlines()
                 if line.strip()[:1].isdigit()]
        assert parsed.records == [par._record_of(fields, parsed.version) for fields in lines], path
