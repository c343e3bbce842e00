"""LoRA adapters as pipeline configs and manifests list them: where each loads from, its name and scale, and what
about it is part of an item's identity."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

LORA_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
LOCAL_PREFIXES = ("/", "./", "../", "~")


class LoraConfig(BaseModel):
    """A LoRA adapter, fused into the weights when the pipeline loads (before quantization: PEFT cannot attach
    to quanto layers). `path`: a local .safetensors file or folder (`./x`, `../x`, `/x`, `~/x`, any path
    ending in `.safetensors`, or any path that exists relative to the config file), or a hub id."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field(min_length=1)
    scale: float = Field(default=1.0, ge=-4, le=4)
    name: str | None = None  # the adapter's name (metadata, `<lora:name:scale>`); default: the file or repo stem
    weight_name: str | None = None  # which .safetensors file of a folder or hub repo holding several

    @model_validator(mode="before")
    @classmethod
    def _default_name(cls, data):
        if isinstance(data, dict) and data.get("name") is None and isinstance(data.get("path"), str):
            stem = Path(data.get("weight_name") or data["path"].rstrip("/")).name.removesuffix(".safetensors")
            data = {**data, "name": re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_")[:64] or "lora"}
        return data

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and not LORA_NAME.fullmatch(value):
            raise ValueError("must be 1-64 letters, digits, '_' or '-' (it names the adapter and its <lora:...> tag)")
        return value

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if value.lower().endswith((".bin", ".pt", ".pth", ".ckpt")):
            raise ValueError("LoRAs load from .safetensors files only (pickled weights can run code)")
        return value

    @field_validator("weight_name")
    @classmethod
    def _weight_name(cls, value: str | None) -> str | None:
        if value is not None and not value.endswith(".safetensors"):
            raise ValueError("must name a .safetensors file")
        return value

    @property
    def is_local(self) -> bool:
        return self.path.startswith(LOCAL_PREFIXES) or self.path.endswith(".safetensors")

    def resolved_against(self, folder: Path) -> "LoraConfig":
        """The path made absolute against the config's (or manifest's) folder when it is local there: a bare
        `lora3` folder beside the config is local wherever the run starts, not a hub id diffusers would look for
        in the current directory."""
        beside = folder / Path(self.path).expanduser()
        if not (self.is_local or beside.exists()):
            return self
        return self.model_copy(update={"path": beside.resolve().as_posix()})

    def loaded_file(self) -> Path:
        """The local file the adapter loads: the path itself, or a folder's `weight_name` (else its one file)."""
        path = Path(self.path).expanduser()
        if not path.is_dir():
            return path
        if self.weight_name:
            return path / self.weight_name
        found = sorted(path.glob("*.safetensors"))
        return found[0] if len(found) == 1 else path  # several: refused when the pipeline loads

    def tag(self) -> str:
        return f"<lora:{self.name}:{self.scale:g}>"

    def identity(self) -> dict:
        # the name only labels the adapter: renaming it does not change an image
        picked = {"weight_name": self.weight_name} if self.weight_name else {}
        # a local file is retrained in place: its size and mtime (as a checkpoint's) make new items then
        stamp = {"lora_file": file_stamp(self.loaded_file())} if self.is_local else {}
        return {"path": self.path, "scale": self.scale, **picked, **stamp}


def file_stamp(path: Path) -> str:
    """A file's size and modification time, `missing` where it cannot be read (refused when the pipeline loads)."""
    try:
        found = os.stat(path)
    except OSError:
        return "missing"
    return f"{found.st_size}-{found.st_mtime_ns}"


def names_used_twice(loras) -> list[str]:
    """The adapter names more than one of `loras` has, sorted."""
    names = [lora.name for lora in loras]
    return sorted({name for name in names if names.count(name) > 1})


def _unique_names(loras: list[LoraConfig]) -> list[LoraConfig]:
    twice = names_used_twice(loras)
    if twice:
        named = f"name {twice[0]} is" if len(twice) == 1 else f"names {', '.join(twice)} are"
        message = f"the LoRA {named} used twice (each LoRA loads under its own name): give one a `name:`"
        raise PydanticCustomError("lora_names", message)  # names hold no braces (LORA_NAME)
    return loras


# A `loras` list: each adapter loads under its name, so two of one name cannot both be fused
LoraList = Annotated[list[LoraConfig], AfterValidator(_unique_names)]
