"""The tiny/full presets of every method (``configs/<method>.yaml``) can take effect."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Optional

import pytest

from studio.engine.presets import fill_unset, load_preset

METHODS = ("studio-splat", "prd", "sds", "dreamcraft3d")


@pytest.mark.parametrize("preset", ["tiny", "full"])
def test_every_preset_value_reaches_its_config(preset: str):
    from nerfstudio.plugins.registry import discover_methods

    methods, _ = discover_methods()
    for name in METHODS:
        config = copy.deepcopy(methods[name])
        values = load_preset(name, preset)
        targets = {"trainer": config, "model": config.pipeline.model, "datamanager": config.pipeline.datamanager}
        for section, target in targets.items():
            fill_unset(target, values[section])  # raises if a value could never apply
            for field, value in values[section].items():
                assert getattr(target, field) == value, (name, preset, field)


def test_a_preset_value_for_a_field_with_a_default_is_an_error():
    @dataclass
    class Config:
        scale: Optional[float] = None
        steps: int = 10

    config = Config()
    assert fill_unset(config, {"scale": 2.0}) == ["scale"] and config.scale == 2.0
    assert fill_unset(config, {"scale": 3.0}) == [] and config.scale == 2.0  # an explicit value wins
    with pytest.raises(ValueError, match="steps"):
        fill_unset(Config(), {"steps": 5})
