#!/usr/bin/env bash
# `make demo`: reconstruct the bundled scene with studio-splat, export a 3DGS PLY and a mesh,
# render a turntable, and print the `studio view` command. Runs on CPU (tiny preset) in minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
OUT=${DEMO_OUTPUT:-outputs/demo}
DATA=scenes/demo_cone

"$BIN/ns-train" studio-splat --data "$DATA" --output-dir "$OUT" --vis viewer \
    --max-num-iterations "${DEMO_ITERS:-1500}" --pipeline.model.refine-stop-iter 1200 --pipeline.model.reset-every 600
RUN=$(ls -td "$OUT"/demo_cone/studio-splat/*/ | head -n 1)
CONFIG="${RUN}config.yml"
"$BIN/studio" export gaussians --load-config "$CONFIG" --output "${RUN}export/gaussians.ply"
"$BIN/studio" export mesh --load-config "$CONFIG" --output "${RUN}export/mesh.glb" --resolution 128
"$BIN/studio" render "${RUN}export/gaussians.ply" --output "${RUN}export/turntable.mp4" --frames 48 --size 256
"$BIN/ns-eval" --load-config "$CONFIG" --output-path "${RUN}eval.json" >/dev/null
"$BIN/python" - "${RUN}eval.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["results"]
print(f"test views: PSNR {r['psnr']:.2f} dB, SSIM {r['ssim']:.4f}")
PY
echo
echo "Outputs in ${RUN}export/: gaussians.ply, mesh.glb, turntable.mp4"
echo "Open the result in the viewer:"
echo "  $BIN/studio view ${RUN}export/gaussians.ply"
