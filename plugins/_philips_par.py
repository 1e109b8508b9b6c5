"""Philips PAR/REC: the console's text layout, written from Enhanced MR and read back.

Shared by the dcm2par, parrec and dcms2e plugins (not a plugin itself).
The rules follow ../shared/philips/SPEC.md section 1; what was checked byte for
byte against the console is said in docs/plugins/dcm2par.md.

Nothing here imports pydicom or numpy at module level.
"""

from __future__ import annotations

import math
import re

CRLF = "\r\n"
VERSIONS = ("4", "4.1", "4.2")

# -- enumerations (SPEC 1.4): Philips codes are 0-based indices ---------------

IMAGE_TYPES = ("M R I P CR T0 T1 T2 RHO SPECTRO DERIVED ADC RCBV RCBF MTT TTP FA EADC B0 DELAY MAXRELENH "
               "RELENH MAXENH WASHIN WASHOUT BREVENH AREACURV ANATOMIC T_TEST STD_DEVIATION PERFUSION "
               "T2_STAR R2 R2_STAR W IP OP F SPARE1 SPARE2").split()
SEQUENCES = "IR SE FFE DERIVED PCA UNSPECIFIED SPECTRO SI".split()
CONTRASTS = ("DIFFUSION FLOW_ENCODED FLUID_ATTENUATED PERFUSION PROTON_DENSITY STIR TAGGING T1 T2 T2_STAR "
             "TOF UNKNOWN MIXED").split()
DISPLAY = "NONE RIGHT90 RIGHT180 LEFT90 VM RIGHT90VM RIGHT180VM LEFT90VM".split()
ED_ES = {"ED": 0, "ES": 1, "U": 2}
ANISOTROPY = {"FRACTIONAL": 0, "RELATIVE": 1, "VOLUME_RATIO": 2, "": 0}
VIEW_AXIS = {"FH": 1, "RL": 2, "AP": 3}
PREP_DIR = {"AP": "Anterior-Posterior", "RL": "Right-Left", "FH": "Feet-Head"}
POSITIONS = {"HFS": "Head First Supine", "HFP": "Head First Prone", "FFS": "Feet First Supine",
             "FFP": "Feet First Prone", "HFDR": "Head First Decubitus Right",
             "HFDL": "Head First Decubitus Left", "FFDR": "Feet First Decubitus Right",
             "FFDL": "Feet First Decubitus Left"}
# Row order within one echo: real, imaginary, magnitude, phase, then the rest by code (SPEC 1.6).
TYPE_RANK = {1: 0, 2: 1, 0: 2, 3: 3}

# -- the fixed text of a console PAR (SPEC 1.1) ---------------------------------

HEAD = """# === DATA DESCRIPTION FILE ======================================================
#
# CAUTION - Investigational device.
# Limited by Federal Law to investigational use.
#
# Dataset name: {name}
#
# CLINICAL TRYOUT             Research image export tool     V{version}
#
# === GENERAL INFORMATION ========================================================
#"""

PIXEL_VALUES = """#
# === PIXEL VALUES =============================================================
#  PV = pixel value in REC file, FP = floating point value, DV = displayed value on console
#  RS = rescale slope,           RI = rescale intercept,    SS = scale slope
#  DV = PV * RS + RI             FP = DV / (RS * SS)
#
# === IMAGE INFORMATION DEFINITION =============================================
#  The rest of this file contains ONE line per image, this line contains the following information:
#"""

DEFINITIONS = [
    ("slice number", "integer"), ("echo number", "integer"), ("dynamic scan number", "integer"),
    ("cardiac phase number", "integer"), ("image_type_mr", "integer"), ("scanning sequence", "integer"),
    ("index in REC file (in images)", "integer"), ("image pixel size (in bits)", "integer"),
    ("scan percentage", "integer"), ("recon resolution (x y)", "2*integer"), ("rescale intercept", "float"),
    ("rescale slope", "float"), ("scale slope", "float"), ("window center", "integer"),
    ("window width", "integer"), ("image angulation (ap,fh,rl in degrees )", "3*float"),
    ("image offcentre (ap,fh,rl in mm )", "3*float"), ("slice thickness (in mm )", "float"),
    ("slice gap (in mm )", "float"), ("image_display_orientation", "integer"),
    ("slice orientation ( TRA/SAG/COR )", "integer"), ("fmri_status_indication", "integer"),
    ("image_type_ed_es  (end diast/end syst)", "integer"), ("pixel spacing (x,y) (in mm)", "2*float"),
    ("echo_time", "float"), ("dyn_scan_begin_time", "float"), ("trigger_time", "float"),
    ("diffusion_b_factor", "float"), ("number of averages", "integer"),
    ("image_flip_angle (in degrees)", "float"), ("cardiac frequency   (bpm)", "integer"),
    ("minimum RR-interval (in ms)", "integer"), ("maximum RR-interval (in ms)", "integer"),
    ("TURBO factor  <0=no turbo>", "integer"), ("Inversion delay (in ms)", "float"),
    # V4.1
    ("diffusion b value number    (imagekey!)", "integer"), ("gradient orientation number (imagekey!)", "integer"),
    ("contrast type", "string"), ("diffusion anisotropy type", "string"), ("diffusion (ap, fh, rl)", "3*float"),
    # V4.2
    ("label type (ASL)            (imagekey!)", "integer"),
]
N_DEFINITIONS = {"4": 35, "4.1": 40, "4.2": 41}
N_COLUMNS = {"4": 41, "4.1": 48, "4.2": 49}

