"""The restricted config.yml loader builds Nerfstudio/studio configs and nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from studio.io.config_loader import load_trainer_config
from studio.io.errors import StudioInputError


def test_round_trip_of_the_method_config(tmp_path: Path):
    from studio.methods.studio_splat.config import studio_splat

    path = tmp_path / "config.yml"
    path.write_text(yaml.dump(studio_splat.config))
    config = load_trainer_config(path)
    assert config.method_name == "studio-splat"
    assert config.viewer.websocket_host == "127.0.0.1"
    assert config.pipeline.model.sh_degree == 3
    assert isinstance(config.output_dir, Path)


@pytest.mark.parametrize(
    "payload",
    [
        "!!python/object/apply:os.system ['touch {marker}']",
        "!!python/object/new:subprocess.Popen [['touch', '{marker}']]",
        "a: !!python/name:os.system\n",
        "!!python/object:collections.OrderedDict {{}}",
    ],
)
def test_unsafe_tags_are_refused_without_running_anything(tmp_path: Path, payload: str):
    marker = tmp_path / "pwned"
    path = tmp_path / "config.yml"
    path.write_text(payload.format(marker=marker))
    with pytest.raises(StudioInputError):
        load_trainer_config(path)
    assert not marker.exists()


def test_configs_of_earlier_versions_load_with_moved_classes_and_renamed_fields(tmp_path):
    from studio.io.config_loader import load_trainer_config
    from studio.methods.dreamcraft3d.model import DreamCraft3DModelConfig

    path = tmp_path / "config.yml"
    path.write_text(
        "!!python/object:studio.engine.trainer.StagedTrainerConfig\n"
        "method_name: dreamcraft3d\n"
        "pipeline: !!python/object:nerfstudio.pipelines.base_pipeline.VanillaPipelineConfig\n"
        "  model: !!python/object:studio.engine.dreamcraft3d_model.DreamCraft3DModelConfig\n"
        "    lambda_rgb: 500.0\n"
        "    stage_iters: !!python/tuple [400, 200, 200]\n",
        encoding="utf-8",
    )
    model = load_trainer_config(path).pipeline.model
    assert isinstance(model, DreamCraft3DModelConfig)
    assert model.rgb_weight == 500.0 and model.stage_iters == (400, 200, 200)
    assert model.texture_size == DreamCraft3DModelConfig().texture_size  # a field the file lacks: its default
