"""Prompts longer than the pipeline reads: FLUX's T5 encoder takes the first `max_sequence_length` tokens of a
prompt (CLIP its first 77) and drops the rest without a word, so two prompts that differ only further on make the
same image under two item ids. `LongPrompts` says so once per prompt, counting tokens with the model's own T5
tokenizer: the loaded pipeline's at run time, its `tokenizer.json` read without weights for `plan`."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

from .pipeline_config import LOCAL_PREFIXES, PipelineConfig
from .validation import printable

# A long prompt is shown by its start and its end: prompts made from one template often differ only at the end
# (a {stem} or {caption} last), and two warnings should not read alike.
SHOWN_HEAD, SHOWN_TAIL = 30, 20
MOST_LISTED = 10  # prompts warned about one by one; a caption per image could be thousands of lines otherwise


def truncation_warning(job: str, prompt: str, tokens: int, limit: int) -> str:
    return (
        f"job {job}: prompt '{shown_prompt(prompt)}' has {tokens:,} T5 tokens, of which the pipeline reads "
        f"the first {limit} (max_sequence_length; CLIP reads 77): the rest of the prompt is ignored, so prompts "
        "that differ only there make the same image"
    )


def shown_prompt(prompt: str) -> str:
    """The prompt's first and last characters around " … ", with its length; whole when that is no shorter."""
    if len(prompt) <= SHOWN_HEAD + SHOWN_TAIL + 3:
        return printable(prompt, len(prompt))
    head, tail = printable(prompt[:SHOWN_HEAD], SHOWN_HEAD), printable(prompt[-SHOWN_TAIL:], SHOWN_TAIL)
    return f"{head} … {tail} ({len(prompt):,} characters)"


class LongPrompts:
    """Warnings for prompts over `limit` T5 tokens (its end-of-text token included, as the pipeline counts),
    each prompt checked once however many items and batches use it."""

    def __init__(self, count_tokens: Callable[[str], int], limit: int):
        self.count_tokens, self.limit = count_tokens, limit
        self.checked: set[str] = set()
        self.found = 0

    def warnings(self, uses: Iterable[tuple[str, str]]) -> list[str]:
        """One line per prompt first seen among `uses` ((job, prompt) pairs) that is too long."""
        lines = []
        for job, prompt in uses:
            if prompt in self.checked:
                continue
            self.checked.add(prompt)
            tokens = self.count_tokens(prompt)
            if tokens <= self.limit:
                continue
            self.found += 1
            if self.found <= MOST_LISTED:
                lines.append(truncation_warning(job, prompt, tokens, self.limit))
            elif self.found == MOST_LISTED + 1:
                lines.append(f"job {job}: more prompts are over {self.limit} T5 tokens (not listed one by one)")
        return lines


def planned_long_prompts(config: PipelineConfig, plans) -> list[str]:
    """`plan`'s warnings, where the model's T5 tokenizer is at hand without downloading anything (a model folder,
    or a model in the Hugging Face cache); none otherwise: `run` says it once the pipeline is loaded."""
    count = _tokenizer_counter(config)
    if count is None:
        return []
    long_prompts = LongPrompts(count, config.max_sequence_length)
    return long_prompts.warnings((plan.name, item.prompt) for plan in plans for item in plan.items)


def _tokenizer_counter(config: PipelineConfig) -> Callable[[str], int] | None:
    model = config.base_model if config.is_single_file else config.model
    if model is None:
        return None
    if model.startswith(LOCAL_PREFIXES):
        file = Path(model).expanduser() / "tokenizer_2" / "tokenizer.json"
    else:
        from huggingface_hub import constants  # the cache's place, without the download machinery's imports

        if not os.path.isdir(os.path.join(constants.HF_HUB_CACHE, "models--" + model.replace("/", "--"))):
            return None  # the model is not in the cache at all (try_to_load_from_cache's own first test)
        from huggingface_hub import try_to_load_from_cache  # a tenth of `plan`'s time: only where it may find one

        try:
            found = try_to_load_from_cache(model, "tokenizer_2/tokenizer.json", revision=config.revision)
        except ValueError:  # a name the hub would not take: loading the pipeline will say so
            found = None
        file = Path(found) if isinstance(found, str) else None
    if file is None or not file.is_file():
        return None
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_file(str(file))
    except Exception:  # noqa: BLE001 - the library raises a bare Exception for a file it cannot parse
        return None
    return lambda prompt: len(tokenizer.encode(prompt).ids)
