"""dcms2e's writer: explicit VR little endian by hand, and the pixel data copied in a background thread.

Shared helpers of ``_philips_build`` (not a plugin itself); no pydicom, numpy only where pixels are moved.

- Elements are encoded as pydicom writes them (the output of the pydicom-based builder this replaced
  is the reference): values copied from the classic files go through as the bytes they were read as
  (``LeanElement.raw``), sequences and items always with undefined length.
- An item is a dict {tag: encoded element | list of pieces}; a piece is bytes or a :class:`Slot`, a
  place for a value that changes from frame to frame.  :func:`pieces` flattens an item in tag order
  into bytes and slots, so a frame template is a few fixed byte strings between its slots.
- :class:`Output` is the temporary file (written at known offsets with ``pwrite``, each range handed
  to the kernel's write-back at once), fsynced and linked to its name at the end; never overwrites.
- :func:`copy_frames` reorders the REC's images into the Enhanced frame order a few megabytes at a
  time: one read per run of consecutive REC images, one write per run of consecutive frames.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from ._philips_dicom import PhilipsError, preallocate, write_gathered

ITEM_START = b"\xfe\xff\x00\xe0\xff\xff\xff\xff"
ITEM_END = b"\xfe\xff\x0d\xe0\x00\x00\x00\x00"
SEQ_END = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
LONG_VRS = frozenset("OB OD OF OL OV OW SQ SV UC UN UR UT UV".split())
_BINARY = {"FL": "f", "FD": "d", "SS": "h", "US": "H", "SL": "i", "UL": "I", "SV": "q", "UV": "Q"}
_ZERO_PADDED = frozenset(("UI", "OB", "UN"))
_SHORT = struct.Struct("<HH2sH")
_LONG = struct.Struct("<HH2sHI")

# The attributes the builder makes itself: keyword -> (tag, VR) (tests check them against pydicom's dictionary).
KEYWORDS = {
    "ImageType": (0x00080008, "CS"), "SOPClassUID": (0x00080016, "UI"), "SOPInstanceUID": (0x00080018, "UI"),
    "InstanceCreationDate": (0x00080012, "DA"), "InstanceCreationTime": (0x00080013, "TM"),
    "AcquisitionDateTime": (0x0008002A, "DT"), "ContentDate": (0x00080023, "DA"), "ContentTime": (0x00080033, "TM"),
    "ContentQualification": (0x00189004, "CS"), "ResonantNucleus": (0x00189100, "CS"),
    "BurnedInAnnotation": (0x00280301, "CS"), "AcquisitionContextSequence": (0x00400555, "SQ"),
    "NumberOfFrames": (0x00280008, "IS"), "InstanceNumber": (0x00200013, "IS"),
    "AcquisitionDuration": (0x00189073, "FD"), "DimensionOrganizationSequence": (0x00209221, "SQ"),
    "DimensionOrganizationUID": (0x00209164, "UI"), "DimensionIndexSequence": (0x00209222, "SQ"),
    "DimensionIndexPointer": (0x00209165, "AT"), "FunctionalGroupPointer": (0x00209167, "AT"),
    "DimensionIndexPrivateCreator": (0x00209213, "LO"), "FunctionalGroupPrivateCreator": (0x00209238, "LO"),
    "DimensionDescriptionLabel": (0x00209421, "LO"), "SharedFunctionalGroupsSequence": (0x52009229, "SQ"),
    "PerFrameFunctionalGroupsSequence": (0x52009230, "SQ"), "InstanceCreatorUID": (0x00080014, "UI"),
    "NumberOfPhaseEncodingSteps": (0x00180089, "IS"), "MRImagingModifierSequence": (0x00189006, "SQ"),
    "PixelBandwidth": (0x00180095, "DS"), "MagnetizationTransfer": (0x00189020, "CS"),
    "BloodSignalNulling": (0x00189022, "CS"), "Tagging": (0x00189028, "CS"),
    "TransmitterFrequency": (0x00189098, "FD"), "ImagingFrequency": (0x00180084, "DS"),
    "MRReceiveCoilSequence": (0x00189042, "SQ"), "ReceiveCoilName": (0x00181250, "SH"),
    "ReceiveCoilManufacturerName": (0x00189041, "LO"), "ReceiveCoilType": (0x00189043, "CS"),
    "QuadratureReceiveCoil": (0x00189044, "CS"), "MultiCoilDefinitionSequence": (0x00189045, "SQ"),
    "MultiCoilElementName": (0x00189047, "SH"), "MultiCoilElementUsed": (0x00189048, "CS"),
    "MRTransmitCoilSequence": (0x00189049, "SQ"), "TransmitCoilName": (0x00181251, "SH"),
    "TransmitCoilManufacturerName": (0x00189050, "LO"), "TransmitCoilType": (0x00189051, "CS"),
    "MRTimingAndRelatedParametersSequence": (0x00189112, "SQ"), "RepetitionTime": (0x00180080, "DS"),
    "EchoTrainLength": (0x00180091, "IS"), "FlipAngle": (0x00181314, "DS"),
    "OperatingModeSequence": (0x00189176, "SQ"), "GradientOutputType": (0x00189180, "CS"),
    "GradientOutput": (0x00189182, "FD"), "SpecificAbsorptionRateSequence": (0x00189239, "SQ"),
    "SpecificAbsorptionRateDefinition": (0x00189179, "CS"), "SpecificAbsorptionRateValue": (0x00189181, "FD"),
    "RFEchoTrainLength": (0x00189240, "US"), "GradientEchoTrainLength": (0x00189241, "US"),
    "MRModifierSequence": (0x00189115, "SQ"), "InversionRecovery": (0x00189009, "CS"),
    "FlowCompensation": (0x00189010, "CS"), "Spoiling": (0x00189016, "CS"), "T2Preparation": (0x00189021, "CS"),
    "SpectrallySelectedExcitation": (0x00189026, "CS"), "SpatialPresaturation": (0x00189027, "CS"),
    "ParallelReductionFactorInPlane": (0x00189069, "FD"), "ParallelAcquisition": (0x00189077, "CS"),
    "ParallelAcquisitionTechnique": (0x00189078, "CS"), "PartialFourier": (0x00189081, "CS"),
    "ParallelReductionFactorOutOfPlane": (0x00189155, "FD"),
    "ParallelReductionFactorSecondInPlane": (0x00189168, "FD"), "MRAveragesSequence": (0x00189119, "SQ"),
    "NumberOfAverages": (0x00180083, "DS"), "MRFOVGeometrySequence": (0x00189125, "SQ"),
    "PercentSampling": (0x00180093, "DS"), "PercentPhaseFieldOfView": (0x00180094, "DS"),
    "InPlanePhaseEncodingDirection": (0x00181312, "CS"), "MRAcquisitionFrequencyEncodingSteps": (0x00189058, "US"),
    "MRAcquisitionPhaseEncodingStepsInPlane": (0x00189231, "US"),
    "MRAcquisitionPhaseEncodingStepsOutOfPlane": (0x00189232, "US"), "FrameAnatomySequence": (0x00209071, "SQ"),
    "AnatomicRegionSequence": (0x00082218, "SQ"), "CodeValue": (0x00080100, "SH"),
    "CodingSchemeDesignator": (0x00080102, "SH"), "CodeMeaning": (0x00080104, "LO"),
    "FrameLaterality": (0x00209072, "CS"), "MREchoSequence": (0x00189114, "SQ"),
    "EffectiveEchoTime": (0x00189082, "FD"), "EchoTime": (0x00180081, "DS"),
    "MRMetaboliteMapSequence": (0x00189152, "SQ"), "MetaboliteMapDescription": (0x00189080, "ST"),
    "MRImageFrameTypeSequence": (0x00189226, "SQ"), "FrameType": (0x00089007, "CS"),
    "PixelPresentation": (0x00089205, "CS"), "VolumetricProperties": (0x00089206, "CS"),
    "VolumeBasedCalculationTechnique": (0x00089207, "CS"), "ComplexImageComponent": (0x00089208, "CS"),
    "AcquisitionContrast": (0x00089209, "CS"), "FrameContentSequence": (0x00209111, "SQ"),
    "StackID": (0x00209056, "SH"), "InStackPositionNumber": (0x00209057, "UL"),
    "PlanePositionSequence": (0x00209113, "SQ"), "ImagePositionPatient": (0x00200032, "DS"),
    "PlaneOrientationSequence": (0x00209116, "SQ"), "ImageOrientationPatient": (0x00200037, "DS"),
    "PixelMeasuresSequence": (0x00289110, "SQ"), "SliceThickness": (0x00180050, "DS"),
    "SpacingBetweenSlices": (0x00180088, "DS"), "PixelSpacing": (0x00280030, "DS"),
    "FrameVOILUTSequence": (0x00289132, "SQ"), "PixelValueTransformationSequence": (0x00289145, "SQ"),
    "RescaleType": (0x00281054, "LO"), "InversionTime": (0x00180082, "DS"), "KSpaceFiltering": (0x00189064, "CS"),
    "DiffusionAnisotropyType": (0x00189147, "CS"), "FrameAcquisitionDateTime": (0x00189074, "DT"),
    "FrameReferenceDateTime": (0x00189151, "DT"), "FrameAcquisitionDuration": (0x00189220, "FD"),
    "TemporalPositionIndex": (0x00209128, "UL"), "DimensionIndexValues": (0x00209157, "UL"),
    "WindowCenter": (0x00281050, "DS"), "WindowWidth": (0x00281051, "DS"), "RescaleIntercept": (0x00281052, "DS"),
    "RescaleSlope": (0x00281053, "DS"), "TemporalPositionIdentifier": (0x00200100, "IS"),
    "VelocityEncodingDirection": (0x00189090, "FD"), "VelocityEncodingMinimumValue": (0x00189091, "FD"),
    "ImagedNucleus": (0x00180085, "SH"), "FileMetaInformationGroupLength": (0x00020000, "UL"),
    "FileMetaInformationVersion": (0x00020001, "OB"), "MediaStorageSOPClassUID": (0x00020002, "UI"),
    "MediaStorageSOPInstanceUID": (0x00020003, "UI"), "TransferSyntaxUID": (0x00020010, "UI"),
    "ImplementationClassUID": (0x00020012, "UI"), "ImplementationVersionName": (0x00020013, "SH"),
    "Rows": (0x00280010, "US"), "Columns": (0x00280011, "US"), "BitsAllocated": (0x00280100, "US"),
    "AcquisitionDate": (0x00080022, "DA"), "AcquisitionTime": (0x00080032, "TM"),
    "SeriesDate": (0x00080021, "DA"), "SeriesTime": (0x00080031, "TM"), "EchoNumbers": (0x00180086, "IS"),
    "AcquisitionNumber": (0x00200012, "IS"), "SeriesInstanceUID": (0x0020000E, "UI"),
    "Manufacturer": (0x00080070, "LO"), "PixelData": (0x7FE00010, "OW"),
}


def tag_of(keyword: str) -> int:
    return KEYWORDS[keyword][0]


# -- elements --------------------------------------------------------------------------------------


def head(tag: int, vr: str, length: int) -> bytes:
    """The header of an explicit VR little endian element."""
    if vr in LONG_VRS:
        return _LONG.pack(tag >> 16, tag & 0xFFFF, vr.encode(), 0, length)
    if length > 0xFFFF:
        raise PhilipsError(f"({tag >> 16:04X},{tag & 0xFFFF:04X}) {vr}: a value of {length} bytes does not fit "
                           "an explicit VR short length")
    return _SHORT.pack(tag >> 16, tag & 0xFFFF, vr.encode(), length)


def element(tag: int, vr: str, data: bytes) -> bytes:
    """One element with the value bytes ``data`` (padded to an even length as pydicom pads)."""
    if len(data) & 1:
        data = bytes(data) + (b"\0" if vr in _ZERO_PADDED else b" ")
    return head(tag, vr, len(data)) + data


def text(tag: int, vr: str, value) -> bytes:
    """A text element (a list: values joined by backslashes), as pydicom writes a str value."""
    if isinstance(value, (list, tuple)):
        value = "\\".join(str(v) for v in value)
    return element(tag, vr, str(value).encode("latin-1", errors="replace"))


def number(tag: int, vr: str, value) -> bytes:
    """A binary number element (FL, FD, US, UL, SS...) of one value or a list."""
    code = _BINARY[vr]
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    return element(tag, vr, struct.pack(f"<{len(values)}{code}", *values))


def value(tag: int, vr: str, v) -> bytes:
    """An element from a Python value, by VR, as pydicom encodes a value set by keyword."""
    if vr in _BINARY:
        if v is None or v == "":
            return head(tag, vr, 0)
        return number(tag, vr, v)
    if vr == "AT":
        tags = list(v) if isinstance(v, (list, tuple)) else [v]
        return element(tag, vr, b"".join(struct.pack("<HH", t >> 16, t & 0xFFFF) for t in tags))
    if vr == "SQ":
        return sequence(tag, v)
    if vr in LONG_VRS and isinstance(v, (bytes, bytearray, memoryview)):
        return element(tag, vr, bytes(v))
    return text(tag, vr, "" if v is None else v)


def keyword(name: str, v) -> bytes:
    tag, vr = KEYWORDS[name]
    return value(tag, vr, v)


def sequence(tag: int, items: list) -> bytes:
    """A sequence of undefined length; ``items``: dicts (encoded in tag order) or bytes (encoded items)."""
    parts = [head(tag, "SQ", 0xFFFFFFFF)]
    for item in items:
        parts += (ITEM_START, item if isinstance(item, (bytes, bytearray)) else dataset(item), ITEM_END)
    parts.append(SEQ_END)
    return b"".join(parts)


def dataset(item: dict) -> bytes:
    """The elements of ``item`` ({tag: encoded element}) in tag order."""
    return b"".join(item[tag] for tag in sorted(item))


def copy(el) -> bytes:
    """An element of a lean data set as read (sequences: their items copied, undefined lengths)."""
    if el.VR == "SQ":
        return sequence(el.tag, [copy_dataset(item) for item in el.value])
    return element(el.tag, el.VR, el.raw)


def copy_dataset(ds) -> bytes:
    return b"".join(copy(el) for el in ds)


def copy_as(el, tag: int, vr: str) -> bytes:
    """``el`` under ``tag``: its bytes if it has the VR ``vr``, else its value encoded as ``vr``."""
    if el.VR == vr and vr != "SQ":
        return element(tag, vr, el.raw)
    if el.VR == "SQ" and vr == "SQ":
        return sequence(tag, [copy_dataset(item) for item in el.value])
    return value(tag, vr, el.value)


# -- templates: items with slots ---------------------------------------------------------------------


class Part:
    """A piece of a template that is not bytes yet."""

    __slots__ = ()


class Slot(Part):
    """The place of a value that changes per frame (its encoded element comes from a column)."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    def __repr__(self):
        return f"Slot({self.name})"


