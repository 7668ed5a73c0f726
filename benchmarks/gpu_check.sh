#!/usr/bin/env bash
# One-shot GPU check, for a machine with CUDA, torch and nvcc but possibly no nerfstudio:
#   1. installs the wheels in .whl/ (gsplat, tyro...) and this repo into /tmp (no network needed);
#   2. in parallel: builds the studio CUDA extensions, JIT-builds gsplat's kernels and, when
#      PRIOR_SECONDS > 0 and the rendered prior data is in .gpudata/, trains the embedded toy priors
#      (each for PRIOR_SECONDS, weights and sample grids written to OUTDIR);
#   3. the CUDA parity tests and the triangle benchmark as soon as the studio kernels are built, then
#      (after gsplat's build and the prior training) the Gaussian benchmark against gsplat.
# Usage, from the repo root:  PRIOR_SECONDS=200 bash benchmarks/gpu_check.sh OUTDIR
set -uo pipefail
REPO=$(pwd)
OUTDIR=${1:-/tmp/gpu_check}
PRIOR_SECONDS=${PRIOR_SECONDS:-0}
mkdir -p "$OUTDIR"
export PYTHONUNBUFFERED=1 STUDIO_EXT_DIR=/tmp/studio_ext MAX_JOBS=16
SITE=/tmp/site
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target $SITE .whl/*.whl || exit 1
fi
# this repo as the installed package would lay it out (pyproject's package-dir), without building a wheel
mkdir -p $SITE/studio && cp -r studio/. $SITE/studio/ && for d in methods viewer cuda configs scenes; do cp -r $d $SITE/studio/$d; done
export PYTHONPATH=$SITE
cd /tmp  # so that ./studio in the repo does not shadow the installed package
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, torch.version.cuda)"

pids=()
if [ "$PRIOR_SECONDS" -gt 0 ] && compgen -G "$REPO/.gpudata/*.npz" >/dev/null; then
  for name in toy-t2i toy-nvs; do
    python3 -m studio.cli.main prior train $name --device ${PRIOR_DEVICE:-cuda} --batch 128 --lr 1e-3 --steps 100000 \
      --time-budget "$PRIOR_SECONDS" --channels 32 64 64 --cache-dir "$REPO/.gpudata" \
      --output "$OUTDIR/$name.safetensors" --preview "$OUTDIR/$name.png" >"/tmp/train-$name.log" 2>&1 &
    pids+=($!)
  done
fi
t0=$(date +%s)
python3 -c "from gsplat.cuda._backend import _C; print('gsplat kernels', 'ok' if _C is not None else 'MISSING')" >/tmp/build-gsplat.log 2>&1 &
gsplat_build=$!
builds=()
python3 -m studio.ext --cuda gauss >/tmp/build-gauss.log 2>&1 & builds+=($!)
python3 -m studio.ext --cuda mesh >/tmp/build-mesh.log 2>&1 & builds+=($!)
for pid in "${builds[@]}"; do wait "$pid"; done
echo "studio builds done in $(( $(date +%s) - t0 )) s"; tail -n 3 /tmp/build-gauss.log /tmp/build-mesh.log

echo "== CUDA parity tests"
python3 -m pytest -q -p no:cacheprovider -W ignore::UserWarning "$REPO/tests/test_cuda_build.py" "$REPO/tests/test_mesh_cuda_build.py" 2>&1 | tail -n 15
echo "== triangle rasterizer"
python3 "$REPO/benchmarks/mesh_rasterize.py" --repeats 20 --torch-repeats 3 2>&1
wait $gsplat_build
echo "gsplat build done in $(( $(date +%s) - t0 )) s"; tail -n 3 /tmp/build-gsplat.log
for pid in "${pids[@]}"; do wait "$pid"; done
for f in /tmp/train-*.log; do [ -e "$f" ] && { echo "== $f"; grep -v "━" "$f" | tail -n 4; }; done
echo "== Gaussian rasterizer"
python3 "$REPO/benchmarks/rasterize.py" --repeats 20 --torch-repeats 1 2>&1
