"""parrec: read Philips PAR/REC as a source of a recipe.

Step: read ``parrec``.  Each image line of a PAR file becomes an item (or each
PAR file one item, ``items = "file"``) carrying the line's values, the general
information and where its pixels lie in the REC.  Tolerant as
../shared/philips/SPEC.md 1.7 asks: V4, V4.1 and V4.2, LF or CRLF, key
variants and third-party exporters, truncated acquisitions, images located by
their index column (not by their row).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from dcmpipe import Item, Reader, hookimpl, option


@dataclass(frozen=True)
class ParrecOptions:
    path: list[Path] = option(help="PAR files, or folders holding them (relative to the recipe's folder)")
    recursive: bool = option(False, help="look for PAR files in subfolders too")
    items: Literal["image", "file"] = option("image", help="one item per image line, or one per PAR file")


def _number(text: str):
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


class Parrec(Reader):
    """PAR/REC files: one item per image (its PAR columns, general information and REC location)."""

    id = "parrec"
    Options = ParrecOptions

    def _found(self):
        for root in self.options.path:
            if root.is_dir():
                walker = os.walk(root) if self.options.recursive else [(str(root), [], os.listdir(root))]
                for folder, subfolders, names in walker:
                    subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
                    for name in sorted(names):
                        if name.lower().endswith(".par") and not name.startswith("."):
                            yield Path(folder) / name
            else:
                yield root

    def read(self):
        from dcmpipe.plugins import _philips_par as par

        found = list(self._found())
        for path in found:
            try:
                parsed = par.read_par(path)
            except par.ParError as exc:
                item = Item(source=path, extra={"label": str(path)})
                item.status, item.reason = "failed", str(exc).removeprefix(f"{path}: ")
                yield item
                continue
            reordered = par.fix_offcentre_order(parsed)
            rec = par.rec_path_of(path)
            rec_size = rec.stat().st_size if rec is not None else 0
            general = {key: _number(value) for key, value in parsed.general.items()}
            header = {tag: general_value for key, tag in par.DICOM_OF_GENERAL.items()
                      if (general_value := parsed.get(key)) not in (None, "")}
            common = {"par": str(path), "rec": str(rec) if rec else None, "version": parsed.version,
                      "general": general, "offcentre_reordered": reordered}
            if self.options.items == "file":
                item = Item(source=path, header=dict(header), extra={**common, "images": parsed.records})
                if rec is None:
                    item.status, item.reason = "failed", "no REC file beside the PAR"
                yield item
                continue
            for row, record in enumerate(parsed.records):
                size = record["recon_x"] * record["recon_y"] * record["bits"] // 8
                offset = record["index"] * size
                image_header = dict(header)
                for key, tag in par.DICOM_OF_COLUMN.items():
                    image_header[tag] = record[key]
                image_header[0x00280030] = (record["spacing_y"], record["spacing_x"])  # rows, columns
                item = Item(source=path, header=image_header,
                            extra={**common, "row": row, "image": dict(record), "rec_offset": offset,
                                   "rec_bytes": size, "label": f"{path}#{row + 1}"})
                if rec is None:
                    item.status, item.reason = "failed", "no REC file beside the PAR"
                elif offset + size > rec_size:
                    item.status = "failed"
                    item.reason = (f"image line {row + 1} (index {record['index']}) lies beyond the end of "
                                   f"{rec.name} ({rec_size} bytes): truncated REC")
                yield item


def read_pixels(item):
    """The stored pixel values of one ``parrec`` image item as a (rows, columns) numpy array."""
    import numpy as np

    image = item.extra["image"]
    dtype = np.uint8 if image["bits"] == 8 else np.dtype("<u2")
    with open(item.extra["rec"], "rb") as fh:
        fh.seek(item.extra["rec_offset"])
        data = fh.read(item.extra["rec_bytes"])
    return np.frombuffer(data, dtype=dtype).reshape(image["recon_y"], image["recon_x"])


@hookimpl
def dcmpipe_readers():
    return [Parrec]
