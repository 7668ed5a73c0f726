"""Adding a method = its folder + ``configs/<name>.yaml`` + one entry-point line: a throwaway
method, registered only through an entry point, joins the method lists of the tests, the viewer
and ``studio eval``, and its preset applies."""

from __future__ import annotations

import importlib
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

import studio.methods
from studio.models import presets, registry

CONFIG_PY = """
from dataclasses import dataclass, field
from typing import Type

from nerfstudio.pipelines.base_pipeline import VanillaPipelineConfig

from studio.data.reference import ReferenceDataManagerConfig
from studio.models.optimizers import SPLAT_OPTIMIZERS, with_groups
from studio.models.splat import SplatModel, SplatModelConfig
from studio.models.trainer import method_specification


class ToyModel(SplatModel):
    def render_relit(self, camera, light):
        return self.get_outputs(camera)["rgb"]


@dataclass
class ToyModelConfig(SplatModelConfig):
    _target: Type = field(default_factory=lambda: ToyModel)
    toy_weight: float = 1.0


toy_method = method_specification(
    "toy-method", VanillaPipelineConfig(datamanager=ReferenceDataManagerConfig(), model=ToyModelConfig()),
    with_groups(SPLAT_OPTIMIZERS), "A throwaway method.", max_num_iterations=100,
)
"""


@pytest.fixture()
def toy_method(tmp_path: Path, monkeypatch):
    folder = tmp_path / "methods" / "toy_method"
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text('"""A throwaway method."""\n')
    (folder / "config.py").write_text(CONFIG_PY)
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "toy-method.yaml").write_text(
        "tiny:\n  trainer:\n    max_num_iterations: 7\n  model:\n    toy_weight: 0.5\nfull: {}\n"
    )
    dist = tmp_path / "site" / "toy_method-0.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-method\nVersion: 0.0\n")
    (dist / "entry_points.txt").write_text(
        textwrap.dedent("""\
        [nerfstudio.method_configs]
        toy-method = studio.methods.toy_method.config:toy_method
        """)
    )
    monkeypatch.setattr(studio.methods, "__path__", [*studio.methods.__path__, str(tmp_path / "methods")])
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setattr(presets, "PRESET_DIRS", [configs])
    importlib.invalidate_caches()
    yield "toy-method"
    for name in [m for m in sys.modules if m.startswith("studio.methods.toy_method")]:
        del sys.modules[name]


def test_a_new_method_joins_every_list(toy_method: str, tmp_path: Path):
    from studio.viewer.prd_renderer import is_prd_config

    assert toy_method in registry.registered_methods()  # the tests' list (tests/test_presets.py)
    assert toy_method in registry.relighting_methods()  # `studio eval prd` and the viewer's PBR channels
    assert toy_method in registry.image_to_3d_methods()  # `studio eval image-to-3d --method`
    config = registry.registered_config(toy_method)
    path = tmp_path / "config.yml"
    path.write_text(yaml.dump(config), encoding="utf-8")
    assert is_prd_config(path)


def test_a_new_methods_preset_applies(toy_method: str):
    import copy

    config = copy.deepcopy(registry.registered_config(toy_method))
    config.preset = "tiny"
    config.validate_inputs = lambda: None
    config.resolve()
    assert config.max_num_iterations == 7 and config.pipeline.model.toy_weight == 0.5