COLUMN_HEADER = ("#  sl ec  dyn ph ty    idx pix scan% rec size                (re)scale              window"
                 "        angulation              offcentre        thick   gap   info      spacing     echo"
                 "     dtime   ttime    diff  avg  flip    freq   RR-int  turbo delay")
COLUMN_HEADER_41 = " b grad cont anis         diffusion"
COLUMN_HEADER_42 = "       L.ty"

IMAGE_BANNER = "# === IMAGE INFORMATION =========================================================="
END_BANNER = "# === END OF DATA DESCRIPTION FILE ==============================================="

GENERAL_KEYS = [
    "Patient name", "Examination name", "Protocol name", "Examination date/time", "Series Type",
    "Acquisition nr", "Reconstruction nr", "Scan Duration [sec]", "Max. number of cardiac phases",
    "Max. number of echoes", "Max. number of slices/locations", "Max. number of dynamics",
    "Max. number of mixes", "Patient position", "Preparation direction", "Technique",
    "Scan resolution  (x, y)", "Scan mode", "Repetition time [ms]", "FOV (ap,fh,rl) [mm]",
    "Water Fat shift [pixels]", "Angulation midslice(ap,fh,rl)[degr]", "Off Centre midslice(ap,fh,rl) [mm]",
    "Flow compensation <0=no 1=yes> ?", "Presaturation     <0=no 1=yes> ?", "Phase encoding velocity [cm/sec]",
    "MTC               <0=no 1=yes> ?", "SPIR              <0=no 1=yes> ?", "EPI factor        <0,1=no EPI>",
    "Dynamic scan      <0=no 1=yes> ?", "Diffusion         <0=no 1=yes> ?", "Diffusion echo time [ms]",
    # V4.1
    "Max. number of diffusion values", "Max. number of gradient orients",
    # V4.2
    "Number of label types   <0=no ASL>",
]
N_GENERAL = {"4": 32, "4.1": 34, "4.2": 35}

# One image line: the column fields of SPEC 1.3 as (name, V4.2 format, V4.1 format, V4 format).
# Names are the keys of an image record (a dict); a pair of fields shares one name with a suffix.
LINE_FORMAT = [
    ("slice", "%3d", "%3d", "%3d"),
    ("echo", " %3d", " %2d", " %2d"),
    ("dynamic", " %4d", " %3d", " %3d"),
    ("phase", " %2d", " %2d", " %2d"),
    ("type", " %1d", " %1d", " %1d"),
    ("sequence", " %1d", " %1d", " %1d"),
    ("index", " %5d", " %3d", " %3d"),
    ("bits", " %3d", " %2d", " %2d"),
    ("scan_percentage", " %5d", " %3d", " %3d"),
    ("recon_x", " %4d", "  %d", "  %d"),
    ("recon_y", " %4d", " %d", " %d"),
    ("rescale_intercept", " %11.5f", " %9.5f", " %6.1f"),
    ("rescale_slope", " %9.5f", " %9.5f", " %6.3f"),
    ("scale_slope", " %E3", " %E3", " %10.3e"),
    ("window_center", " %5d", " %5d", " %5d"),
    ("window_width", " %5d", " %5d", " %5d"),
    ("angulation_ap", " %6.2f", " %6.2f", " %5.1f"),
    ("angulation_fh", " %6.2f", " %6.2f", " %5.1f"),
    ("angulation_rl", " %6.2f", " %6.2f", " %5.1f"),
    ("offcentre_ap", " %7.2f", " %7.2f", " %6.1f"),
    ("offcentre_fh", " %7.2f", " %7.2f", " %6.1f"),
    ("offcentre_rl", " %7.2f", " %7.2f", " %6.1f"),
    ("thickness", " %6.3f", " %6.3f", " %4.1f"),
    ("gap", " %6.3f", " %6.3f", " %.1f"),
    ("display_orientation", " %1d", " %1d", " %1d"),
    ("slice_orientation", " %1d", " %1d", " %1d"),
    ("fmri_status", " %1d", " %1d", " %1d"),
    ("ed_es", " %1d", " %1d", " %1d"),
    ("spacing_x", " %6.3f", " %6.3f", "  %5.3f"),
    ("spacing_y", " %6.3f", " %6.3f", "  %5.3f"),
    ("echo_time", " %6.2f", " %5.2f", " %5.1f"),
    ("dyn_time", " %7.2f", " %7.2f", " %5.1f"),
    ("trigger_time", " %8.2f", " %7.2f", " %5.1f"),
    ("b_factor", " %7.2f", " %7.2f", " %6.3f"),
    ("averages", " %3d", " %3d", " %d"),
    ("flip_angle", " %7.2f", " %7.2f", " %5.1f"),
    ("heart_rate", " %5d", " %5d", " %3d"),
    ("rr_low", " %4d", " %4d", " %4d"),
    ("rr_high", " %4d", " %4d", " %d"),
    ("turbo", " %5d", " %5d", " %2d"),
    ("inversion_delay", " %5.1f", " %5.1f", " %5.1f"),
    ("b_number", " %2d", " %d", None),
    ("gradient_number", " %3d", " %4d", None),
    ("contrast", " %4d", " %4d", None),
    ("anisotropy", " %4d", " %4d", None),
    ("diffusion_ap", " %7.3f", " %8.3f", None),
    ("diffusion_fh", " %8.3f", " %8.3f", None),
    ("diffusion_rl", " %8.3f", " %8.3f", None),
    ("label", " %2d", None, None),
]
COLUMNS = [name for name, *_ in LINE_FORMAT]
INT_COLUMNS = {name for name, f42, *_ in LINE_FORMAT if f42.endswith("d")}
_FORMAT_INDEX = {"4.2": 0, "4.1": 1, "4": 2}


