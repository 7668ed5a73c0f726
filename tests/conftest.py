"""Shared fixtures: small synthetic datasets written into tmp folders."""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 (now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def studio_process(*args: str) -> Iterator[tuple[subprocess.Popen, list[str]]]:
    """Run ``studio ARGS`` (``python -m studio.cli.main``) in a subprocess, stdout and stderr read by a thread.

    Yields (process, output lines so far); on exit stops a process still running with Ctrl-C
    (SIGINT), killing it after 15 s.
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", "studio.cli.main", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []

    def read_output() -> None:
        for line in proc.stdout:
            lines.append(line)

    threading.Thread(target=read_output, daemon=True).start()
    try:
        yield proc, lines
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def cuda_home() -> str | None:
    """A CUDA toolkit folder with nvcc and the runtime headers, or None."""
    from torch.utils import cpp_extension

    nvcc = shutil.which("nvcc")
    candidates = (
        os.environ.get("CUDA_HOME"),
        "/usr/local/cuda-13.0",
        "/usr/local/cuda",
        cpp_extension.CUDA_HOME,
        str(Path(nvcc).resolve().parent.parent) if nvcc else None,
    )
    for home in candidates:
        if home and (Path(home) / "bin" / "nvcc").is_file() and (Path(home) / "include" / "cuda_runtime.h").is_file():
            return home
    return None


def cuda_extension(name: str) -> Iterator:
    """Fixture body: build and load extension ``name`` with its CUDA sources (no GPU needed).

    Skips without nvcc; sets CUDA_HOME and, without a GPU to detect, TORCH_CUDA_ARCH_LIST=9.0.
    """
    import torch
    from torch.utils import cpp_extension

    from studio.ext import load_extension

    home = cuda_home()
    if home is None:
        pytest.skip("nvcc (CUDA toolkit) not found")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CUDA_HOME", home)
        mp.setattr(cpp_extension, "CUDA_HOME", home)  # read once, when torch imported it
        if not torch.cuda.is_available() and not os.environ.get("TORCH_CUDA_ARCH_LIST"):
            mp.setenv("TORCH_CUDA_ARCH_LIST", "9.0")
        yield load_extension(name, with_cuda=True)


def orbit_c2w(n: int, radius: float = 4.0) -> list[list[list[float]]]:
    """n camera-to-world matrices (OpenGL axes) on a circle around the origin, looking at it."""
    mats = []
    for i in range(n):
        az = 2 * math.pi * i / n
        eye = np.array([radius * math.cos(az), radius * math.sin(az), 1.0])
        back = eye / np.linalg.norm(eye)  # camera +z points away from the target
        right = np.cross([0.0, 0.0, 1.0], back)
        right /= np.linalg.norm(right)
        up = np.cross(back, right)
        m = np.eye(4)
        m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = right, up, back, eye
        mats.append(m.tolist())
    return mats


def write_nerf_synthetic(root: Path, n: int = 3, size: int = 16) -> Path:
    """A NeRF-synthetic folder with n RGBA frames per split (a grey disc on transparency)."""
    yy, xx = np.mgrid[:size, :size]
    disc = ((xx - size / 2) ** 2 + (yy - size / 2) ** 2) < (size / 3) ** 2
    rgba = np.zeros((size, size, 4), np.uint8)
    rgba[disc] = (128, 128, 128, 255)
    for split in ("train", "val", "test"):
        (root / split).mkdir(parents=True, exist_ok=True)
        frames = []
        for i, c2w in enumerate(orbit_c2w(n)):
            Image.fromarray(rgba).save(root / split / f"r_{i}.png")
            frames.append({"file_path": f"./{split}/r_{i}", "transform_matrix": c2w})
        (root / f"transforms_{split}.json").write_text(json.dumps({"camera_angle_x": 0.69, "frames": frames}))
    return root


@pytest.fixture
def nerf_synthetic(tmp_path: Path) -> Path:
    return write_nerf_synthetic(tmp_path / "scene")


def write_nerfstudio(root: Path, n: int = 10, size: int = 16) -> Path:
    """A Nerfstudio-format dataset (transforms.json, per-frame intrinsics) of RGB images."""
    scene = write_nerf_synthetic(root / "_src", n=n, size=size)
    meta = json.loads((scene / "transforms_train.json").read_text())
    focal = 0.5 * size / math.tan(0.5 * meta["camera_angle_x"])
    (root / "images").mkdir(parents=True, exist_ok=True)
    frames = []
    for i, frame in enumerate(meta["frames"]):
        rgb = Image.open(scene / (frame["file_path"][2:] + ".png")).convert("RGB")
        rgb.save(root / "images" / f"frame_{i:03d}.png")
        frames.append(
            {
                "file_path": f"images/frame_{i:03d}.png",
                "transform_matrix": frame["transform_matrix"],
                "fl_x": focal,
                "fl_y": focal,
                "cx": size / 2,
                "cy": size / 2,
                "w": size,
                "h": size,
            }
        )
    (root / "transforms.json").write_text(json.dumps({"camera_model": "OPENCV", "frames": frames}))
    return root


def _inverse_dataset(root: Path, size: int = 16, n: int = 3) -> Path:
    """write_nerf_synthetic + test AOVs, a relit split test_sun/ and meta.json naming its env map."""
    from studio.io.exr import write_exr

    write_nerf_synthetic(root, n=n, size=size)
    (root / "test_sun").mkdir()
    (root / "envs").mkdir()
    for i in range(n):
        rgba = np.asarray(Image.open(root / "test" / f"r_{i}.png"))
        Image.fromarray(np.full((size, size, 3), 180, np.uint8)).save(root / "test" / f"albedo_{i:04d}.png")
        Image.fromarray(np.full((size, size), 128, np.uint8)).save(root / "test" / f"roughness_{i:04d}.png")
        normal = np.zeros((size, size, 3), np.float32)
        normal[..., 2] = 1.0
        write_exr(root / "test" / f"normal_{i:04d}.exr", normal)
        Image.fromarray(rgba).save(root / "test_sun" / f"r_{i}.png")
    env = np.ones((8, 16, 3), np.float32)
    env[:4] = 2.0
    write_exr(root / "envs" / "sun.exr", env)
    meta = {"relight": [{"name": "sun", "file": "envs/sun.exr", "split": "test_sun"}]}
    (root / "meta.json").write_text(json.dumps(meta))
    return root


def _untrained_prd_run(data: Path, run: Path) -> Path:
    """A prd run folder (config.yml + a step-0 checkpoint) of an untrained model."""
    import yaml

    from studio.methods.prd.config import prd

    config = copy.deepcopy(prd.config)
    config.data = data
    config.output_dir = run.parent
    config.machine.device_type = "cpu"
    config.pipeline.datamanager.data = data
    config.pipeline.datamanager.dataparser.data = data
    config.pipeline.model.light_resolution = 4
    config.pipeline.model.visibility_resolution = 0
    pipeline = config.pipeline.setup(device="cpu", test_mode="test")
    (run / "nerfstudio_models").mkdir(parents=True)
    torch.save({"pipeline": pipeline.state_dict(), "step": 0}, run / "nerfstudio_models" / "step-000000000.ckpt")
    (run / "config.yml").write_text(yaml.dump(config), encoding="utf-8")
    return run / "config.yml"


@pytest.fixture(scope="session")
def prd_run(tmp_path_factory) -> tuple[Path, Path]:
    """(dataset, config.yml) of an untrained prd run on a tiny dataset with AOVs and a relit split."""
    root = tmp_path_factory.mktemp("eval")
    data = _inverse_dataset(root / "scene")
    return data, _untrained_prd_run(data, root / "runs" / "scene" / "prd" / "run")


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network, and an empty Hugging Face cache (tests of the pretrained-weights adapters)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf_cache"))

    def no_network(*args, **kwargs):
        raise RuntimeError("network access attempted in an offline test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)


def save_tiny_t5_tokenizer(folder: Path) -> None:
    """A T5 tokenizer over a few ToyWorld words, built offline (skips on transformers < 5)."""
    from transformers import T5Tokenizer

    words = ["a", "red", "glossy", "torus", "blue", "sphere", "box"]
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [
        ("\u2581" + w, -1.0 - 0.1 * i) for i, w in enumerate(words)
    ]
    vocab += [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz"]
    try:
        tok = T5Tokenizer(vocab=vocab, extra_ids=0)
    except TypeError:  # transformers < 5 (sentencepiece-backed T5Tokenizer)
        pytest.skip("tiny T5 tokenizer needs transformers >= 5")
    tok.save_pretrained(folder)


def run_single_and_ddp(module: str, args: list[str], tmp_path: Path, timeout: int) -> dict[str, tuple[Path, str]]:
    """Run ``python -m module args --output F`` as one process and under ``torchrun
    --nproc_per_node=2`` (gloo on CPU), with an empty data cache in ``tmp_path``: {"single" | "ddp":
    (F, stdout + stderr)}, each run within ``timeout`` seconds; skips when torchrun is missing,
    fails on a non-zero exit."""
    import shutil
    import subprocess
    import sys

    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.is_file() and shutil.which("torchrun") is None:
        pytest.skip("torchrun not installed")
    env = {**os.environ, "DISTILL_STUDIO_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    runs = {}
    for name, prefix in [("ddp", [str(torchrun), "--nproc_per_node=2"]), ("single", [sys.executable])]:
        out = tmp_path / f"{name}.safetensors"
        cmd = [*prefix, "-m", module, *args, "--output", str(out)]
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=tmp_path)
        assert r.returncode == 0, r.stderr[-3000:]
        runs[name] = (out, r.stdout + r.stderr)
    return runs
