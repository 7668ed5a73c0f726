#!/usr/bin/env bash
# `make demo`: image-to-3D with DreamCraft3D on the bundled image (a held-out ToyWorld object the
# embedded priors never saw), with the embedded priors, on CPU (tiny preset). Writes a textured
# mesh and the Gaussians, checks that both open, renders a turntable of the textured mesh and
# prints `studio view`.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
OUT=${DEMO_OUTPUT:-outputs/demo}
IMAGE=${DEMO_IMAGE:-scenes/images/toy_mushroom.png}

"$BIN/ns-train" dreamcraft3d --data "$IMAGE" --output-dir "$OUT" --vis viewer
RUN=$(ls -td "$OUT"/*/dreamcraft3d/*/ | head -n 1)
"$BIN/python" - "${RUN}export" <<'PY'
import sys
from pathlib import Path

import trimesh

from studio.export.ply import load_gaussians_ply

out = Path(sys.argv[1])
scene = trimesh.load(out / "mesh.glb")
mesh = next(iter(scene.geometry.values()))
print(f"mesh.glb: {len(mesh.vertices)} vertices, {len(mesh.faces)} faces, texture {mesh.visual.material.baseColorTexture.size}")
print(f"gaussians.ply: {len(load_gaussians_ply(out / 'gaussians.ply'))} Gaussians")
PY
"$BIN/studio" render "${RUN}export/mesh.glb" --output "${RUN}export/turntable.mp4" --frames 36 --size 128
echo
echo "Outputs in ${RUN}export/: mesh.glb (textured), gaussians.ply, turntable.mp4 (of mesh.glb)"
echo "Open the Gaussians in the viewer:"
echo "  $BIN/studio view ${RUN}export/gaussians.ply"
