"""The bad-input matrix: every registered method and every ``studio`` command x every bad input of
each input class it declares (``inputs()``, ``studio.io.inputs.Kind``) ends with exit status 2,
one ``error:`` line, no traceback and no new file.

The cases are generated from the registered entry points (``nerfstudio.method_configs``) and the
``studio`` verb table, so a new method or verb joins the matrix by declaring its inputs. Each case
runs the real entry point in-process (``ns-train``'s and ``studio``'s ``entrypoint``) with one
input bad and the others good; the step after validation (``launch`` / the command's ``main``) is
replaced by a failure, so a bad input that passes validation fails the case instead of training.
A few cases also run as real subprocesses.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import json
import os
import struct
import subprocess
import sys
import typing
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from conftest import write_nerf_synthetic, write_nerfstudio
from PIL import Image

from studio.io.inputs import Input, Kind

Maker = Callable[[Path, Input], str]


# ----------------------------------------------------------------------------- bad values per kind
def _write(path: Path, data: bytes) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return str(path)


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG declaring ``width`` x ``height`` with an empty image data chunk."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"") + chunk(b"IEND", b"")


def _truncated_png(tmp: Path) -> bytes:
    path = tmp / "whole.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(path)
    return path.read_bytes()[:400]


def _ply(count: int, payload: bytes = b"") -> bytes:
    head = f"ply\nformat binary_little_endian 1.0\nelement vertex {count}\nproperty float x\nproperty float y\nproperty float z\nend_header\n"
    return head.encode() + payload


def _glb(length_delta: int) -> bytes:
    doc = json.dumps({"asset": {"version": "2.0"}}).encode().ljust(32)
    body = struct.pack("<II", len(doc), 0x4E4F534A) + doc
    return struct.pack("<III", 0x46546C67, 2, 12 + len(body) + length_delta) + body


def _exr(width: int, height: int) -> bytes:
    def attr(name: str, typ: str, data: bytes) -> bytes:
        return name.encode() + b"\0" + typ.encode() + b"\0" + struct.pack("<i", len(data)) + data

    channels = attr("channels", "chlist", b"R\0" + struct.pack("<iBBBBii", 2, 0, 0, 0, 0, 1, 1) + b"\0")
    window = attr("dataWindow", "box2i", struct.pack("<iiii", 0, 0, width - 1, height - 1))
    return struct.pack("<II", 0x01312F76, 2) + channels + window + b"\0"


def _safetensors(header: dict, data_bytes: int) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + bytes(data_bytes)


def _dataset_variant(tmp: Path, name: str, edit: Callable[[Path], None]) -> str:
    root = write_nerf_synthetic(tmp / name, n=2, size=8)
    edit(root)
    return str(root)


def _edit_json(path: Path, change: Callable[[dict], None]) -> None:
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))


def _nan_pose(meta: dict) -> None:
    meta["frames"][0]["transform_matrix"][0][0] = float("nan")


def _nerfstudio_with_huge_points(tmp: Path) -> str:
    root = write_nerfstudio(tmp / "ns_points", n=3, size=8)
    _write(root / "points3D.ply", _ply(10**9))
    _edit_json(root / "transforms.json", lambda meta: meta.update(ply_file_path="points3D.ply"))
    return str(root)


MALICIOUS_YAML = "!!python/object/apply:os.system ['touch PWNED']\n"

BAD: dict[Kind, dict[str, Maker]] = {
    Kind.DATASET: {
        "missing": lambda t, i: str(t / "no_such_dataset"),
        "empty folder": lambda t, i: str((t / "empty_dataset").mkdir() or t / "empty_dataset"),
        "camera file not JSON": lambda t, i: _dataset_variant(
            t, "ds_json", lambda r: (r / "transforms_train.json").write_text("{frames: [")
        ),
        "camera file without frames": lambda t, i: _dataset_variant(
            t, "ds_frames", lambda r: _edit_json(r / "transforms_train.json", lambda m: m.update(frames=[]))
        ),
        "camera file with NaN pose": lambda t, i: _dataset_variant(
            t, "ds_nan", lambda r: _edit_json(r / "transforms_test.json", _nan_pose)
        ),
        "missing image": lambda t, i: _dataset_variant(t, "ds_noimg", lambda r: (r / "train" / "r_0.png").unlink()),
        "corrupt image": lambda t, i: _dataset_variant(
            t, "ds_corrupt", lambda r: (r / "val" / "r_1.png").write_bytes(b"not a png")
        ),
        "point cloud claiming 1e9 points": lambda t, i: _nerfstudio_with_huge_points(t),
    },
    Kind.CAMERAS: {
        "missing": lambda t, i: str(t / "no_such_cams.json"),
        "not JSON": lambda t, i: _write(t / "cams_bad.json", b"{frames: ["),
        "without frames": lambda t, i: _write(t / "cams_empty.json", b'{"camera_angle_x": 0.7, "frames": []}'),
        "without a field of view": lambda t, i: _write(
            t / "cams_nofov.json", json.dumps({"frames": [{"transform_matrix": np.eye(4).tolist()}]}).encode()
        ),
        "NaN pose": lambda t, i: _write(
            t / "cams_nan.json",
            json.dumps({"camera_angle_x": 0.7, "frames": [{"transform_matrix": [[float("nan")] * 4] * 4}]}).encode(),
        ),
    },
    Kind.IMAGE: {
        "missing": lambda t, i: str(t / "no_such.png"),
        "empty file": lambda t, i: _write(t / "empty.png", b""),
        "not an image": lambda t, i: _write(t / "text.png", b"hello, not a picture"),
        "truncated PNG": lambda t, i: _write(t / "truncated.png", _truncated_png(t)),
        "header claiming 1.4e8 pixels": lambda t, i: _write(t / "bomb.png", _png_claiming(12_000, 12_000)),
        "header claiming 1e10 pixels": lambda t, i: _write(t / "bomb2.png", _png_claiming(100_000, 100_000)),
        "a folder": lambda t, i: str((t / "folder.png").mkdir() or t / "folder.png"),
    },
    Kind.PROMPT: {
        "empty": lambda t, i: "",
        "blank": lambda t, i: "   ",
        "control characters": lambda t, i: "a red\x07 ball",
        "too long": lambda t, i: "a red ball " * 300,
    },
    Kind.PROMPT_FILE: {
        "missing": lambda t, i: str(t / "no_such_prompts.txt"),
        "empty file": lambda t, i: _write(t / "empty_prompts.txt", b""),
        "binary garbage": lambda t, i: _write(t / "garbage_prompts.txt", b"\xff\xfe\x00\x81garbage\x80"),
        "only comments": lambda t, i: _write(t / "comments_prompts.txt", b"# a red ball\n\n   # a blue box\n"),
        "caption with control characters": lambda t, i: _write(t / "ctrl_prompts.txt", b"a red ball\na red\x07 box\n"),
        "101 captions": lambda t, i: _write(t / "many_prompts.txt", b"a red ball\n" * 101),
    },
    Kind.PLY: {
        "missing": lambda t, i: str(t / "no_such.ply"),
        "not a PLY": lambda t, i: _write(t / "text.ply", b"solid nothing\n"),
        "claims 1e9 vertices": lambda t, i: _write(t / "huge.ply", _ply(10**9, bytes(64))),
        "truncated": lambda t, i: _write(t / "short.ply", _ply(100, bytes(12 * 99))),
        "no end_header": lambda t, i: _write(t / "nohead.ply", b"ply\nformat ascii 1.0\nelement vertex 1\n"),
    },
    Kind.EXR: {
        "missing": lambda t, i: str(t / "no_such.exr"),
        "not an EXR": lambda t, i: _write(t / "text.exr", b"just text, no magic"),
        "truncated header": lambda t, i: _write(t / "cut.exr", _exr(4, 4)[:30]),
        "claims 10^10 pixels": lambda t, i: _write(t / "huge.exr", _exr(100_000, 100_000)),
    },
    Kind.SAFETENSORS: {
        "missing": lambda t, i: str(t / "no_such.safetensors"),
        "not safetensors": lambda t, i: _write(t / "text.safetensors", b"hello world, this is not it"),
        "header longer than file": lambda t, i: _write(t / "long.safetensors", struct.pack("<Q", 10**12) + b"{}"),
        "tensor outside file": lambda t, i: _write(
            t / "outside.safetensors",
            _safetensors({"w": {"dtype": "F32", "shape": [10**9], "data_offsets": [0, 4 * 10**9]}}, 8),
        ),
    },
    Kind.CONFIG: {
        "missing": lambda t, i: str(t / "no_such.yml"),
        "not YAML": lambda t, i: _write(t / "broken.yml", b"a: [unclosed\n  - {"),
        "code-executing tag": lambda t, i: _write(t / "evil.yml", MALICIOUS_YAML.encode()),
        "not a run config": lambda t, i: _write(t / "plain.yml", b"a: 1\n"),
    },
    Kind.CHECKPOINT: {
        "missing": lambda t, i: str(t / "no_such_ckpts"),
        "folder without checkpoints": lambda t, i: str((t / "no_ckpts").mkdir() or t / "no_ckpts"),
        "not a checkpoint": lambda t, i: _write(t / "step-000000001.ckpt", b"not a zip archive"),
    },
    Kind.PRIOR: {
        "unknown name": lambda t, i: "no-such-prior",
        "missing folder": lambda t, i: str(t / "no_such_prior_dir") + "/",
        "folder without weights": lambda t, i: str((t / "empty_prior").mkdir() or t / "empty_prior"),
        "corrupt safetensors": lambda t, i: _write(t / "prior.safetensors", b"\x08" + bytes(7) + b"garbage!"),
    },
    Kind.CHOICE: {"unknown name": lambda t, i: "no-such-choice"},
    Kind.OUTPUT_DIR: {
        "under a file": lambda t, i: str(Path(_write(t / "a_file", b"x")) / "out"),
        "an existing file": lambda t, i: _write(t / "file_not_dir", b"x"),
        "not writable": lambda t, i: "/proc/studio-bad-output",
    },
    Kind.OUTPUT_FILE: {
        "wrong suffix": lambda t, i: str(t / "out.wrong"),
        "under a file": lambda t, i: str(Path(_write(t / "b_file", b"x")) / f"out{_suffix(i)}"),
        "an existing folder": lambda t, i: str((t / f"dir{_suffix(i)}").mkdir() or t / f"dir{_suffix(i)}"),
        "not writable": lambda t, i: f"/proc/studio-bad-output{_suffix(i)}",
    },
}
BAD[Kind.SCENE] = {
    **{f"PLY {k}": v for k, v in BAD[Kind.PLY].items()},
    "GLB with a wrong length": lambda t, i: _write(t / "bad.glb", _glb(+100)),
    "GLB not glTF": lambda t, i: _write(t / "text.glb", b"not a binary gltf at all, sorry"),
    "unsupported suffix": lambda t, i: _write(t / "scene.txt", b"x"),
    **{f"config {k}": v for k, v in BAD[Kind.CONFIG].items()},
}


def _suffix(item: Input) -> str:
    return item.suffixes[0] if item.suffixes else ".out"


# ---------------------------------------------------------------------------- good values per kind
def _good_config(tmp: Path) -> Path:
    """A run config.yml as Nerfstudio writes it (no checkpoint needed to pass validation)."""
    import yaml

    from studio.models.registry import registered_config

    config = registered_config("studio-splat")
    path = tmp / "good" / "config.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.dump(config), encoding="utf-8")
    return path


def _good_scene(tmp: Path) -> Path:
    import trimesh

    path = tmp / "good" / "box.ply"
    path.parent.mkdir(parents=True, exist_ok=True)
    trimesh.creation.box().export(path)
    return path


def _good_image(tmp: Path) -> Path:
    path = tmp / "good" / "object.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[8:24, 8:24] = (200, 40, 40, 255)
    Image.fromarray(rgba).save(path)
    return path


GOOD: dict[Kind, Callable[[Path, Input], str]] = {
    Kind.DATASET: lambda t, i: str(write_nerf_synthetic(t / "good" / "dataset", n=2, size=8)),
    Kind.IMAGE: lambda t, i: str(_good_image(t)),
    Kind.CAMERAS: lambda t, i: _write(
        t / "good" / "cams.json",
        json.dumps({"camera_angle_x": 0.7, "frames": [{"transform_matrix": np.eye(4).tolist()}] * 2}).encode(),
    ),
    Kind.PROMPT: lambda t, i: "a red ball",
    Kind.PROMPT_FILE: lambda t, i: _write(t / "good" / "prompts.txt", b"a red ball\n"),
    Kind.SCENE: lambda t, i: str(_good_scene(t)),
    Kind.CONFIG: lambda t, i: str(_good_config(t)),
    Kind.PRIOR: lambda t, i: "toy-t2i",
    Kind.CHOICE: lambda t, i: i.choices[0],
    Kind.OUTPUT_FILE: lambda t, i: str(t / "good" / f"out{_suffix(i)}"),
    Kind.OUTPUT_DIR: lambda t, i: str(t / "good" / "outdir"),
}


# ----------------------------------------------------------------------------------- the commands
@dataclasses.dataclass
class Command:
    """One command of the matrix: ``argv_head`` (e.g. ``["ns-train", "prd"]``), its declared inputs,
    fixed extra arguments, and how it is run in-process."""

    name: str
    program: str
    head: list[str]
    inputs: list[Input]
    extra: list[str]


def _method_commands() -> list[Command]:
    from studio.models.registry import registered_methods

    out = []
    for name, spec in sorted(registered_methods().items()):
        config = copy.deepcopy(spec.config)
        extra = ["--preset", "tiny", "--vis", "tensorboard"]
        if hasattr(config.pipeline.model, "prompt"):  # methods with an optional prompt: tried with one
            config.pipeline.model.prompt = GOOD[Kind.PROMPT](Path(), None)
        config.preset = "tiny"
        config.apply_preset({"model": {"prompt"}})  # the inputs of the configuration the commands run
        out.append(Command(f"ns-train {name}", "ns-train", [name], config.inputs(), extra))
    return out


def _placeholder(hint) -> object:
    """A value for a required dataclass field, only used to ask the command for its inputs."""
    text = str(hint)
    if text.startswith("list[") and "Path" in text:
        return [Path("placeholder")]
    if "Path" in text:
        return Path("placeholder")
    if "int" in text:
        return 1
    return "placeholder"


def _verb_commands() -> list[Command]:
    from studio.cli.main import VERBS

    out = []
    for verb, (module, attr, _) in VERBS.items():
        target = getattr(importlib.import_module(module), attr)
        commands = target.items() if isinstance(target, dict) else [(None, target)]
        for sub, cls in commands:
            hints = typing.get_type_hints(cls, include_extras=True)
            required = {
                f.name: _placeholder(hints[f.name])
                for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            }
            head = [verb] + ([sub] if sub else [])
            declared = cls(**required).inputs() if hasattr(cls, "inputs") else []
            out.append(Command("studio " + " ".join(head), "studio", head, declared, []))
    return out


def _argv(command: Command, tmp: Path, bad: Input | None, bad_value: str | None) -> list[str]:
    """Command line with every required input good, ``--output-dir`` in ``tmp``, and ``bad`` bad."""
    values: dict[str, str] = {}
    for item in command.inputs:
        if item is bad:
            values[item.flag] = item.pattern.format(bad_value)
        elif item.required or item.kind is Kind.PROMPT:
            values[item.flag] = item.pattern.format(GOOD[item.kind](tmp, item))
    argv = list(command.head)
    argv += [v for flag, v in values.items() if not flag.startswith("--")]  # positionals
    for flag, value in values.items():
        if flag.startswith("--"):
            argv += [flag, value]
    extra = list(command.extra)
    if command.program == "ns-train" and "--output-dir" not in values:
        extra += ["--output-dir", str(tmp / "outputs")]
    if command.program == "ns-train" and bad is not None and bad.flag == "--preset":
        extra = [a for a in extra if a not in ("--preset", "tiny")]
    return argv + extra


def _cases() -> list:
    cases = []
    for command in _method_commands() + _verb_commands():
        for item in command.inputs:
            for case, maker in BAD.get(item.kind, {}).items():
                if item.kind is Kind.OUTPUT_FILE and case == "wrong suffix" and not item.suffixes:
                    continue
                cases.append(pytest.param(command, item, maker, id=f"{command.name} {item.flag} {case}"))
    return cases


CASES = _cases()


@pytest.fixture(scope="module")
def ns_train_entrypoint():
    from nerfstudio.scripts import train

    return train.entrypoint


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


@pytest.mark.parametrize("command,item,maker", CASES)
def test_bad_input_is_one_error_line_and_writes_nothing(
    command, item, maker, tmp_path, monkeypatch, capsys, ns_train_entrypoint
):
    monkeypatch.chdir(tmp_path)
    argv = _argv(command, tmp_path, item, maker(tmp_path, item))
    before = _files(tmp_path)
    if command.program == "ns-train":
        import nerfstudio.scripts.train as train

        monkeypatch.setattr(train, "launch", lambda **kw: pytest.fail("a bad input passed validation"))
        monkeypatch.setattr(sys, "argv", ["ns-train", *argv])
        run = ns_train_entrypoint
    else:
        from studio.cli.main import entrypoint

        _fail_after_validation(monkeypatch, command)
        run = lambda: entrypoint(argv)  # noqa: E731
    with pytest.raises(SystemExit) as stop:
        run()
    out, err = capsys.readouterr()
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert stop.value.code == 2, err
    assert len(errors) == 1 and item.flag in errors[0], err
    assert "Traceback" not in out + err
    assert _files(tmp_path) == before, sorted(map(str, _files(tmp_path) - before))


def _fail_after_validation(monkeypatch, command: Command) -> None:
    from studio.cli.main import VERBS

    verb, *sub = command.head
    module, attr, _ = VERBS[verb]
    target = getattr(importlib.import_module(module), attr)
    cls = target[sub[0]] if sub else target
    monkeypatch.setattr(cls, "main", lambda self: pytest.fail("a bad input passed validation"))


def test_matrix_covers_every_method_verb_and_input_class():
    from studio.cli.main import VERBS
    from studio.models.registry import registered_methods

    names = {case.values[0].name for case in CASES}
    assert {f"ns-train {m}" for m in registered_methods()} <= names
    verbs = {name.split()[1] for name in names if name.startswith("studio ")}
    assert verbs == set(VERBS)
    kinds = {case.values[1].kind for case in CASES}
    assert kinds == set(Kind)
    print(f"bad-input matrix: {len(CASES)} cases over {len(names)} commands and {len(kinds)} input classes")


def test_input_error_found_while_setting_up_removes_the_new_run_folder(
    tmp_path, monkeypatch, capsys, ns_train_entrypoint
):
    """An image with no object passes the header checks; the reference preprocessing refuses it
    after ``config.yml`` was written, and the run folder goes away again."""
    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (32, 32), (255, 255, 255)).save(tmp_path / "white.png")
    before = _files(tmp_path)
    argv = ["ns-train", "dreamcraft3d", "--data", "white.png", "--preset", "tiny", "--vis", "tensorboard"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as stop:
        ns_train_entrypoint()
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert stop.value.code == 2
    assert len(errors) == 1 and "--data white.png: no foreground" in errors[0]
    assert _files(tmp_path) == before


NS_TRAIN = str(Path(sys.executable).with_name("ns-train"))
STUDIO = str(Path(sys.executable).with_name("studio"))


@pytest.mark.parametrize(
    "argv",
    [
        [NS_TRAIN, "dreamcraft3d", "--data", "corrupt.png", "--vis", "tensorboard"],
        [STUDIO, "view", "huge.ply"],
    ],
    ids=["ns-train dreamcraft3d corrupt.png", "studio view huge.ply"],
)
def test_real_commands_stop_before_writing_or_serving(argv, tmp_path):
    _write(tmp_path / "corrupt.png", b"\x89PNG\r\n\x1a\n garbage")
    _write(tmp_path / "huge.ply", _ply(10**9, bytes(64)))
    before = _files(tmp_path)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 2
    assert [line for line in result.stderr.splitlines() if line.strip()] == [result.stderr.strip()]
    assert result.stderr.startswith("error:") and "http://" not in result.stdout
    assert _files(tmp_path) == before