def _e3(value: float) -> str:
    """``%.5e`` with a 3-digit exponent, as the Windows C library prints it: 4.28404e-003."""
    text = "%.5e" % value
    mantissa, exponent = text.split("e")
    return "%se%s%03d" % (mantissa, exponent[0], abs(int(exponent)))


def line_formatter(version: str):
    """A function that formats one image record (a dict) as a PAR line of ``version``."""
    names, pieces, e3 = [], [], None
    for name, *formats in LINE_FORMAT:
        fmt = formats[_FORMAT_INDEX[version]]
        if fmt is None:
            continue
        if fmt.endswith("E3"):
            e3 = len(names)
            fmt = fmt[:-3] + "%s"
        names.append(name)
        pieces.append(fmt)
    line = "".join(pieces)  # one % operation per line: %d truncates floats as the console does

    def fmt_line(record: dict) -> str:
        values = [record[name] for name in names]
        if e3 is not None:
            values[e3] = _e3(values[e3])
        return line % tuple(values)

    return fmt_line


def row_sort_key(mode3d: bool, record: dict) -> tuple:
    """The console's row order, slowest key first (SPEC 1.6)."""
    type_rank = TYPE_RANK.get(record["type"], 4 + record["type"])
    if mode3d:
        return (record["dynamic"], record["slice"], record["label"], record["phase"], record["gradient_number"],
                record["b_number"], record["echo"], type_rank, record["sequence"])
    return (record["dynamic"], record["phase"], record["label"], record["gradient_number"], record["b_number"],
            record["echo"], type_rank, record["sequence"], record["slice"])


def general_line(key: str, value: str) -> str:
    return ".    " + key.ljust(35) + ":   " + value


def format_par(general: dict, records: list[dict], version: str = "4.2", dataset_name: str = "") -> bytes:
    """The whole PAR file (latin-1, CRLF) for ``general`` values and ordered image ``records``."""
    if version not in VERSIONS:
        raise ValueError(f"PAR version must be one of {', '.join(VERSIONS)}, not {version!r}")
    from ._philips_fast import Col, image_lines

    names = [name for name, *formats in LINE_FORMAT if formats[_FORMAT_INDEX[version]] is not None]
    columns = {name: Col.of([r[name] for r in records]) for name in names}
    # Rows in the order given; the index column is taken from the records (a reader locates images by it).
    columns["index"] = Col.of([r["index"] for r in records])
    return par_text(general, image_lines(columns, list(range(len(records))), version), version, dataset_name)


