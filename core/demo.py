"""A small scanner-like export made from pydicom's bundled test files.

Used by ``dcmpipe demo``, by the test suite and by the benchmarks: real
DICOM files (pydicom's ``MR_small.dcm`` and ``CT_small.dcm``, whose headers
are rewritten per file) arranged as the series a scanner sends.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class SeriesPlan:
    """One series to generate."""

    number: int
    description: str
    slices: int = 1
    dynamics: int = 1
    echoes: int = 1
    phases: int = 1
    philips: bool = False  # write the Philips private slice number (2001,100A)
    template: str = "MR_small.dcm"
    extra: dict = field(default_factory=dict)


@dataclass
class StudyPlan:
    study_id: str
    patient: str
    patient_id: str
    description: str
    series: list
    history: str = ""


def default_studies() -> list[StudyPlan]:
    """Two patients: 3D, fMRI (dynamics), multi-echo, GE-style cine (phases), CT."""
    return [
        StudyPlan("1001", "DEMO^ALICE", "P001", "Brain", [
            SeriesPlan(301, "T1 3D", slices=8),
            SeriesPlan(401, "fMRI rest", slices=4, dynamics=3, philips=True),
            SeriesPlan(501, "ME FFE", slices=3, echoes=2),
        ]),
        StudyPlan("1002", "DEMO^BOB", "P002", "Heart", [
            SeriesPlan(2, "Cine", slices=2, phases=4),
            SeriesPlan(3, "Scout CT", slices=2, template="CT_small.dcm"),
        ]),
    ]


def _uid(*parts) -> str:
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=[str(p) for p in parts])


def generate(folder: Path, studies: list[StudyPlan], names: str = "IM_{n:05d}", seed: int = 1,
             extension: str = "") -> list[Path]:
    """Write the files of ``studies`` into ``folder``, in shuffled order; return their paths."""
    from pydicom import dcmread
    from pydicom.data import get_testdata_file

    folder.mkdir(parents=True, exist_ok=True)
    templates = {}
    jobs = []
    for study in studies:
        study_uid = _uid("study", seed, study.study_id, study.patient_id)
        for series in study.series:
            series_uid = _uid("series", seed, study_uid, series.number)
            instance = 0
            # slices are acquired interleaved: odd positions first, so instance order != position order
            order = list(range(0, series.slices, 2)) + list(range(1, series.slices, 2))
            for dyn in range(1, series.dynamics + 1):
                for echo in range(1, series.echoes + 1):
                    for phase in range(1, series.phases + 1):
                        for slice_index in order:
                            instance += 1
                            jobs.append((study, study_uid, series, series_uid, instance, slice_index, dyn, echo,
                                         phase))
    random.Random(seed).shuffle(jobs)
    paths = []
    for n, (study, study_uid, series, series_uid, instance, slice_index, dyn, echo, phase) in enumerate(jobs, 1):
        if id(series) not in templates:  # a fresh data set per series: no value leaks into the next
            templates[id(series)] = dcmread(get_testdata_file(series.template))
        ds = templates[id(series)]
        sop_uid = _uid("sop", seed, series_uid, instance)
        ds.SOPInstanceUID = sop_uid
        ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = study.study_id, series.number, instance
        ds.PatientName, ds.PatientID = study.patient, study.patient_id
        ds.StudyDescription, ds.SeriesDescription = study.description, series.description
        ds.StudyDate = ds.SeriesDate = "20240315"
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-100.0, -100.0, -20.0 + 5.0 * slice_index]
        ds.SliceLocation = -20.0 + 5.0 * slice_index
        if study.history:
            ds.AdditionalPatientHistory = study.history
        elif "AdditionalPatientHistory" in ds:
            del ds.AdditionalPatientHistory
        for keyword in ("TemporalPositionIdentifier", "NumberOfTemporalPositions", "CardiacNumberOfImages",
                        "TriggerTime"):
            if keyword in ds:
                delattr(ds, keyword)
        if series.dynamics > 1:
            ds.TemporalPositionIdentifier = dyn
            ds.NumberOfTemporalPositions = series.dynamics
        if series.template.startswith("MR"):
            ds.EchoNumbers = echo
            ds.EchoTime = 5.0 * echo
        if series.phases > 1:
            ds.CardiacNumberOfImages = series.phases
            ds.TriggerTime = 40.0 * (phase - 1) + 3.0
        if 0x20010010 in ds:
            del ds[0x20010010]
            del ds[0x2001100A]
        if series.philips:
            ds.private_block(0x2001, "Philips Imaging DD 001", create=True).add_new(0x0A, "IS", slice_index + 1)
        for keyword, value in series.extra.items():
            setattr(ds, keyword, value)
        path = folder / (names.format(n=n) + extension)
        ds.save_as(path)
        paths.append(path)
    return paths


def make_export(folder: Path, studies: list[StudyPlan] | None = None) -> int:
    """The demo export: the default studies, a text file and a truncated DICOM file."""
    from pydicom.data import get_testdata_file

    folder = Path(folder)
    paths = generate(folder / "DICOM", studies or default_studies())
    (folder / "README.txt").write_text("Exported by the demo scanner.\n")
    whole = Path(get_testdata_file("MR_small.dcm")).read_bytes()
    (folder / "DICOM" / "IM_BROKEN").write_bytes(whole[:600])
    return len(paths) + 2


def tree(folder: Path, limit: int = 6) -> str:
    """A compact listing: each folder with its first few file names and a count."""
    folder = Path(folder)
    lines = [f"{folder}/"]

    def walk(where: Path, depth: int) -> None:
        entries = sorted(where.iterdir())
        files = [e for e in entries if e.is_file()]
        for sub in (e for e in entries if e.is_dir()):
            lines.append(f"{'  ' * depth}{sub.name}/")
            walk(sub, depth + 1)
        shown = [f.name for f in files[:limit]]
        if files:
            more = f" ... ({len(files)} files)" if len(files) > limit else ""
            lines.append(f"{'  ' * depth}{' '.join(shown)}{more}")

    if folder.is_dir():
        walk(folder, 1)
    return "\n".join(lines)
