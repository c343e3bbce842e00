"""Why a model could not load: the hub's reasons (gated, not cached and not downloadable) told from the types it
raises and the fixed words diffusers and the hub say them in, never from a path that happens to hold such a word."""

from __future__ import annotations

import shutil

import pytest

from batch_edit.engine import _explain_load_failure
from batch_edit.pipeline_config import PipelineConfig

from .conftest import PHOTOS, batch_edit, write_pipeline_config

MANIFEST = f"jobs: [{{name: j, sources: {PHOTOS / 'cat.jpg'}, prompts: a tiger, seed: 1, num_inference_steps: 2}}]\n"


@pytest.mark.parametrize("folder", ["aggregated-flux", "offline-models/flux", "plain-flux"])
def test_a_damaged_local_model_is_said_damaged_whatever_its_folder_is_called(tmp_path, tiny_model, folder):
    model = tmp_path / folder
    shutil.copytree(tiny_model, model)
    weights = model / "transformer" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    config = write_pipeline_config(tmp_path / "p.yaml", model, quantization="{backend: none}")
    (tmp_path / "m.yaml").write_text(MANIFEST)
    result = batch_edit("run", "m.yaml", "--pipeline", str(config), "--output-root", "out", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert f"error: could not load model '{model}' (revision 'main'): Unable to load weights" in result.stderr
    assert "is gated" not in result.stderr and "local cache" not in result.stderr


def raised(exc: Exception) -> Exception:
    try:
        raise OSError("Error no file named model_index.json found") from exc
    except OSError as wrapped:
        return wrapped


def test_a_path_holding_gated_or_offline_in_an_error_about_a_hub_model_is_no_reason():
    config = PipelineConfig(model="black-forest-labs/FLUX.1-dev")
    message = _explain_load_failure(config, raised(ValueError("bad header in /data/gated/offline/cache/x.json")))
    assert message.startswith("could not load model 'black-forest-labs/FLUX.1-dev' (revision 'main'): Error no file")


def test_the_hub_and_diffusers_own_wording_still_gives_the_reason():
    config = PipelineConfig(model="black-forest-labs/FLUX.1-dev")
    gated = OSError("403 Client Error.\n\nCannot access gated repo for url https://huggingface.co/black-forest-labs")
    assert "is gated: accept its license" in _explain_load_failure(config, raised(gated))
    offline = OSError(
        "We couldn't connect to 'https://huggingface.co' to load this model, couldn't find it in the cached files "
        "and it looks like black-forest-labs/FLUX.1-dev is not the path to a directory containing a file named "
        "config.json.\nCheckout your internet connection or see how to run the library in offline mode at "
        "'https://huggingface.co/docs/diffusers/installation#offline-mode'."
    )
    assert "is not in the local cache and could not be downloaded" in _explain_load_failure(config, offline)
