"""The only module that writes under the output root.

Per job folder: the PNG images (written to a temporary name, then renamed into place), an append-only
record of every finished or failed item (`.batch-edit/records.jsonl`, flushed per item), and
`metadata.csv` / `failures.csv`, rebuilt from the records atomically.
"""

from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path

from PIL import Image

from .errors import OutputError
from .plan import WorkItem

STATE_DIR = ".batch-edit"
ITEM_COLUMNS = [
    "item_id", "job", "source", "prompt", "seed", "seed_derived", "strength", "num_inference_steps",
    "guidance_scale", "width", "height", "requested_width", "requested_height", "resize",
]  # fmt: skip
PIPELINE_COLUMNS = ["model", "revision", "dtype", "quantization", "device"]
METADATA_COLUMNS = ["file_name", *ITEM_COLUMNS, *PIPELINE_COLUMNS, "seconds", "finished_at"]
FAILURE_COLUMNS = [*ITEM_COLUMNS, "stage", "error_type", "error", "failed_at"]


def item_fields(item: WorkItem, size: tuple[int, int] | None = None) -> dict:
    width, height = size or (item.width, item.height)
    return {
        "item_id": item.item_id,
        "job": item.job,
        "source": item.source.key,
        "prompt": item.prompt,
        "seed": item.seed,
        "seed_derived": item.seed_derived,
        "strength": item.strength,
        "num_inference_steps": item.num_inference_steps,
        "guidance_scale": item.guidance_scale,
        "width": width,
        "height": height,
        "requested_width": item.width,
        "requested_height": item.height,
        "resize": item.resize,
    }


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


class JobOutput:
    def __init__(self, root: Path, job: str):
        self.folder = (root / job).resolve()
        if self.folder.parent != root.resolve():
            raise OutputError(f"job name {job!r} would write outside the output root {root}")
        self.state = self.folder / STATE_DIR
        self.records_path = self.state / "records.jsonl"
        self._records = None

    # --- reading -------------------------------------------------------------------------------------------
    def read_records(self) -> dict[str, dict]:
        """The latest record per item id, in first-seen order. A line cut short by a crash is ignored."""
        latest: dict[str, dict] = {}
        try:
            with self.records_path.open(encoding="utf-8") as handle:
                for line in handle:
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError:
                        continue
                    latest[record["item_id"]] = record
        except FileNotFoundError:
            pass
        return latest

    def done_ids(self, records: dict[str, dict] | None = None) -> set[str]:
        records = self.read_records() if records is None else records
        return {
            item_id
            for item_id, record in records.items()
            if record["status"] == "ok" and (self.folder / record["file_name"]).is_file()
        }

    # --- writing -------------------------------------------------------------------------------------------
    def open(self, pipeline_yaml: str) -> None:
        try:
            self.state.mkdir(parents=True, exist_ok=True)
            (self.state / "pipeline.yaml").write_text(pipeline_yaml, encoding="utf-8")
            for stale in self.folder.glob(".*.tmp"):
                stale.unlink()
            self._records = self.records_path.open("a", encoding="utf-8")
        except OSError as exc:
            raise OutputError(f"cannot write to the output folder {self.folder}: {exc.strerror or exc}") from exc

    def close(self) -> None:
        if self._records is not None:
            self._records.close()
            self._records = None

    def write_image(self, item: WorkItem, image: Image.Image, extra: dict) -> None:
        final = self.folder / item.output_name
        temporary = self.folder / f".{item.output_name}.{os.getpid()}.tmp"
        try:
            with temporary.open("wb") as handle:
                image.save(handle, format="PNG")
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, final)
        except OSError as exc:
            temporary.unlink(missing_ok=True)
            raise OutputError(f"cannot write {final}: {exc.strerror or exc}") from exc
        row = {"file_name": item.output_name, **item_fields(item, image.size), **extra, "finished_at": _now()}
        self._append({"status": "ok", **row})

    def record_failure(self, item: WorkItem, stage: str, error: BaseException) -> None:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        row = {**item_fields(item), "stage": stage, "error_type": type(error).__name__, "error": message}
        self._append({"status": "failed", **row, "failed_at": _now()})

    def _append(self, record: dict) -> None:
        try:
            self._records.write(json.dumps(record, ensure_ascii=False) + "\n")
            self._records.flush()
            os.fsync(self._records.fileno())
        except OSError as exc:
            raise OutputError(f"cannot append to {self.records_path}: {exc.strerror or exc}") from exc

    def rebuild_csvs(self) -> tuple[int, int]:
        """Rewrite metadata.csv and failures.csv from the records; returns (images, failures)."""
        records = self.read_records().values()
        done = [r for r in records if r["status"] == "ok" and (self.folder / r["file_name"]).is_file()]
        failed = [r for r in records if r["status"] == "failed"]
        self._write_csv("metadata.csv", METADATA_COLUMNS, done)
        self._write_csv("failures.csv", FAILURE_COLUMNS, failed)
        return len(done), len(failed)

    def _write_csv(self, name: str, columns: list[str], rows: list[dict]) -> None:
        temporary = self.folder / f".{name}.{os.getpid()}.tmp"
        try:
            with temporary.open("w", encoding="utf-8", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
                writer.writeheader()
                writer.writerows(rows)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self.folder / name)
        except OSError as exc:
            temporary.unlink(missing_ok=True)
            raise OutputError(f"cannot write {self.folder / name}: {exc.strerror or exc}") from exc