def par_text(general: dict, lines: list[str], version: str = "4.2", dataset_name: str = "") -> bytes:
    """The whole PAR file (latin-1, CRLF) for ``general`` values and the image ``lines`` in row order."""
    if version not in VERSIONS:
        raise ValueError(f"PAR version must be one of {', '.join(VERSIONS)}, not {version!r}")
    head = HEAD.format(name=dataset_name, version=version).split("\n")
    for key in GENERAL_KEYS[:N_GENERAL[version]]:
        head.append(general_line(key, general[key]))
    head += PIXEL_VALUES.split("\n")
    for description, kind in DEFINITIONS[:N_DEFINITIONS[version]]:
        head.append("#  " + description.ljust(40) + " (" + kind + ")")
    head += ["#", IMAGE_BANNER]
    header = COLUMN_HEADER
    if version in ("4.1", "4.2"):
        header += COLUMN_HEADER_41
    if version == "4.2":
        header += COLUMN_HEADER_42
    head += [header, ""]
    return CRLF.join(head + lines + ["", END_BANNER, ""]).encode("latin-1", errors="replace")


def map_distinct(function, values: list) -> list:
    """``[function(v) for v in values]``, calling ``function`` once per distinct value.

    Values that are equal but not the same number (-0.0 and 0.0; NaN) are mapped one by one.
    """
    try:
        distinct = set(values)
    except TypeError:  # unhashable values (lists): one by one
        return [function(v) for v in values]
    if len(distinct) == len(values):
        return [function(v) for v in values]
    if (0 in distinct and _has_negative_zero(values)) or any(v != v for v in distinct):
        return [function(v) for v in values]
    memo = {v: function(v) for v in distinct}
    return list(map(memo.__getitem__, values))


def _has_negative_zero(values: list) -> bool:
    import numpy as np

    try:
        numbers = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        return True  # cannot tell: the caller maps one by one
    return bool(np.any((numbers == 0) & np.signbit(numbers)))


# -- reading PAR (SPEC 1.7: tolerant) -------------------------------------------


class ParError(ValueError):
    """A PAR file that cannot be read; the message says why."""


class ParFile:
    """A parsed PAR header: version, general information and the image lines.

    The image lines are kept as ``columns`` (name -> numpy array, one value per line) when they were
    parsed with numpy (long PARs), else as ``records`` (one dict per line); either is made from the
    other on first use, so callers may use whichever suits them.
    """

    def __init__(self, version: str, general: dict, records: list[dict] | None = None, dataset_name: str = "",
                 general_lower: dict | None = None, columns: dict | None = None):
        self.version, self.general, self.dataset_name = version, general, dataset_name
        self.general_lower = general_lower if general_lower is not None else {}
        self._records, self._columns = records, columns

    @property
    def records(self) -> list[dict]:
        """One dict per image line, keys = COLUMNS (plus label/b_number/gradient_number for V4/V4.1)."""
        if self._records is None:
            names = list(self._columns)
            lists = [self._columns[name].tolist() for name in names]
            self._records = [dict(zip(names, values)) for values in zip(*lists)]
        return self._records

    @records.setter
    def records(self, records: list[dict]) -> None:
        self._records, self._columns = records, None

    @property
    def columns(self) -> dict:
        """name -> numpy array of that column (int64 for integer and enumerated columns, else float64)."""
        if self._columns is None:
            import numpy as np

            records = self._records
            self._columns = {name: np.asarray([r[name] for r in records],
                                              dtype=np.int64 if name in INT_COLUMNS or name in _ENUMS
                                              else np.float64)
                             for name in (records[0] if records else {})}
        return self._columns

    def __len__(self) -> int:
        return len(self._records) if self._records is not None else len(next(iter(self._columns.values())))

    def get(self, key: str, default=None):
        """A general-information value by key, case-insensitively and ignoring units in brackets."""
        return self.general_lower.get(_norm_key(key), default)

    def image_bytes(self) -> int:
        if self._records is not None:
            first = self._records[0]
            return first["recon_x"] * first["recon_y"] * first["bits"] // 8
        c = self._columns
        return int(c["recon_x"][0]) * int(c["recon_y"][0]) * int(c["bits"][0]) // 8


def _norm_key(key: str) -> str:
    key = key.lower().replace("_", " ")
    key = re.sub(r"\[.*?\]|<.*?>|\(.*?\)|\?", "", key)
    return " ".join(key.split())


_VERSION_RE = re.compile(r"image export tool\s+V?(\d+(?:\.\d+)?)", re.I)
_ENUMS = {"contrast": {name: i for i, name in enumerate(CONTRASTS)}, "anisotropy": ANISOTROPY}
# Above about this many lines after the image banner, the image lines are parsed with numpy (the import
# costs about 0.07 s; 20,000 lines then take 0.03 s instead of 0.35 s).
FAST_LINES = 2000


