"""Every item parameter, declared once: its name (YAML key, CSV column, WorkItem field), type and range, default
per pipeline task, and what each stage makes of it: whether it splits batches, its metadata.csv column, its
AUTOMATIC1111 label, its contact-sheet axis, its file-name placeholder and how a metadata cell reads back.

The manifest's models, the grid, WorkItem, the batch key, item ids, the records, the A1111 text, the sheets,
`plan`'s axes, file-name templates and `reproduce` all read these declarations: a new parameter is one more line
in PARAMETERS. The `*_at` numbers keep the order that files written before them have (metadata.csv's columns,
the A1111 settings line, the sheets' axis priority); a new parameter needs none and goes after those.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Callable, Literal, NamedTuple

from pydantic import Field

from .formats import EXTENSIONS
from .pipeline_config import DEFAULT_TASK, TASKS
from .sources import RESIZE_MODES

LAST = 100  # the place of a label or column declared without one: after every placed one
SEED_MAX = 2**63 - 1
MAX_VARIATIONS = 10000
# Counted before anything is expanded: a plan holds every item in memory (about 300 MB per 1,000,000 items).
MAX_ITEMS_PER_RUN = 10_000_000

Strength = Annotated[float, Field(gt=0, le=1)]
Steps = Annotated[int, Field(ge=1, le=1000)]
Guidance = Annotated[float, Field(ge=0, le=100)]
Seed = Annotated[int, Field(ge=0, le=SEED_MAX)]
Side = Annotated[int, Field(ge=16, le=4096, multiple_of=16)]
Resize = Literal[RESIZE_MODES]
Variations = Annotated[int, Field(ge=1, le=MAX_VARIATIONS)]
ImageFormat = Literal[tuple(EXTENSIONS)]
Quality = Annotated[int, Field(ge=1, le=100)]
Pixels = Annotated[int, Field(ge=0, le=256)]


def _true(cell: str) -> bool:
    return cell == "True"  # metadata.csv writes booleans as Python prints them


class Label(NamedTuple):
    """A parameter's label in a format with an order of its own, and its place there (LAST: after the rest)."""

    text: str
    at: int = LAST


@dataclass(frozen=True)
class Parameter:
    name: str  # the YAML key, the CSV column and (for an axis) the WorkItem field
    value: Any  # the pydantic annotation of one value: its type and range
    # per pipeline task; None: decided per item (a seed derived from source and prompt); a task without a key takes
    # no such parameter (a manifest giving it is refused)
    default: dict[str, Any]
    axis: bool = True  # a list of values sweeps it; each WorkItem has one value, hashed into its id in this order
    batches: bool = False  # items that differ in it cannot share a pipeline call
    csv: bool = True  # a CSV row may set it
    decimal_comma: bool = False  # a CSV cell may write it "0,75" (where ';' or tabs delimit)
    columns: tuple[str, ...] = ()  # metadata.csv columns: the value ("" = the name), then WorkItem fields with it
    column_at: int = LAST  # the place of those columns among the item's
    fitted: bool = False  # the result's value (its size) may differ from the ask: `name` holds it, columns[0] the ask
    parse: Callable[[str], Any] = str  # a metadata.csv cell back to the value (reproduce)
    a1111: Label | None = None  # in the A1111 settings line; parameters sharing a label are written "AxB"
    sheet: Label | None = None  # a contact-sheet axis; parameters sharing a label are one axis, "AxB"
    file_field: str | None = None  # a placeholder of file-name templates
    # False: hashed into the item id only when off its default, so the ids of items planned before it existed stay
    hashed_at_default: bool = True
    # A WorkItem field it acts through ("mask"): where that is None the value is moot, so the item's record, columns
    # and A1111 text leave it out, and a job without it may not set it
    needs: str | None = None

    def default_for(self, task: str = DEFAULT_TASK):
        return self.default[task]

    def taken_by(self, task: str) -> bool:
        return task in self.default

    @property
    def column(self) -> str:
        """The metadata.csv column holding the value as the item asked it."""
        return (self.columns[0] if self.columns else "") or self.name


def every_task(value) -> dict[str, Any]:
    return dict.fromkeys(TASKS, value)


