"""Domain errors. Only the CLI turns them into messages and exit codes."""

from __future__ import annotations


def first_line(exc: BaseException | str, limit: int | None = 300) -> str:
    """An exception's (or a text's) first line, cut to `limit` characters (None: whole): what follows is often
    advice about arguments this tool sets. A first line ending in a colon only announces the next, which it takes
    (torch: "Error(s) in loading state_dict for Linear:", then the size mismatch). An exception without words gives
    its type's name."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    line = lines[0] if lines else "" if isinstance(exc, str) else type(exc).__name__
    if line.endswith(":") and len(lines) > 1:
        line = f"{line} {lines[1]}"
    return line if limit is None or len(line) <= limit else line[: limit - 3] + "..."


class BatchEditError(Exception):
    """Base class: a problem the user can fix, with a message that says where it is."""


class ManifestError(BatchEditError):
    """A manifest was refused before anything ran. Carries every problem found, not only the first."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


class ConfigError(BatchEditError):
    """A pipeline config was refused."""


class PipelineLoadError(BatchEditError):
    """The pipeline could not be loaded (missing GPU, missing or gated model...)."""


class OutputError(BatchEditError):
    """The output folder cannot be written; the run stops with its records intact."""


class UnsafeOutputError(OutputError):
    """A link, or something other than a regular file or folder, where the job folder's own files go."""


class ResultPathTaken(OutputError):
    """A folder sits where an item's result file (or its caption file) goes: nothing was written for it. The
    recorder makes it that item's failure, not the run's stop (the job's other results are written). `reason`: the
    same without the path, which the summary counts by."""

    reason = "a folder is where the result file goes"

    def __init__(self, path):
        super().__init__(f"cannot write {path}: a folder is there (move or rename it, then run again)")


class OutputRefusedError(BatchEditError):
    """The output folder cannot be used, found before anything ran (nothing was written)."""


class OutputBusyError(BatchEditError):
    """Another run holds the job folder's lock."""


class ReproduceError(BatchEditError):
    """`reproduce`: the item, its image, its source, its mask or its pipeline config cannot be found or used."""


class OutOfMemory(Exception):
    """The accelerator ran out of memory on one batch (memory already freed); the runner splits the batch."""