class _HeadState:
    """What the line-by-line reading collects: version, general values, dataset name, image rows."""

    def __init__(self):
        self.version = None
        self.general: dict = {}
        self.dataset_name = ""
        self.image_part = False
        self.rows: list[list[str]] = []

    def feed(self, lines) -> None:
        for line in lines:
            stripped = line.strip()
            if not stripped:
                continue
            if stripped.startswith("#"):
                match = _VERSION_RE.search(stripped)
                if match and self.version is None:
                    self.version = match.group(1)
                if "dataset name:" in stripped.lower():
                    self.dataset_name = stripped.split(":", 1)[1].strip()
                if "IMAGE INFORMATION" in stripped and "DEFINITION" not in stripped:
                    self.image_part = True
                continue
            if stripped.startswith("."):
                key, sep, value = stripped[1:].partition(":")
                if sep:
                    self.general[key.strip()] = value.strip()
                continue
            if self.image_part and (stripped[0].isdigit() or stripped[0] == "-"):
                self.rows.append(stripped.split())

    def copy(self) -> "_HeadState":
        other = _HeadState()
        other.version, other.general, other.dataset_name = self.version, dict(self.general), self.dataset_name
        other.image_part, other.rows = self.image_part, list(self.rows)
        return other

    def checked_version(self, name: str) -> str:
        version = self.version
        if version is None:
            raise ParError(f"{name}: not a PAR file (no 'image export tool' version line)")
        if version not in VERSIONS:
            version = "4.2" if version.startswith("4.2") else "4.1" if version.startswith("4.1") else "4"
        return version


def parse_par(text, name: str = "PAR", fast: bool | None = None) -> ParFile:
    """Parse PAR text (str, or bytes read as latin-1): LF or CRLF, key variants, image lines located by
    their index column.

    ``fast``: parse the image lines with numpy (None: when there are many); the result is the same
    either way (the numpy reading gives up, and the lines are read one by one, on anything unusual).
    """
    data = text
    if isinstance(text, str):
        try:
            data = text.encode("latin-1")
        except UnicodeEncodeError:  # not a file's latin-1 text: line by line
            data, fast = None, False
    banner = _banner_end(data) if data is not None else None
    if fast is None:  # image lines are about 100 (V4) to 300 (V4.2) bytes long
        fast = banner is not None and len(data) - banner > FAST_LINES * 100
    if fast and banner is not None:
        parsed = _parse_columns(data, banner, name)
        if parsed is not None:
            return parsed
    if not isinstance(text, str):
        text = text.decode("latin-1")
    state = _HeadState()
    state.feed(text.splitlines())
    version = state.checked_version(name)
    rows = state.rows
    if not rows:
        raise ParError(f"{name}: no image lines")
    ncols = N_COLUMNS[version]  # one whitespace-separated field per column, never fixed widths
    for number, row in enumerate(rows, 1):
        if len(row) < ncols:
            raise ParError(f"{name}: image line {number} has {len(row)} fields, V{version} needs {ncols}")
    records = _records_of(rows, version)
    general_lower = {_norm_key(k): v for k, v in state.general.items()}
    return ParFile(version, state.general, records, state.dataset_name, general_lower)


def _banner_end(data: bytes):
    """Where the line after the image banner (a '#' line with IMAGE INFORMATION, not DEFINITION) starts."""
    at = 0
    while True:
        at = data.find(b"IMAGE INFORMATION", at)
        if at < 0:
            return None
        start = data.rfind(b"\n", 0, at) + 1
        end = data.find(b"\n", at)
        end = len(data) if end < 0 else end + 1
        stripped = data[start:end].decode("latin-1").strip()
        if stripped.startswith("#") and "DEFINITION" not in stripped:
            return end
        at = end


def _parse_columns(data: bytes, banner: int, name: str):
    """``parse_par`` with the image lines read as numpy columns; None if anything is unusual.

    The console writes the image lines as a table (every line as long, every field ending in the
    same column): then each column is a slice of the lines' bytes.  Other layouts are split into
    tokens first.  Lines that are not image lines go through the line-by-line reading (a few).
    """
    import numpy as np

    state = _HeadState()
    state.feed(data[:banner].decode("latin-1").splitlines())
    if not state.image_part:
        return None
    ch = np.frombuffer(data, dtype=np.uint8, offset=banner)
    # Tokens are split at bytes <= 32: control characters other than tab/CR/LF/0x1F, NEL and NBSP
    # (line breaks or white space to str methods) and CR without LF go the line-by-line way.
    low = np.flatnonzero(ch < 32)
    kind = ch[low]
    if ((kind != 10) & (kind != 13) & (kind != 9) & (kind != 31)).any():
        return None
    high = np.flatnonzero(ch >= 0x85)
    if len(high) and ((ch[high] == 0x85) | (ch[high] == 0xA0)).any():
        return None
    cr = low[kind == 13]
    if len(cr) and (cr[-1] + 1 >= len(ch) or not (ch[cr + 1] == 10).all()):
        return None
    line_starts = np.concatenate(([0], low[kind == 10] + 1))
    line_ends = np.append(line_starts[1:], len(ch))
    for split in (_table, _tokens):
        found = split(ch, line_starts, line_ends)
        parsed = None if found is None else _parsed(data, banner, name, state.copy(), line_starts, line_ends, *found)
        if parsed is not None:
            return parsed
    return None


