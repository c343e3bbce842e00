"""A `file_name` two items share: the message names what tells the two items apart (the prompt, cut after 80
characters, a variation, a seed given), not every parameter they share."""

from __future__ import annotations

from .conftest import PHOTOS, batch_edit

CAT = PHOTOS / "cat.jpg"


def refusal(tmp_path, tiny_config, job: str) -> str:
    (tmp_path / "m.yaml").write_text(
        f"jobs:\n  - {{name: t, sources: {CAT}, file_name: '{{stem}}-{{strength}}', {job}}}\n"
    )
    result = batch_edit("plan", "m.yaml", "--pipeline", str(tiny_config), cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    [line] = [line for line in result.stderr.splitlines() if "gives two items the name" in line]
    return line


def test_items_differing_by_prompt_are_named_by_their_prompts(tmp_path, tiny_config):
    line = refusal(tmp_path, tiny_config, "prompts: [a red car, a blue car]")
    assert "the name 'cat-0.9': (cat, prompt 'a red car') and (cat, prompt 'a blue car');" in line
    assert "steps" not in line and "seed" not in line  # shared, or derived from the prompt


def test_a_long_prompt_is_cut_after_80_characters(tmp_path, tiny_config):
    long = "a very long prompt " * 10
    line = refusal(tmp_path, tiny_config, f"prompts: ['{long}', short]")
    assert f"(cat, prompt '{long[:80]}… ({len(long)} characters)') and (cat, prompt 'short')" in line


def test_variations_are_named_by_variation_and_given_seeds_by_seed(tmp_path, tiny_config):
    line = refusal(tmp_path, tiny_config, "prompts: x, variations: 2")
    assert "(cat, variation 0) and (cat, variation 1);" in line
    line = refusal(tmp_path, tiny_config, "prompts: x, seed: [1, 2]")
    assert "(cat, seed 1) and (cat, seed 2);" in line