class Raw(Part):
    """An element of a classic file as it lies in the file (header and value): ``data[start:end]``."""

    __slots__ = ("start", "end")

    def __init__(self, start: int, end: int):
        self.start, self.end = start, end


class Computed(Part):
    """Bytes computed from each classic file's own values (``kind`` names them)."""

    __slots__ = ("kind",)

    def __init__(self, kind: str):
        self.kind = kind


def pieces(item: dict) -> list:
    """``item`` in tag order as a list of bytes and parts, adjacent bytes joined.

    Values of ``item``: bytes (an encoded element), a part, or a list of pieces (an element with parts inside).
    """
    out: list = []
    for tag in sorted(item):
        part = item[tag]
        out.extend((part,) if isinstance(part, (bytes, bytearray, Part)) else part)
    return _joined(out)


def seq_pieces(tag: int, items: list) -> list:
    """A sequence of items that may hold parts, as pieces."""
    out = [head(tag, "SQ", 0xFFFFFFFF)]
    for item in items:
        out.append(ITEM_START)
        out.extend(pieces(item))
        out.append(ITEM_END)
    out.append(SEQ_END)
    return _joined(out)


def _joined(parts: list) -> list:
    out: list = []
    for part in parts:
        if isinstance(part, Part):
            out.append(part)
        elif out and not isinstance(out[-1], Part):
            out[-1] += part
        else:
            out.append(bytes(part))
    return out