def _parsed(data: bytes, banner: int, name: str, state, line_starts, line_ends, image_lines, fields):
    """The ParFile of image lines ``image_lines`` (line numbers) whose columns ``fields(ncols)`` gives."""
    import numpy as np

    image = np.zeros(len(line_starts), dtype=bool)
    image[image_lines] = True
    state.feed([data[banner + a:banner + b].decode("latin-1")
                for a, b, is_image in zip(line_starts.tolist(), line_ends.tolist(), image.tolist()) if not is_image])
    if state.rows:  # a line the numpy reading does not see as an image line, but str methods do
        return None
    version = state.checked_version(name)
    ncols = N_COLUMNS[version]
    matrices = fields(ncols)
    if matrices is None:
        return None  # short or long lines: the line-by-line reading says what is wrong
    columns = {}
    for column, (matrix, constant, right_aligned) in zip(COLUMNS[:ncols], matrices):
        kind = "enum" if column in _ENUMS else "int" if column in INT_COLUMNS else "float"
        values = _column_values(matrix, kind, right_aligned, constant)
        if values is None:
            return None
        columns[column] = values
    n = len(image_lines)
    for column in ("label", "b_number", "gradient_number"):
        columns.setdefault(column, np.ones(n, dtype=np.int64))
    general_lower = {_norm_key(k): v for k, v in state.general.items()}
    return ParFile(version, state.general, None, state.dataset_name, general_lower, columns=columns)


def _table(ch, line_starts, line_ends):
    """(image line numbers, fields) when the longest run of lines of one length is a table of image lines
    whose fields all end in the same columns; else None."""
    import numpy as np

    lengths = line_ends - line_starts
    if len(lengths) < 2:
        return None
    change = np.flatnonzero(lengths[1:] != lengths[:-1]) + 1
    run_starts = np.concatenate(([0], change))
    run_lengths = np.diff(np.append(run_starts, len(lengths)))
    longest = int(np.argmax(run_lengths))
    first, n = int(run_starts[longest]), int(run_lengths[longest])
    width = int(lengths[first])
    if n < 2 or width < 2:
        return None
    table = ch[line_starts[first]:line_starts[first] + n * width].reshape(n, width)
    solid = table > 32
    ends = solid.copy()  # a token ends where the next byte is white space (or the line ends)
    ends[:, :-1] &= ~solid[:, 1:]
    if not (ends.all(axis=0) | ~ends.any(axis=0)).all():  # the same in every line
        return None
    field_ends = np.flatnonzero(ends[0]).tolist()
    lead = table[np.arange(n), np.argmax(solid[:, :field_ends[0] + 1], axis=1)] if field_ends else None
    if lead is None or not (((lead >= 48) & (lead <= 57)) | (lead == 45)).all():
        return None
    constant = table.min(axis=0) == table.max(axis=0)  # bytes alike in every line

    def fields(ncols):
        if len(field_ends) != ncols:
            return None
        bounds = [0] + [e + 1 for e in field_ends]
        return [(table[:, a:b], bool(constant[a:b].all()), True) for a, b in zip(bounds[:-1], bounds[1:])]

    return np.arange(first, first + n), fields


def _tokens(ch, line_starts, line_ends):
    """(image line numbers, fields) from the lines split into tokens at white space; None if no image lines."""
    import numpy as np

    space = np.ones(len(ch) + 1, dtype=bool)
    space[1:] = ch <= 32
    edge = np.empty(len(ch) + 1, dtype=bool)
    edge[:-1] = space[1:] != space[:-1]
    edge[-1] = not space[-1]
    bounds = np.flatnonzero(edge)  # token start, token end, start, end, ...
    starts, ends = bounds[0::2], bounds[1::2]
    first = np.searchsorted(starts, line_starts)  # the first token of each line
    counts = np.diff(np.append(first, len(starts)))
    filled = np.flatnonzero(counts)
    lead = ch[starts[first[filled]]]
    image = filled[((lead >= 48) & (lead <= 57)) | (lead == 45)]
    if not len(image):
        return None
    padded = np.concatenate((ch, np.zeros(64, dtype=np.uint8)))

    def fields(ncols):
        if (counts[image] != ncols).any():
            return None
        tokens = first[image][:, None] + np.arange(ncols)
        token_starts, token_ends = starts[tokens], ends[tokens]
        out = []
        for k in range(ncols):
            a, b = token_starts[:, k], token_ends[:, k]
            w = int((b - a).max())
            if w > 60:
                return None
            offsets = np.arange(w)
            matrix = padded[a[:, None] + offsets]
            matrix[offsets >= (b - a)[:, None]] = 0  # NUL: ignored by the 'S' type
            out.append((matrix, False, False))
        return out

    return image, fields


