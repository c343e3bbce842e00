"""Where a pipeline config's local weights are and what names them in item ids: a `model`/`base_model` path
resolved against the config's folder (never the working directory) and a model folder's stamp."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .checkpoint_headers import SINGLE_FILE_SUFFIXES
from .errors import ConfigError
from .lora_config import LOCAL_PREFIXES, file_stamp

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf")  # the files a model folder's stamp covers


def folder_stamp(folder: Path) -> str:
    """A model folder's weight files (any depth, through linked folders) by relative path, size and modification
    time (a linked file's target's), hashed into one short stamp: weights replaced in place give another;
    nothing is read (a folder holds 12-30 GB). `missing` where it is no folder (refused when the pipeline
    loads)."""
    if not folder.is_dir():
        return "missing"
    stamps = []
    entered = set()  # real folders: linked folders are followed (a model assembled from links), each once
    for root, folders, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in entered:
            folders.clear()
            continue
        entered.add(real)
        folders.sort()
        for name in sorted(files):
            if name.lower().endswith(WEIGHT_SUFFIXES):
                file = Path(root) / name
                stamps.append(f"{file.relative_to(folder).as_posix()} {file_stamp(file)}")
    return hashlib.sha256("\n".join(stamps).encode()).hexdigest()[:16]


def local_model_path(value: str, key: str, path: Path) -> str:
    """A local `model`/`base_model` resolved against the config's folder; a hub id as given. A bare relative
    path (no ./) is local where it exists beside the config; one found only in the working directory would be
    loaded from there by diffusers (another folder from each place a run starts, under the same ids): refused."""
    if not value:
        return value
    given = Path(value).expanduser()
    beside = path.parent / given
    if value.startswith(LOCAL_PREFIXES) or value.lower().endswith(SINGLE_FILE_SUFFIXES) or _exists(beside):
        return beside.resolve().as_posix()
    if _exists(given):
        raise ConfigError(
            f"{path}: field '{key}': {value} is not beside this config but in the working directory ("
            f"{Path.cwd()}): write it relative to the config file (./...) or as an absolute path"
        )
    return value


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except (OSError, ValueError):  # a name no filesystem holds: not a local path
        return False
