"""The line a run prints as it loads the pipeline names the task where it is not img2img, as `plan` does."""

from __future__ import annotations

from batch_edit.engine import described
from batch_edit.pipeline_config import PipelineConfig


def test_the_loading_line_names_a_task_other_than_img2img():
    config = dict(model="models/tiny", device="cpu", local_files_only=True)
    assert described(PipelineConfig(**config, task="inpaint")).endswith(", task inpaint)")
    assert "task" not in described(PipelineConfig(**config))