def _column_values(matrix, kind: str, right_aligned: bool, constant: bool = False):
    """One column's texts (rows of ``matrix``, NUL-padded or right-aligned between blanks) converted as
    ``_CONVERTERS`` would; None if not alike.  ``constant``: every row holds the same bytes."""
    import numpy as np

    try:
        if constant:  # one distinct text (most columns): converted once
            text = matrix[0].tobytes().decode("latin-1").strip("\0")
            value = float(text) if kind == "float" else _int(text)
            return np.full(len(matrix), value, dtype=np.float64 if kind == "float" else np.int64)
        if right_aligned:  # the console's plain numbers, converted with numpy
            if kind != "float":
                numbers = _plain_numbers(matrix, decimals=False)
                if numbers is not None:
                    return numbers
            numbers = _plain_numbers(matrix, decimals=True)
            if numbers is not None:
                return numbers if kind == "float" else np.trunc(numbers).astype(np.int64)
        matrix = np.ascontiguousarray(matrix)
        texts = matrix.view(f"S{matrix.shape[1]}").ravel()
        if (texts == texts[0]).all():
            text = texts[0].decode("latin-1")
            value = float(text) if kind == "float" else _int(text)
            return np.full(len(texts), value, dtype=np.float64 if kind == "float" else np.int64)
        if kind == "float":
            return texts.astype(np.float64)
        if kind == "int":
            try:
                return texts.astype(np.int64)
            except ValueError:  # '3.0' in an integer column: int(float(text)), as _int does
                pass
        numbers = texts.astype(np.float64)
        if not np.isfinite(numbers).all() or (np.abs(numbers) >= 2.0 ** 62).any():
            return None
        return np.trunc(numbers).astype(np.int64)
    except (ValueError, OverflowError):
        return None


