"""Presets (``configs/<method>.yaml``) are validated overrides of the registered defaults; the
command line wins; the method list comes from the entry points."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Optional, Tuple

import pytest

from studio.io.errors import StudioInputError
from studio.models.presets import apply_overrides, check_overrides, command_line_fields, load_preset
from studio.models.registry import registered_methods

METHODS = sorted(registered_methods())


def test_the_registered_methods_include_the_shipped_ones():
    assert {"studio-splat", "prd", "sds", "dreamcraft3d"} <= set(METHODS)


@pytest.mark.parametrize("preset", ["tiny", "full"])
@pytest.mark.parametrize("method", METHODS)
def test_every_preset_value_reaches_its_config(method: str, preset: str):
    default = registered_methods()[method].config
    config = copy.deepcopy(default)
    values = load_preset(method, preset)
    for section in ("trainer", "model", "datamanager"):
        target = {"trainer": config, "model": config.pipeline.model, "datamanager": config.pipeline.datamanager}[
            section
        ]
        reference = {"trainer": default, "model": default.pipeline.model, "datamanager": default.pipeline.datamanager}[
            section
        ]
        apply_overrides(target, reference, values[section])
        for name, value in check_overrides(target, values[section], "test").items():
            assert getattr(target, name) == value, (method, preset, name)


@dataclass
class Config:
    scale: float = 1.0
    steps: int = 10
    prior: str = "big"
    iters: Tuple[int, int] = (5, 5)
    path: Optional[str] = None


def test_overrides_apply_only_to_fields_left_alone():
    default = Config()
    config = Config(steps=20)  # set by the user (differs from the registered default)
    applied = apply_overrides(config, default, {"scale": 2.0, "steps": 5, "prior": "toy"}, explicit={"prior"})
    assert applied == ["scale"] and config.scale == 2.0 and config.steps == 20 and config.prior == "big"
    apply_overrides(config, default, {"iters": [1, 2]})
    assert config.iters == (1, 2)  # YAML lists become tuples


@pytest.mark.parametrize(
    "values, message",
    [
        ({"nope": 1}, "no field 'nope'"),
        ({"steps": "ten"}, "does not match"),
        ({"steps": 1.5}, "does not match"),
        ({"iters": [1, 2, 3]}, "does not match"),
        ({"scale": True}, "does not match"),
    ],
)
def test_unknown_or_mistyped_preset_values_are_one_error(values: dict, message: str):
    with pytest.raises(StudioInputError, match=message):
        check_overrides(Config(), values, "configs/x.yaml tiny.model")


def test_command_line_fields_per_section():
    argv = [
        "prd",
        "--data",
        "d",
        "--max-num-iterations",
        "5",
        "--pipeline.model.light-resolution=64",
        "--pipeline.datamanager.views-per-batch",
        "2",
        "--pipeline.model.nerf.radius",
        "1",
    ]
    fields = command_line_fields(argv)
    assert {"data", "max_num_iterations"} <= fields["trainer"]
    assert {"light_resolution", "nerf.radius"} == fields["model"] and fields["datamanager"] == {"views_per_batch"}


def test_an_explicit_value_equal_to_the_default_still_wins():
    from studio.methods.prd.config import prd

    config = copy.deepcopy(prd.config)
    config.preset = "tiny"
    config.pipeline.datamanager.data = None
    config.validate_inputs = lambda: None  # no dataset needed to resolve the preset
    config.resolve({"model": {"light_resolution"}})
    model = config.pipeline.model
    assert model.light_resolution == 64  # the default, given on the command line: the preset's 16 does not apply
    assert model.visibility_resolution == 16 and tuple(model.stage_iters) == (2000, 400, 800, 400)
    assert config.max_num_iterations == 3600
