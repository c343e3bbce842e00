"""The only module that writes under the output root.

Per job folder: the images and their caption files (written to a temporary name, then renamed into place),
moves into `.batch-edit/pruned/` (nothing is deleted), an append-only
record of every finished or failed item (`.batch-edit/records.jsonl`, flushed per item), and
`metadata.csv` / `failures.csv`, rebuilt from the records atomically.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import threading
import time
from pathlib import Path
from typing import BinaryIO, Callable

from filelock import FileLock, Timeout
from PIL import Image

from . import __version__
from .errors import OutputBusyError, OutputError
from .formats import caption_name, save_image
from .plan import WorkItem

STATE_DIR = ".batch-edit"
PRUNED_DIR = f"{STATE_DIR}/pruned"
SOURCES_DIR = "sources"
# Not `source_file_name`: imagefolder would name that image column `source`, which the source path already is.
SOURCE_IMAGE_COLUMN = "source_image_file_name"
ITEM_COLUMNS = [
    "item_id", "job", "source", "prompt", "seed", "seed_derived", "strength", "num_inference_steps",
    "guidance_scale", "width", "height", "requested_width", "requested_height", "resize",
]  # fmt: skip
PIPELINE_COLUMNS = ["model", "revision", "dtype", "quantization", "loras", "device"]
METADATA_COLUMNS = ["file_name", *ITEM_COLUMNS, *PIPELINE_COLUMNS, "batch_size", "seconds", "finished_at"]
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


def a1111_parameters(row: dict) -> str:
    """The `parameters` text read by the tools people already use (WebUI PNG Info, ComfyUI loaders, sd-parsers...);
    formats.save_image puts it where each format keeps it, beside the full record as JSON."""
    fields = {
        "Steps": row["num_inference_steps"],
        "Sampler": "Euler",  # FLUX's flow-matching Euler scheduler
        "CFG scale": row["guidance_scale"],
        "Seed": row["seed"],
        "Size": f"{row['width']}x{row['height']}",
        "Model": row.get("model", ""),
        "Denoising strength": row["strength"],
        "Source": row["source"],
        "Resize": row["resize"],
        "Quantization": row.get("quantization", ""),
        "Item id": row["item_id"],
        "Version": f"batch-edit {__version__}",
    }
    settings = ", ".join(f"{key}: {_a1111_quote(str(value))}" for key, value in fields.items())
    loras = f" {row['loras']}" if row.get("loras") else ""  # the WebUI writes LoRAs as <lora:name:scale> in the prompt
    return f"{row['prompt']}{loras}\n{settings}"


def _a1111_quote(text: str) -> str:
    """As the WebUI writes infotext: values with ',', ':' or a newline become JSON strings."""
    return json.dumps(text, ensure_ascii=False) if any(c in text for c in ",:\n") else text


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


class JobOutput:
    def __init__(self, root: Path, job: str):
        self.folder = (root / job).resolve()
        if not job or self.folder.parent != root.resolve():
            raise OutputError(f"job name {job!r} would write outside the output root {root}")
        self.state = self.folder / STATE_DIR
        self.records_path = self.state / "records.jsonl"
        self._records = None
        self._lock: FileLock | None = None
        self._created: list[Path] = []
        self._append_lock = threading.Lock()  # the writer thread appends successes, the main thread failures

    # --- reading -------------------------------------------------------------------------------------------
    def read_records(self) -> dict[str, dict]:
        """The latest record per item id, in first-seen order. A line cut short by a crash is ignored."""
        latest: dict[str, dict] = {}
        try:
            with self.records_path.open("rb") as handle:
                for line in handle:
                    try:
                        record = json.loads(line.decode("utf-8"))
                    except (UnicodeDecodeError, json.JSONDecodeError):
                        continue  # cut short mid-character or mid-line by a crash
                    latest[record["item_id"]] = record
        except FileNotFoundError:
            pass
        return latest

    def recorded_files(self) -> set[str]:
        """Every file name a success record ever gave, superseded ones included (a format change leaves some)."""
        names = set()
        try:
            with self.records_path.open("rb") as handle:
                for line in handle:
                    try:
                        record = json.loads(line.decode("utf-8"))
                    except (UnicodeDecodeError, json.JSONDecodeError):
                        continue  # cut short by a crash
                    if record["status"] == "ok":
                        names.add(record["file_name"])
        except FileNotFoundError:
            pass
        return names

    def done_ids(self, records: dict[str, dict] | None = None) -> set[str]:
        """Items with a success record whose image is still there, whole (same size as when written)."""
        records = self.read_records() if records is None else records
        return {item_id for item_id, record in records.items() if self._intact(record)}

    def mean_seconds(self, identity: dict, records: dict[str, dict] | None = None) -> float | None:
        """Seconds per image that earlier runs with this pipeline identity took here (None: no such run)."""
        records = self.read_records() if records is None else records
        seconds = [
            record["seconds"]
            for record in records.values()
            if record["status"] == "ok" and all(record.get(key) == value for key, value in identity.items())
        ]
        return sum(seconds) / len(seconds) if seconds else None

    def finished_ids(self, items, records: dict[str, dict] | None = None) -> set[str]:
        """Items done as planned: an intact result under the item's planned file name (one written in another
        format, before the job's `format` changed, is not: the item is made again in the new format)."""
        records = self.read_records() if records is None else records
        done = self.done_ids(records)
        return {i.item_id for i in items if i.item_id in done and records[i.item_id]["file_name"] == i.output_name}

    def rejected_ids(self, records: dict[str, dict] | None = None) -> set[str]:
        """Items whose deleted result `prune --rejected` recorded as unwanted: runs skip them unless overwriting."""
        records = self.read_records() if records is None else records
        return {item_id for item_id, record in records.items() if record["status"] == "rejected"}

    def _intact(self, record: dict) -> bool:
        if record["status"] != "ok":
            return False
        try:  # os.stat on a joined string: a Path object per record costs more than the stat on 100k items
            return os.stat(os.path.join(self.folder, record["file_name"])).st_size == record.get("bytes")
        except OSError:
            return False

    # --- writing -------------------------------------------------------------------------------------------
    def open(self, pipeline_yaml: str | None) -> None:
        """Lock the job folder, clean what a crash left, and get the record ready for appending (None: keep the
        recorded pipeline config, for changes that render nothing, such as pruning)."""
        self._created = [path for path in (self.folder.parent, self.folder) if not path.exists()]
        try:
            self.state.mkdir(parents=True, exist_ok=True)
            self._acquire_lock()
            if pipeline_yaml is not None:
                (self.state / "pipeline.yaml").write_text(pipeline_yaml, encoding="utf-8")
            for stale in [*self.folder.glob(".*.tmp"), *self.folder.glob(f"{SOURCES_DIR}/.*.tmp")]:
                stale.unlink()
            self._records = self.records_path.open("ab", buffering=0)
            if self._records.tell() and not _ends_with_newline(self.records_path):
                self._records.write(b"\n")  # a crash cut the last line short: never glue a record onto it
        except OSError as exc:
            self.close()
            raise OutputError(f"cannot write to the output folder {self.folder}: {exc.strerror or exc}") from exc

    def _acquire_lock(self) -> None:
        lock = FileLock(self.state / "lock")
        try:
            lock.acquire(timeout=0)
        except Timeout:
            owner = (
                (self.state / "owner").read_text(encoding="utf-8").strip() if (self.state / "owner").exists() else "?"
            )
            raise OutputBusyError(
                f"another batch-edit run (pid {owner}) is writing to {self.folder}; "
                "wait for it to finish, or give this run another --output-root"
            ) from None
        self._lock = lock
        (self.state / "owner").write_text(str(os.getpid()), encoding="utf-8")

    def close(self) -> None:
        if self._records is not None:
            self._records.close()
            self._records = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def discard_if_unused(self) -> None:
        """Remove a folder this run created but never wrote an item to (the pipeline failed to load)."""
        self.close()
        if self.folder in self._created and not self.records_path.stat().st_size:
            shutil.rmtree(self.folder, ignore_errors=True)
            if self.folder.parent in self._created and not any(self.folder.parent.iterdir()):
                self.folder.parent.rmdir()

    def write_image(self, item: WorkItem, image: Image.Image, extra: dict, source: Image.Image | None = None) -> None:
        """Write the result (and, for before/after pairs, the fitted source it was made from), then record it."""
        row = {"file_name": item.output_name, **item_fields(item, image.size), **extra, "finished_at": _now()}
        row.update(format=item.output.format, quality=item.output.quality)
        if source is not None:
            row[SOURCE_IMAGE_COLUMN] = self._write_source(item, source)
        if item.output.captions:  # before the image: a finished item always has its caption
            caption = item.prompt.encode("utf-8")
            self._write_file(self.folder / caption_name(item.output_name), lambda handle: handle.write(caption))
        parameters = a1111_parameters(row)
        size = self._write_file(
            self.folder / item.output_name, lambda handle: save_image(handle, image, item.output, parameters, row)
        )
        self._append({"status": "ok", "bytes": size, **row})

    def _write_source(self, item: WorkItem, source: Image.Image) -> str:
        """One file per distinct fitted source, shared by every item made from it (a sweep writes it once)."""
        key = json.dumps([item.source.key, item.source.fingerprint, source.size, item.resize])
        name = f"{SOURCES_DIR}/{item.output_name.rsplit('-', 1)[0]}-{hashlib.sha256(key.encode()).hexdigest()[:12]}.png"
        if not (self.folder / name).exists():
            (self.folder / SOURCES_DIR).mkdir(exist_ok=True)
            self._write_png(self.folder / name, source, None)
        return name

    def _write_png(self, final: Path, image: Image.Image, info) -> int:
        return self._write_file(final, lambda handle: image.save(handle, format="PNG", pnginfo=info))

    def _write_file(self, final: Path, write: Callable[[BinaryIO], object]) -> int:
        temporary = final.with_name(f".{final.name}.{os.getpid()}.tmp")
        try:
            with temporary.open("wb") as handle:
                write(handle)
                handle.flush()
                os.fsync(handle.fileno())
                size = handle.tell()
            os.replace(temporary, final)
            _fsync_folder(final.parent)
        except OSError as exc:
            temporary.unlink(missing_ok=True)
            raise OutputError(f"cannot write {final}: {exc.strerror or exc}") from exc
        return size

    def mark(self, record: dict, status: str, **fields) -> None:
        """Append a later status for a recorded item ("pruned", "rejected"): the log stays the whole history."""
        self._append({**record, "status": status, **fields, f"{status}_at": _now()})

    def move_to_pruned(self, file_name: str) -> str | None:
        """Move a result and its caption file into .batch-edit/pruned/ under a name not taken there yet (an item
        pruned twice keeps both copies); returns the new path relative to the job folder, None if nothing moved."""
        image = self.folder / file_name
        if not image.is_file():
            return None
        pruned = self.folder / PRUNED_DIR
        stem, suffix = Path(file_name).stem, Path(file_name).suffix
        target, number = pruned / file_name, 1
        while target.exists() or target.with_suffix(".txt").exists():
            number += 1
            target = pruned / f"{stem}~{number}{suffix}"
        try:
            pruned.mkdir(parents=True, exist_ok=True)
            caption = self.folder / caption_name(file_name)
            if caption.is_file():
                os.replace(caption, target.with_suffix(".txt"))
            os.replace(image, target)
            _fsync_folder(pruned)
            _fsync_folder(self.folder)
        except OSError as exc:
            raise OutputError(f"cannot move {image} to {pruned}: {exc.strerror or exc}") from exc
        return str(target.relative_to(self.folder))

    def record_failure(self, item: WorkItem, stage: str, error: BaseException) -> None:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        row = {**item_fields(item), "stage": stage, "error_type": type(error).__name__, "error": message}
        self._append({"status": "failed", **row, "failed_at": _now()})

    def _append(self, record: dict) -> None:
        if self._records is None:
            raise OutputError(f"{self.folder} was not opened for writing")
        line = memoryview((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
        with self._append_lock:
            self._write_line(line)

    def _write_line(self, line: memoryview) -> None:
        try:
            while line:  # unbuffered: nothing is left in memory to fail later, a short write is retried
                line = line[self._records.write(line) :]
            os.fsync(self._records.fileno())
        except OSError as exc:
            raise OutputError(f"cannot append to {self.records_path}: {exc.strerror or exc}") from exc

    def refresh_csvs(self) -> None:
        """Rebuild the CSVs if the record is newer than them, unless another run holds the folder."""
        metadata = self.folder / "metadata.csv"
        try:
            if metadata.stat().st_mtime_ns >= self.records_path.stat().st_mtime_ns:
                return
        except FileNotFoundError:
            if not self.records_path.exists():
                return
        lock = FileLock(self.state / "lock")
        try:
            lock.acquire(timeout=0)
        except Timeout:
            return
        try:
            self.rebuild_csvs()
        finally:
            lock.release()

    def rebuild_csvs(self) -> tuple[int, int]:
        """Rewrite metadata.csv and failures.csv from the records; returns (images, failures)."""
        records = self.read_records().values()
        done = [r for r in records if self._intact(r)]
        failed = [r for r in records if r["status"] == "failed"]
        # Only a job that kept its sources gets the column: an empty *_file_name would break imagefolder.
        paired = any(SOURCE_IMAGE_COLUMN in r for r in done)
        self._write_csv("metadata.csv", METADATA_COLUMNS + [SOURCE_IMAGE_COLUMN] * paired, done)
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


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) == b"\n"


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable, so a power cut can't lose an image whose record is on disk."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
