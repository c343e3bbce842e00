"""Re-render one recorded item from its metadata row and compare it with the image on disk."""

from __future__ import annotations

import csv
import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from .errors import BatchEditError
from .formats import as_stored
from .outputs import STATE_DIR
from .pipeline_config import PipelineConfig, load_pipeline_config
from .plan import WorkItem
from .sources import FetchOptions, SourceError, fit_image, load_image, source_ref


class ReproduceError(BatchEditError):
    """The item, its image, its source or its pipeline config cannot be found."""


@dataclass(frozen=True)
class Comparison:
    item_id: str
    stored: Path
    max_difference: int  # largest per-channel difference, out of 255
    differing_fraction: float  # share of pixels with any difference
    size_matches: bool

    @property
    def identical(self) -> bool:
        return self.size_matches and self.max_difference == 0


def reproduce(
    metadata_csv: Path,
    item_id: str,
    config_path: Path | None,
    load_engine: Callable[[PipelineConfig], object],
    fetch: FetchOptions = FetchOptions(),
) -> Comparison:
    folder = metadata_csv.parent
    row = find_row(metadata_csv, item_id)
    config = load_pipeline_config(config_path or _recorded_config(folder))
    item = item_from_row(row)
    try:
        source = fit_image(load_image(item.source, fetch), item.width, item.height, item.resize)
    except SourceError as exc:
        raise ReproduceError(f"cannot load the source {item.source.key}: {exc}") from None
    engine = load_engine(config)
    # Same batch size as the original call: on a GPU, results repeat bitwise only at the same batch size.
    copies = max(1, int(row.get("batch_size") or 1))
    (image, *_) = engine.generate([item] * copies, [source] * copies)
    return compare(image, folder / row["file_name"], item_id)


def find_row(metadata_csv: Path, item_id: str) -> dict:
    try:
        with metadata_csv.open(encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle))
    except FileNotFoundError:
        raise ReproduceError(f"{metadata_csv}: file not found") from None
    for row in rows:
        if row.get("item_id") == item_id:
            return row
    close = difflib.get_close_matches(item_id, [row.get("item_id", "") for row in rows], n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise ReproduceError(f"{metadata_csv}: no item {item_id!r}{hint}")


def item_from_row(row: dict) -> WorkItem:
    ref = source_ref(row["source"], Path("/"))
    return WorkItem(
        job=row["job"],
        item_id=row["item_id"],
        source=ref,
        prompt=row["prompt"],
        strength=float(row["strength"]),
        num_inference_steps=int(row["num_inference_steps"]),
        guidance_scale=float(row["guidance_scale"]),
        seed=int(row["seed"]),
        seed_derived=row["seed_derived"] == "True",
        width=int(row["requested_width"]),
        height=int(row["requested_height"]),
        resize=row["resize"],
    )


def compare(image: Image.Image, stored_path: Path, item_id: str) -> Comparison:
    try:
        with Image.open(stored_path) as stored:
            stored_pixels = np.asarray(stored.convert("RGB"), dtype=np.int16)
            image = as_stored(image, stored)  # jpeg/webp: compared after the same lossy encoding
    except (FileNotFoundError, OSError) as exc:
        raise ReproduceError(f"cannot read the stored image {stored_path}: {exc}") from None
    pixels = np.asarray(image.convert("RGB"), dtype=np.int16)
    if pixels.shape != stored_pixels.shape:
        return Comparison(item_id, stored_path, 255, 1.0, size_matches=False)
    difference = np.abs(pixels - stored_pixels)
    return Comparison(
        item_id, stored_path, int(difference.max()), float((difference.max(axis=2) > 0).mean()), size_matches=True
    )


def _recorded_config(folder: Path) -> Path:
    path = folder / STATE_DIR / "pipeline.yaml"
    if not path.exists():
        raise ReproduceError(f"{folder} has no recorded pipeline config ({path}); pass --pipeline")
    return path
