"""`plan`'s duration estimate: the seconds earlier items took here, scaled per pending item by the work it does.

An item's work is the denoising steps that run times the latent tokens they run over: a transformer step costs
about the same per token, so a 200-step item takes far longer than the 2-step sample timed before it, and a
1024 px one far longer than a 512 px one. An item's seconds are fitted from the timed items as a fixed part (the
calls around the denoising: text encoders, VAE, writing) plus seconds per unit of work, by least squares where the
timed items' work varies; where it does not (or the fit makes no sense: a negative part), all seconds are per unit
of work, so a sample far smaller than what is pending may overstate it, one far larger understate: hence the
caution."""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass

TOKEN_PIXELS = 16  # FLUX: the VAE's 8x, then 2x2 patches: one latent token per 16x16 px
STRENGTH_TASKS = ("img2img", "inpaint")  # the others run every step (Fill keeps its strength at 1.0)
FAR_OUTSIDE = 4  # a pending item over this many times the largest timed item's work gets a caution


@dataclass(frozen=True)
class Estimate:
    seconds: float  # for all the pending items
    timed: int  # the earlier items it is fitted from
    scaled: bool  # by steps and size; False: a flat mean (records without steps or size)
    far_outside: float = 0.0  # the largest pending work over the largest timed one, where above FAR_OUTSIDE

    def describe(self, pending: int, where: str = "here") -> str:
        """`where`: the timed items' job folder, said after them."""
        basis = "scaled by steps and size" if self.scaled else "a flat mean: their records lack steps or size"
        each = self.seconds / pending
        return f"{pending} item(s) at {each:.2f} s each (from {self.timed} timed item(s) {where}, {basis})"

    def caution(self) -> str | None:
        if not self.far_outside:
            return None
        return (
            f"pending items do up to {self.far_outside:.0f}x the work (steps x size) of the largest timed one: "
            "the estimate may be far off; time a --limit sample like them"
        )


def steps_run(task: str, steps: int, strength: float | None) -> int:
    """The denoising steps a call runs: img2img and inpaint start part way, as diffusers' `get_timesteps` does
    (`steps - int(steps - steps * strength)`); the other tasks run all of them."""
    if task not in STRENGTH_TASKS or strength is None:
        return steps
    skipped = int(max(steps - min(steps * strength, steps), 0))
    return max(steps - skipped, 1)


def work(task: str, steps: int, strength: float | None, width: int, height: int) -> int:
    """Steps that run x latent tokens."""
    return steps_run(task, steps, strength) * max(width // TOKEN_PIXELS, 1) * max(height // TOKEN_PIXELS, 1)


def estimate(task: str, timed: list[dict], pending: list) -> Estimate | None:
    """The pending items' seconds from the `timed` records (those of this pipeline with their seconds); None
    where nothing was timed. Records written without steps, strength or size give a flat mean."""
    if not timed or not pending:
        return None
    seconds = [_number(r.get("seconds"), float) or 0.0 for r in timed]
    recorded = _records_work(task, timed)
    if any(w is None for w in recorded):
        return Estimate(sum(seconds) / len(seconds) * len(pending), len(timed), scaled=False)
    fixed, per_unit = _fit(recorded, seconds)
    # the work of each distinct (steps, strength, size) once, times how many pending items do it: a sweep of
    # 100,000 items has a few dozen
    counts = Counter(
        (i.num_inference_steps, i.strength, i.width, i.height, type(i.strength)) for i in pending
    )  # the type too: strength 1 and 1.0 are one key otherwise
    works = {key: work(task, *key[:4]) for key in counts}
    ratio = max(works.values()) / max(recorded)
    total = fixed * len(pending) + per_unit * sum(works[key] * count for key, count in counts.items())
    return Estimate(total, len(timed), scaled=True, far_outside=ratio if ratio > FAR_OUTSIDE else 0.0)


def _fit(works: list[int], seconds: list[float]) -> tuple[float, float]:
    """(fixed seconds per item, seconds per unit of work): a least-squares line where the work varies and the
    line is sensible (neither part negative), else everything per unit of work."""
    if len(set(works)) > 1:
        per_unit, fixed = statistics.linear_regression(works, seconds)
        if per_unit > 0 and fixed >= 0:
            return fixed, per_unit
    return 0.0, sum(seconds) / sum(works)


def _records_work(task: str, records: list[dict]) -> list[int | None]:
    """Each record's work (`_record_work`), worked out once per distinct value of the fields it reads."""
    found: dict[tuple, int | None] = {}
    works = []
    for record in records:
        get = record.get
        steps, width, height, strength = get("num_inference_steps"), get("width"), get("height"), get("strength")
        # True, 1 and 1.0 are equal keys: their types tell them apart
        key = (steps, width, height, strength, type(steps), type(width), type(height), type(strength))
        try:
            if key not in found:
                found[key] = _record_work(task, record)
            works.append(found[key])
        except TypeError:  # a list or an object (a record is JSON: anything may be there) is no key
            works.append(_record_work(task, record))
    return works


def _record_work(task: str, record: dict) -> int | None:
    steps, width, height = (_number(record.get(k), int) for k in ("num_inference_steps", "width", "height"))
    strength = record.get("strength")
    if not (steps and width and height) or (strength is not None and _number(strength, float) is None):
        return None
    return work(task, steps, strength, width, height)


def _number(value, kind):
    """`value` where it is a number of that kind (a record is JSON: anything may be there), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
        return None
    return value