def realize(parts: list, data, computed: dict) -> list:
    """``parts`` with raw parts taken from ``data`` (a classic file's bytes) and computed parts from ``computed``:
    bytes and slots."""
    out = []
    for part in parts:
        kind = type(part)
        if kind is Raw:
            out.append(data[part.start:part.end])
        elif kind is Computed:
            out.append(computed[part.kind])
        else:
            out.append(part)
    return _joined(out)


def split_template(parts: list) -> tuple:
    """(fixed byte strings, slot names): ``fixed[0] slot[0] fixed[1] ... slot[-1] fixed[-1]``."""
    fixed, names = [b""], []
    for part in parts:
        if isinstance(part, Slot):
            names.append(part.name)
            fixed.append(b"")
        else:
            fixed[-1] += part
    return fixed, names


# -- the output file ---------------------------------------------------------------------------------


class Output:
    """A new temporary file beside ``target``, written at offsets; ``commit`` links it to ``target``
    (never overwriting), ``discard`` removes it.

    ``fsync``: every written range goes to the disk's write-back at once, and ``commit`` flushes the
    file (and then its folder) to disk; otherwise the system writes it back when it likes.
    """

    def __init__(self, target: Path, fsync: bool = False):
        from dcmpipe.safefile import PART_SUFFIX, makedirs

        self.target = Path(target)
        makedirs(self.target.parent)
        self.path = self.target.parent / f".{self.target.name}.dcms2e.{os.getpid()}{PART_SUFFIX}"
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
        self.fsync = fsync
        self._advise = fsync and hasattr(os, "posix_fadvise")

    def reserve(self, size: int) -> None:
        """Allocate the file's ``size`` bytes now (ext4 then writes the pages back with less work each)."""
        preallocate(self.fd, size)

    def write(self, data, offset: int) -> None:
        """``data`` at ``offset``; with ``fsync`` its pages go to the disk's write-back queue at once (Linux)."""
        view = memoryview(data).cast("B")
        at, total = offset, view.nbytes
        while view:
            done = os.pwrite(self.fd, view, at)
            view, at = view[done:], at + done
        if self._advise and total:
            os.posix_fadvise(self.fd, offset, total, os.POSIX_FADV_DONTNEED)

    def commit(self) -> str:
        from ._philips_dicom import _commit_temp

        try:
            if self.fsync:
                os.fsync(self.fd)
        finally:
            os.close(self.fd)
            self.fd = -1
        return _commit_temp(self.path, self.target, sync_dir=self.fsync)

    def discard(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if os.path.lexists(self.path):
            os.unlink(self.path)


def _mapped(fd: int, length: int):
    """The first ``length`` bytes of an open file, memory-mapped read-only (None where that fails)."""
    import mmap

    if length <= 0:
        return None
    try:
        return mmap.mmap(fd, length, access=mmap.ACCESS_READ)
    except (OSError, ValueError, OverflowError):
        return None


def _release(mm, start: int, end: int) -> None:
    """Drop the pages of ``mm[start:end]`` from this process (they stay in the page cache): the memory the
    process holds stays a chunk, not the whole REC."""
    import mmap

    page = mmap.PAGESIZE
    start, end = start // page * page, min(len(mm), (end + page - 1) // page * page)
    if end > start and hasattr(mm, "madvise"):
        mm.madvise(mmap.MADV_DONTNEED, start, end - start)


def rec_extremes(rec_path: Path, size: int, count: int, bits: int, chunk_bytes: int = 16 << 20):
    """(min, max) of the stored values of each of the first ``count`` REC images (numpy arrays)."""
    import numpy as np

    dtype = np.uint8 if bits == 8 else np.dtype("<u2")
    mins = np.zeros(count, dtype=np.int64)
    maxs = np.zeros(count, dtype=np.int64)
    per_chunk = max(1, chunk_bytes // max(size, 1))
    fd = os.open(rec_path, os.O_RDONLY)
    mm = images = None
    try:
        if count * size > os.fstat(fd).st_size:
            raise PhilipsError(f"{rec_path}: pixel data ends early (truncated file?)")
        mm = _mapped(fd, count * size)
        buffer = None if mm is not None else bytearray(min(per_chunk, count) * size)
        for first in range(0, count, per_chunk):
            n = min(per_chunk, count - first)
            if mm is not None:
                images = np.frombuffer(mm, dtype=dtype, count=n * size // dtype.itemsize, offset=first * size)
            else:
                view = memoryview(buffer)[:n * size]
                if os.preadv(fd, [view], first * size) != n * size:
                    raise PhilipsError(f"{rec_path}: pixel data ends early (truncated file?)")
                images = np.frombuffer(view, dtype=dtype)
            images = images.reshape(n, -1)
            mins[first:first + n] = images.min(axis=1)
            maxs[first:first + n] = images.max(axis=1)
            del images
            if mm is not None:
                _release(mm, first * size, (first + n) * size)
    finally:
        images = None
        if mm is not None:
            try:
                mm.close()
            except BufferError:  # a view still held by a traceback: closed when collected
                pass
        os.close(fd)
    return mins, maxs


def _write_views(output: "Output", views: list, offset: int) -> None:
    """Write ``views`` (buffers, in order) at ``offset`` with as few ``pwritev`` calls as the system allows."""
    written = write_gathered(output.fd, views, offset)
    if output._advise and written:
        os.posix_fadvise(output.fd, offset, written, os.POSIX_FADV_DONTNEED)


def copy_frames(rec_path: Path, size: int, order, output: Output, offset: int,
                chunk_bytes: int = 16 << 20) -> None:
    """Write REC image ``order[k]`` (``size`` bytes each) as frame k at ``offset + k * size`` of ``output``.

    The REC is taken in its own order a chunk at a time (memory-mapped; a read buffer where mapping
    fails) and each run of consecutive frames goes out with one ``pwritev`` of the images' buffers,
    so the kernel gathers them: a BOLD run (REC dynamic-major, frames slice-major) takes a few
    hundred system calls and one copy of the pixel data.  Memory: one chunk of the REC.
    """
    import numpy as np

    order = np.asarray(order, dtype=np.int64)
    if not len(order):
        return
    by_source = np.argsort(order, kind="stable")  # frames in REC order
    sources = order[by_source]
    per_chunk = max(1, chunk_bytes // max(size, 1))
    fd = os.open(rec_path, os.O_RDONLY)
    mm = whole = source_view = None
    try:
        end = (int(sources[-1]) + 1) * size
        if int(sources[0]) < 0 or end > os.fstat(fd).st_size:
            raise PhilipsError(f"{rec_path}: pixel data ends early (truncated file?)")
        mm = _mapped(fd, end)
        whole = memoryview(mm) if mm is not None else None
        buffer = None if mm is not None else memoryview(bytearray(min(per_chunk, len(order)) * size))
        for start in range(0, len(order), per_chunk):
            frames = by_source[start:start + per_chunk]
            chunk_sources = sources[start:start + per_chunk]
            if whole is not None:
                base, source_view = 0, whole
            else:  # read the images the chunk needs, one read per run of consecutive images
                wanted = np.unique(chunk_sources)
                breaks = np.flatnonzero(np.diff(wanted) != 1) + 1
                filled = 0
                for run in np.split(wanted, breaks):
                    want = len(run) * size
                    got = os.preadv(fd, [buffer[filled * size:filled * size + want]], int(run[0]) * size)
                    if got != want:
                        raise PhilipsError(f"{rec_path}: pixel data ends early (truncated file?)")
                    filled += len(run)
                chunk_sources = np.searchsorted(wanted, chunk_sources)
                base, source_view = 0, buffer
            into = np.argsort(frames, kind="stable")  # the chunk's frames in file order
            targets = frames[into].tolist()
            images = chunk_sources[into].tolist()
            run_start = 0
            for k in range(1, len(targets) + 1):
                if k < len(targets) and targets[k] == targets[k - 1] + 1:
                    continue
                views, first_image, previous = [], images[run_start], images[run_start]
                for image in images[run_start + 1:k]:  # consecutive images: one buffer
                    if image != previous + 1:
                        views.append(source_view[base + first_image * size:base + (previous + 1) * size])
                        first_image = image
                    previous = image
                views.append(source_view[base + first_image * size:base + (previous + 1) * size])
                _write_views(output, views, offset + targets[run_start] * size)
                del views
                run_start = k
            if mm is not None:
                _release(mm, int(sources[start]) * size, (int(chunk_sources[-1]) + 1) * size)
    finally:
        whole = source_view = None
        if mm is not None:
            try:
                mm.close()
            except BufferError:  # a view still held by a traceback: closed when collected
                pass
        os.close(fd)
