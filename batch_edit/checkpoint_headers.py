"""Whether a single-file checkpoint (`.safetensors`, `.gguf`) is one, and whole, from its header alone: checked when
the config loads, so that a download cut short or the wrong file is named as such by `plan`, not found only when
the pipeline loads (diffusers then says no more than that it could not load the weights). Nothing past the header is
read: a checkpoint holds 12-24 GB."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SINGLE_FILE_SUFFIXES = (".safetensors", ".gguf")  # a FLUX.1 transformer alone, as ComfyUI/Forge users hold it
GGUF_MAGIC = b"GGUF"
GGUF_HEADER_BYTES = 24  # magic, version (uint32), tensor and metadata counts (uint64 each)
# safetensors refuses headers over 100 MB; a FLUX.1 transformer's is about 100 KB.
MAX_SAFETENSORS_HEADER = 100_000_000


def checkpoint_problem(path: Path) -> str | None:
    """What makes the file named by a single-file `model` no checkpoint the loader can read; None where its header
    holds together, or where it is not there (reported as missing elsewhere)."""
    suffix = next((s for s in SINGLE_FILE_SUFFIXES if path.name.lower().endswith(s)), "")
    if not path.name.endswith(suffix):  # diffusers picks the reader by the suffix as written, lower-case only
        return f"diffusers reads only a lower-case '{suffix}' suffix: rename the file to {path.stem}{suffix}"
    try:
        if path.is_dir():
            return _folder_problem(path, suffix)
        if path.exists() and not path.is_file():  # opening a FIFO would wait for a writer, forever
            return "not a regular file (a FIFO, socket or device)"
        with open(path, "rb") as file:
            size = path.stat().st_size
            return gguf_problem(file, size, path) if suffix == ".gguf" else safetensors_problem(file, size)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"could not read: {exc.strerror or exc}"


def _folder_problem(path: Path, suffix: str) -> str:
    """A folder named like the file (an unpacked download): the file it holds, if one, is what to name."""
    kind = "GGUF" if suffix == ".gguf" else "safetensors"
    inside = sorted(p.name for p in path.iterdir() if p.name.lower().endswith(suffix) and p.is_file())
    hint = f": name the file inside it ({path.name}/{inside[0]})" if inside else ""
    return f"a folder, not a {kind} file{hint}"


def safetensors_problem(file, size: int) -> str | None:
    """The header: its 8-byte length, its JSON, and the end of the last tensor's data at the file's end."""
    head = file.read(8)
    if not head:
        return "an empty file, not a safetensors file"
    length = int.from_bytes(head, "little")
    if len(head) < 8 or length > MAX_SAFETENSORS_HEADER or file.read(1) not in (b"{", b""):
        return "not a safetensors file (it does not start with a safetensors header: 8 bytes of length, then JSON)"
    if size < 8 + length:
        return _truncated(size, 8 + length)
    try:
        header = json.loads(b"{" + file.read(length - 1))
        ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
        end = max((int(end) for end in ends), default=0)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):  # malformed JSON or entries
        return "not a safetensors file (its header is not the JSON of a tensor listing)"
    if size < 8 + length + end:
        return _truncated(size, 8 + length + end)
    if size > 8 + length + end:  # the reader refuses it too ("file not fully covered"): two files joined, or junk
        return (f"not a safetensors file the reader accepts: {size - 8 - length - end:,} byte(s) after the end of "
                f"its last tensor ({size:,} bytes, the header says {8 + length + end:,})")  # fmt: skip
    return None


def gguf_problem(file, size: int, path: Path) -> str | None:
    """Magic and counts; then, where the gguf package (the loader's own reader) is installed, every metadata value,
    tensor listing and tensor's data within the file (memory-mapped: no tensor data is read)."""
    head = file.read(GGUF_HEADER_BYTES)
    if not head:
        return "an empty file, not a GGUF file"
    if not GGUF_MAGIC.startswith(head[:4]):
        return f"not a GGUF file (it starts with {head[:4]!r}, a GGUF file with {GGUF_MAGIC!r})"
    if len(head) < GGUF_HEADER_BYTES:
        return f"truncated: {len(head)} bytes, fewer than the {GGUF_HEADER_BYTES} of a GGUF file's header"
    if importlib.util.find_spec("gguf") is None:
        return None
    return _gguf_reader_problem(path, size)


def _gguf_reader_problem(path: Path, size: int) -> str | None:
    import gguf
    import numpy as np

    class Reader(gguf.GGUFReader):
        """The reader, stopping at the first value, listing or tensor that would end past the file: its slice of
        the memory map would come back short (or the tensor's reshape fail) with no word of why."""

        def _get(self, offset, dtype, count=1, override_order=None):
            end = int(offset) + np.dtype(dtype).itemsize * int(count)
            if end > len(self.data):
                raise _PastTheEnd(end)
            return super()._get(offset, dtype, count, override_order)

    try:
        Reader(path)
    except _PastTheEnd as short:
        return _truncated(size, short.end)
    except Exception as exc:  # noqa: BLE001 - whatever the reader refuses, the loader (using it) refuses too
        words = " ".join(str(exc).split()) or type(exc).__name__
        return f"not a GGUF file the gguf package reads ({words})"
    return None


class _PastTheEnd(Exception):
    def __init__(self, end: int):
        super().__init__(end)
        self.end = end


def _truncated(size: int, needed: int) -> str:
    return f"truncated: {size:,} bytes, the header says at least {needed:,}"