# Axes in item-id order: the id hashes their values in this order, so never reorder them; add new ones after.
# The reference call: 1024x1024, 28 steps, strength 0.9, guidance 3.5, center crop. The other tasks' defaults are
# their model cards': inpaint runs FLUX.1-dev's weights (guidance 3.5) with img2img's strength; FLUX.1-Fill-dev
# guidance 30, 50 steps; FLUX.1-Kontext-dev guidance 2.5, 28 steps. Fill and Kontext take no strength.
PARAMETERS = (
    Parameter("strength", Strength, {"img2img": 0.9, "inpaint": 0.9}, batches=True, decimal_comma=True,
              column_at=1, parse=float, a1111=Label("Denoising strength", 6), sheet=Label("strength", 1),
              file_field="strength"),
    Parameter("num_inference_steps", Steps, {"img2img": 28, "inpaint": 28, "fill": 50, "kontext": 28},
              batches=True, column_at=2, parse=int, a1111=Label("Steps", 0), sheet=Label("steps", 4),
              file_field="steps"),
    Parameter("guidance_scale", Guidance, {"img2img": 3.5, "inpaint": 3.5, "fill": 30.0, "kontext": 2.5},
              batches=True, decimal_comma=True, column_at=3, parse=float, a1111=Label("Distilled CFG Scale", 2),
              sheet=Label("guidance", 5), file_field="guidance"),
    Parameter("seed", Seed, every_task(None), columns=("", "seed_derived"), column_at=0, parse=int,
              a1111=Label("Seed", 3), sheet=Label("seed", 2), file_field="seed"),
    Parameter("variations", Variations, every_task(1), axis=False),  # seeds per grid point (A1111's batch count)
    Parameter("width", Side, every_task(1024), columns=("requested_width",), column_at=4, fitted=True,
              parse=int, a1111=Label("Size", 4), sheet=Label("size", 6), file_field="width"),
    Parameter("height", Side, every_task(1024), columns=("requested_height",), column_at=5, fitted=True,
              parse=int, a1111=Label("Size", 4), sheet=Label("size", 6), file_field="height"),
    Parameter("resize", Resize, every_task("center-crop"), column_at=6, a1111=Label("Resize", 8),
              sheet=Label("resize", 7), file_field="resize"),
    # How a result is written, not what it is: never in its id (formats.OutputOptions).
    Parameter("format", ImageFormat, every_task("png"), axis=False),
    Parameter("quality", Quality, every_task(None), axis=False),  # jpeg/webp (formats.DEFAULT_QUALITY); png: none
    Parameter("captions", bool, every_task(False), axis=False),  # a .txt with the prompt beside each image
    # Masks (masks.py): the feather inside the mask's edge, the context the pipeline crops around the mask (0: the
    # whole image), and whether the result is composited over the source so that pixels outside the mask stay
    Parameter("mask_blur", Pixels, every_task(4), hashed_at_default=False, needs="mask", parse=int,
              a1111=Label("Mask blur"), sheet=Label("mask blur")),
    Parameter("mask_padding", Pixels, every_task(0), batches=True, hashed_at_default=False, needs="mask", parse=int,
              a1111=Label("Masked area padding"), sheet=Label("mask padding")),
    Parameter("composite", bool, every_task(True), hashed_at_default=False, needs="mask", parse=_true,
              a1111=Label("Composite"), sheet=Label("composite")),
)  # fmt: skip


def axes() -> tuple[Parameter, ...]:
    """The swept parameters, in item-id order: grid axes and WorkItem fields."""
    return tuple(p for p in PARAMETERS if p.axis)


def axis_names() -> tuple[str, ...]:
    return tuple(p.name for p in axes())


def named(name: str) -> Parameter:
    return next(p for p in PARAMETERS if p.name == name)


def hashed_axes(at_default: bool) -> tuple[Parameter, ...]:
    """The axes hashed into every id (at_default True), or those hashed only when off their default."""
    return tuple(p for p in axes() if p.hashed_at_default == at_default)


def needing(field: str | None = None) -> tuple[Parameter, ...]:
    """The axes that act through the WorkItem field `field` (None: those every item has)."""
    return tuple(p for p in axes() if p.needs == field)


def metadata_columns(field: str | None = None) -> list[str]:
    """The metadata.csv columns of the axes every item has (or of those acting through `field`), in place order;
    the sizes a result has (its fitted values) come together, before the first value asked for them, as
    metadata.csv has always had them."""
    ordered = sorted(needing(field), key=lambda p: p.column_at)
    fitted = [p.name for p in ordered if p.fitted]
    columns: list[str] = []
    for p in ordered:
        if p.fitted and p.name == fitted[0]:
            columns.extend(fitted)
        columns.extend([p.column, *p.columns[1:]])
    return columns


def labels(kind: str) -> dict[str, tuple[int, tuple[Parameter, ...]]]:
    """`kind` "a1111" or "sheet": each label -> (its place, the axes it shows, in declaration order)."""
    found: dict[str, tuple[int, tuple[Parameter, ...]]] = {}
    for p in axes():
        label = getattr(p, kind)
        if label is not None:
            at, shown = found.get(label.text, (label.at, ()))
            found[label.text] = (at, (*shown, p))
    return found
