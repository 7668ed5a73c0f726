"""A non-editable wheel carries the package data: configs, bundled scenes, cuda/ sources."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_wheel_carries_package_data(tmp_path: Path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(REPO),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("distill_studio-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    cuda_sources = sorted(p.name for p in (REPO / "cuda").iterdir() if p.suffix in (".cpp", ".cu", ".h"))
    assert cuda_sources, "cuda/ has no sources"
    expected = [f"studio/cuda/{name}" for name in cuda_sources] + [
        "studio/configs/studio-splat.yaml",
        "studio/scenes/demo_cone/transforms_train.json",
        "studio/scenes/demo_cone/train/r_000.png",
        "studio/methods/studio_splat/config.py",
        "studio/viewer/app.py",
        "studio/render/rasterize.py",
    ]
    missing = [name for name in expected if name not in names]
    assert not missing, f"wheel lacks {missing}"
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "studio-splat = studio.methods.studio_splat.config:studio_splat" in text
    assert "studio = studio.cli.main:entrypoint" in text