def _plain_numbers(matrix, decimals: bool):
    """Right-aligned numbers (white space, an optional '-', digits, with ``decimals`` one optional '.'):
    int64 (``decimals`` False) or float64 equal to Python's ``int()``/``float()`` of each text; None for
    anything else.  A decimal is its digits as an integer divided by a power of ten: both exact below
    2**53 and 10**22, so the one rounding of the division gives the correctly rounded value, as float()."""
    import numpy as np

    n, width = matrix.shape
    if width > 40:
        return None
    chars = np.ascontiguousarray(matrix.T)  # one row per character place: reductions add whole rows
    digit_value = chars - np.uint8(48)  # wraps below '0'
    digit = digit_value <= 9
    dot = chars == 46
    body = digit | dot if decimals else digit
    if not body[-1].all() or (body[:-1] > body[1:]).any():
        return None  # the number must end the field and be all digits (and a dot) once begun
    start = width - body.sum(axis=0)
    other = ~(body | (chars <= 32))  # before the number: white space and one '-' just before it
    negative = np.zeros(n, dtype=bool)
    if other.any():
        if (other.sum(axis=0) > 1).any() or (chars[start - 1, np.arange(n)][other.any(axis=0)] != 45).any():
            return None
        negative = other.any(axis=0)
    count = digit.sum(axis=0)
    if not (count > 0).all() or count.max() > (15 if decimals else 18):
        return None
    dots_before = np.zeros(n, dtype=np.int64)  # dots at or right of the place: digits left of a dot count one less
    mantissa = np.zeros(n, dtype=np.int64)
    for place in range(width - 1, -1, -1):
        if decimals:
            dots_before += dot[place]
        power = 10 ** (width - 1 - place)
        values = np.where(digit[place], digit_value[place], 0).astype(np.int64)
        if decimals:
            mantissa += values * (power // 10 ** dots_before) if dots_before.any() else values * power
        else:
            mantissa += values * power
    if not decimals:
        return np.where(negative, -mantissa, mantissa)
    if (dots_before > 1).any():
        return None
    fraction = np.where(dots_before > 0, width - 1 - np.argmax(dot, axis=0), 0)
    values = mantissa / (10.0 ** fraction)
    return np.where(negative, -values, values)


def _enum(table):
    def convert(text):
        try:
            return int(float(text))
        except ValueError:
            return table.get(text.upper(), 0)
    return convert


def _int(text):
    try:
        return int(text)
    except ValueError:
        return int(float(text))


_CONVERTERS = {version: [(name, _enum(_ENUMS[name]) if name in _ENUMS else _int if name in INT_COLUMNS else float)
                         for name in COLUMNS[:N_COLUMNS[version]]] for version in VERSIONS}


def _records_of(rows: list[list[str]], version: str) -> list[dict]:
    """The records of image lines (split into fields): converted column by column, each distinct text once."""
    names, columns = [], []
    for (name, convert), texts in zip(_CONVERTERS[version], zip(*rows)):
        names.append(name)
        columns.append(map_distinct(convert, texts))
    for name in ("label", "b_number", "gradient_number"):
        if name not in names:
            names.append(name)
            columns.append([1] * len(rows))
    return [dict(zip(names, values)) for values in zip(*columns)]


def _record_of(fields: list[str], version: str) -> dict:
    record = {name: convert(text) for (name, convert), text in zip(_CONVERTERS[version], fields)}
    record.setdefault("label", 1)
    record.setdefault("b_number", 1)
    record.setdefault("gradient_number", 1)
    return record


def fix_offcentre_order(par: ParFile) -> bool:
    """Some V4 exports list image offcentres as (rl, ap, fh); detect and reorder (SPEC 1.7).

    Returns True when the columns were reordered.
    """
    if par.version != "4":
        return False
    text = par.get("Off Centre midslice(ap,fh,rl) [mm]")
    try:
        ap, fh, rl = (float(v) for v in (text or "").split())
    except ValueError:
        return False
    names = ("offcentre_ap", "offcentre_fh", "offcentre_rl")
    if par._records is not None:
        mean = [sum(r[k] for r in par._records) / len(par._records) for k in names]
    else:
        mean = [sum(par._columns[k].tolist()) / len(par) for k in names]
    as_is = abs(mean[0] - ap) + abs(mean[1] - fh) + abs(mean[2] - rl)
    rotated = abs(mean[1] - ap) + abs(mean[2] - fh) + abs(mean[0] - rl)
    if rotated + 1e-6 < as_is:
        if par._records is not None:
            for r in par._records:
                r["offcentre_ap"], r["offcentre_fh"], r["offcentre_rl"] = (r["offcentre_fh"], r["offcentre_rl"],
                                                                           r["offcentre_ap"])
        if par._columns is not None:
            c = par._columns
            c["offcentre_ap"], c["offcentre_fh"], c["offcentre_rl"] = (c["offcentre_fh"], c["offcentre_rl"],
                                                                       c["offcentre_ap"])
        return True
    return False


def fmt_float_list(values, fmt: str, sep: str = "  ", trailing: str = "") -> str:
    return sep.join(fmt % v for v in values) + trailing


def scan_duration(seconds: float, release: int) -> str:
    """Scan Duration as the console prints it (SPEC 1.2 row 8, A3)."""
    if release >= 5:
        return "%.2f" % seconds
    text = "%.1f" % (math.floor(seconds * 10 + 0.5) / 10)
    return text[:-2] if text.endswith(".0") else text


def read_par(path) -> ParFile:
    """Parse the PAR file at ``path`` (latin-1; any line ends)."""
    from pathlib import Path

    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ParError(f"{path}: {exc.strerror or exc}") from None
    return parse_par(data, str(path))


def rec_path_of(par_path):
    """The REC beside a PAR: same stem, extension in the PAR's own case (.REC/.rec), else either."""
    from pathlib import Path

    par_path = Path(par_path)
    for suffix in (par_path.suffix[0] + ("REC" if par_path.suffix[1:].isupper() else "rec"), ".REC", ".rec"):
        candidate = par_path.with_suffix(suffix)
        if candidate.exists():
            return candidate
    return None


# Image columns as DICOM attributes, for the parrec reader's items (item.get works as for DICOM).
DICOM_OF_COLUMN = {
    "echo": 0x00180086, "dynamic": 0x00200100, "recon_x": 0x00280011, "recon_y": 0x00280010,
    "bits": 0x00280100, "rescale_intercept": 0x00281052, "rescale_slope": 0x00281053,
    "window_center": 0x00281050, "window_width": 0x00281051, "thickness": 0x00180050,
    "echo_time": 0x00180081, "trigger_time": 0x00181060, "averages": 0x00180083, "flip_angle": 0x00181314,
    "heart_rate": 0x00181088, "rr_low": 0x00181081, "rr_high": 0x00181082, "turbo": 0x00180091,
    "inversion_delay": 0x00180082,
}
DICOM_OF_GENERAL = {
    "patient name": 0x00100010, "examination name": 0x00081030, "protocol name": 0x00181030,
    "acquisition nr": 0x00200012,
}
