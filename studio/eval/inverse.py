"""Inverse-rendering evaluation: ground truth of a test split, masked metrics, scale alignment.

Usable by any inverse-rendering model that can render, for one Nerfstudio camera, G-buffers
(``rgb`` over white, ``albedo`` straight linear, ``roughness``, ``normal`` world unit) and a
relit PBR image (``render_relit(camera, light, albedo_scale)``, sRGB over white).

Metrics (``evaluate_inverse``; every image metric is the mean over the test views of a per-view
value):

* ``nvs_psnr`` / ``nvs_ssim``: the composite ``rgb`` against the test images composited over
  white, over the whole image (``studio.metrics``).
* ``albedo_psnr`` (TensoIR protocol, scale-aligned): object pixels are those with ground-truth
  alpha > 0.5. Ground-truth albedo (sRGB 8-bit) is decoded to linear (TensoIR-Synthetic's
  ``albedo.png`` is linear 8-bit already); one per-channel scale
  ``s_c = median(gt_c / pred_c)`` is taken over the object pixels of *all* test views (pixels
  with ``pred_c <= 1e-4`` left out); the prediction ``clamp(s * pred, 0, 1)`` and the ground
  truth are encoded to sRGB and the PSNR is computed over the object pixels of each view.
* ``roughness_mse``: MSE of the (straight, clamped) roughness over object pixels.
* ``normal_mae_deg``: mean angle in degrees between predicted and ground-truth world normals
  over object pixels (a pixel without a predicted normal counts 90 degrees).
* ``relight_psnr``: ``{env: PSNR}`` of ``render_relit(camera, light, albedo_scale=s)`` against
  ``test_<env>/`` (TensoIR-Synthetic: each test view's ``rgba_<env>.png``) composited over white
  (whole image), with the albedo scale ``s`` above (none when there is no albedo ground truth).
* ``relight_psnr_interior``: ``{env: PSNR}`` of the same images over the object's interior only:
  the test view's ground-truth mask (alpha > 0.5) eroded by ``interior_band_px`` pixels
  (Chebyshev distance, ``studio.render.masks.silhouette_band``), so a band of that width inside
  the silhouette is left out, where a pixel mixes surface and background and an error in the
  silhouette would dominate the whole-image PSNR. Default width ``default_interior_band_px``:
  3 px at 128 px images, scaled with the shorter image side (6 px at 256, 19 px at 800). A view
  whose interior is empty is skipped.
* ``nvs_lpips`` / ``relight_lpips`` (``{env: LPIPS}``): LPIPS (AlexNet, torchmetrics) of the same
  whole images as ``nvs_psnr`` / ``relight_psnr``, only when its weights are local
  (``studio.metrics.lpips_if_available``; never downloaded), else ``None``.

Keys whose ground truth is missing are ``None``.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from studio.data.images import over_white, read_image  # noqa: F401 (also this module's public names)
from studio.io.errors import StudioInputError
from studio.metrics import psnr, ssim
from studio.pbr.tonemap import linear_to_srgb, srgb_to_linear

METRIC_KEYS = (
    "nvs_psnr",
    "nvs_ssim",
    "nvs_lpips",
    "albedo_psnr",
    "roughness_mse",
    "normal_mae_deg",
    "relight_psnr",
    "relight_psnr_interior",
    "relight_lpips",
)
BLENDER_STUDIOLIGHTS = Path("/usr/share/blender/datafiles/studiolights/world")
_MIN_PRED = 1e-4


# ---------------------------------------------------------------------------------------- metrics
def _mask(mask: Tensor) -> Tensor:
    return (mask[..., 0] if mask.ndim >= 3 and mask.shape[-1] == 1 else mask).bool()


def albedo_scale(preds: Sequence[Tensor], gts: Sequence[Tensor], masks: Sequence[Tensor]) -> Tensor:
    """Per-channel scale ``s_c = median(gt_c / pred_c)`` over the masked pixels of all views.

    ``preds``/``gts``: linear albedo [H,W,3]; ``masks``: [H,W] or [H,W,1] booleans. Pixels with
    ``pred_c <= 1e-4`` are left out of channel ``c``; a channel without pixels gets scale 1.
    """
    pred = torch.cat([p[_mask(m)].reshape(-1, 3) for p, m in zip(preds, masks)]).double()
    gt = torch.cat([g[_mask(m)].reshape(-1, 3) for g, m in zip(gts, masks)]).to(pred)
    scale = torch.ones(3, dtype=torch.float64)
    for c in range(3):
        valid = pred[:, c] > _MIN_PRED
        if valid.any():
            scale[c] = torch.median(gt[valid, c] / pred[valid, c])
    return scale.float()


def masked_mse(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """MSE over the masked pixels ([H,W,C] images, [H,W] mask); NaN when the mask is empty."""
    m = _mask(mask)
    return torch.mean((pred[m].float() - target[m].float()) ** 2)


def masked_psnr(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """PSNR (dB, values in [0,1]) over the masked pixels."""
    return -10.0 * torch.log10(masked_mse(pred, target, mask).clamp(min=1e-12))


def default_interior_band_px(height: int, width: int) -> int:
    """Silhouette band (pixels) that ``relight_psnr_interior`` leaves out: 3 px at 128 px images,
    scaled with the shorter image side, at least 1."""
    return max(1, round(3 * min(height, width) / 128))


def interior_mask(alpha: Tensor, band_px: int) -> Tensor:
    """Object pixels farther than ``band_px`` pixels (Chebyshev) from the background: the mask
    ``alpha > 0.5`` ([H,W] or [H,W,1], in [0,1]) eroded by ``band_px``; boolean [H,W]."""
    from studio.render.masks import silhouette_band

    alpha = alpha[..., 0] if alpha.ndim == 3 else alpha
    return silhouette_band(alpha.float(), band_px)[0]


def _lpips_value(lpips: Callable[[Tensor, Tensor], Tensor], pred: Tensor, target: Tensor) -> float:
    """LPIPS of two [H,W,3] images in [0,1] with the callable of ``lpips_if_available``."""
    return float(lpips(pred.permute(2, 0, 1)[None], target.permute(2, 0, 1)[None]))


def angular_error_deg(pred: Tensor, target: Tensor) -> Tensor:
    """Per-pixel angle in degrees between normals [...,3] (normalised here; zero vectors -> 90)."""
    a = torch.nn.functional.normalize(pred.float(), dim=-1)
    b = torch.nn.functional.normalize(target.float(), dim=-1)
    return torch.rad2deg(torch.acos((a * b).sum(-1).clamp(-1.0, 1.0)))


def masked_angular_error_deg(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Mean angular error in degrees over the masked pixels."""
    return angular_error_deg(pred, target)[_mask(mask)].mean()


def aligned_albedo_psnr(
    preds: Sequence[Tensor], gts: Sequence[Tensor], masks: Sequence[Tensor]
) -> tuple[float, Tensor]:
    """(mean per-view sRGB PSNR over object pixels after scale alignment, scale [3]); linear inputs."""
    scale = albedo_scale(preds, gts, masks)
    values = [
        float(masked_psnr(linear_to_srgb((p * scale.to(p)).clamp(0, 1)), linear_to_srgb(g.clamp(0, 1)), m))
        for p, g, m in zip(preds, gts, masks)
    ]
    return float(np.mean(values)), scale


# ---------------------------------------------------------------------------------- ground truth
def _frame_index(path: Path, fallback: int) -> int:
    m = re.search(r"(\d+)$", path.stem)
    return int(m.group(1)) if m else fallback


@dataclass
class ViewTruth:
    """Ground truth of one test view (numpy float32, [H,W,C]); AOVs None when absent."""

    rgb: np.ndarray
    mask: np.ndarray
    albedo: Optional[np.ndarray] = None  # linear
    roughness: Optional[np.ndarray] = None
    normal: Optional[np.ndarray] = None


@dataclass
class TestTruth:
    """The test split's ground truth and the relit splits ``{env: (env map or None, images)}``."""

    views: List[ViewTruth]
    relit: Dict[str, tuple[Optional[Path], List[Path]]] = field(default_factory=dict)


def _relit_images(root: Path, name: str, test_images: List[Path], split: str = "test") -> Optional[List[Path]]:
    """Images of ``<split>_<name>/`` in the order of the split's cameras (its transforms file, or the
    split's file names)."""
    folder = root / f"{split}_{name}"
    transforms = root / f"transforms_{split}_{name}.json"
    if transforms.is_file():
        from studio.data.checks import frames_of, read_json

        meta = read_json(transforms)
        paths = []
        for frame in frames_of(meta, transforms):
            rel = Path(frame["file_path"])
            p = (root / rel).resolve()
            paths.append(p if p.suffix.lower() in (".png", ".jpg", ".jpeg") else p.with_name(p.name + ".png"))
    elif folder.is_dir():
        paths = [folder / p.name for p in test_images]
    else:
        return None
    if len(paths) != len(test_images):
        raise StudioInputError(
            f"relit split {split}_{name} has {len(paths)} views, the {split} split {len(test_images)}."
        )
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise StudioInputError(f"relit split {split}_{name} lacks {missing[0]}.")
    return paths


def default_env_maps(root: Path, meta: dict) -> Dict[str, Optional[Path]]:
    """Env maps of the relit splits named by meta.json: ToyWorld ``relight`` entries (files relative
    to the dataset) or Blender studio-light names (``<studiolights>/world/<name>.exr``, None when
    Blender's studio lights are not installed)."""
    envs: Dict[str, Optional[Path]] = {}
    for entry in meta.get("relight", []) or []:
        if isinstance(entry, dict) and isinstance(entry.get("name"), str):
            envs[entry["name"]] = root / entry["file"] if isinstance(entry.get("file"), str) else None
        elif isinstance(entry, str):
            path = BLENDER_STUDIOLIGHTS / f"{entry}.exr"
            envs[entry] = path if path.is_file() else None
    return envs


def _metal_albedo_fix(albedo_lin: np.ndarray, meta: dict) -> np.ndarray:
    """Blender's diffuse-colour pass is ``base * (1 - metallic)``: undo it from meta.json's material."""
    material = meta.get("material")
    if not isinstance(material, dict) or "metal" not in material:
        return albedo_lin
    metal = float(material.get("metal") or 0.0)
    if metal <= 0.0:
        return albedo_lin
    if metal < 0.999:
        return albedo_lin / (1.0 - metal)
    color = np.asarray(material.get("color", [0.0, 0.0, 0.0]), np.float32)[:3]  # linear base colour
    return np.broadcast_to(color, albedo_lin.shape).copy()


def _tensoir_truth(
    root: Path, image_paths: Sequence[Path], envs: Dict[str, Optional[Path]], envmap_dir: Optional[Path]
) -> TestTruth:
    """``load_test_truth`` of a TensoIR-Synthetic scene (``studio.data.tensoir``): per view folder
    ``rgba.png`` over white, its alpha as mask, ``albedo.png`` (linear), ``normal.png``; relit
    images ``rgba_<env>.png`` of every non-training env, scored where ``envs`` or ``envmap_dir``
    (``<env>.hdr``/``.exr``) has its map; the others are skipped with a one-line warning."""
    import sys

    from studio.data.tensoir import read_view_aovs, relit_images
    from studio.pbr.envmap import envmaps_in

    views = []
    for path in image_paths:
        rgba = read_image(Path(path))
        albedo, normal = read_view_aovs(Path(path).parent)
        views.append(ViewTruth(rgb=over_white(rgba), mask=rgba[..., 3] > 0.5, albedo=albedo, normal=normal))
    images = relit_images(root, image_paths)
    unknown = sorted(set(envs) - set(images))
    if unknown:
        raise StudioInputError(f"--env {unknown[0]}: the test views of {root} have no rgba_{unknown[0]}.png.")
    maps = {**(envmaps_in(envmap_dir) if envmap_dir is not None else {}), **envs}
    relit: Dict[str, tuple[Optional[Path], List[Path]]] = {}
    for name, paths in images.items():
        if maps.get(name) is None:
            where = f"in --envmap-dir {envmap_dir}" if envmap_dir is not None else "(no --envmap-dir given)"
            print(
                f"warning: no environment map {name}.hdr {where}: relighting under {name} is skipped.", file=sys.stderr
            )
            continue
        relit[name] = (maps[name], paths)
    return TestTruth(views=views, relit=relit)


def load_test_truth(
    root: Path,
    image_paths: Sequence[Path],
    envs: Optional[Dict[str, Optional[Path]]] = None,
    envmap_dir: Optional[Path] = None,
    split: str = "test",
) -> TestTruth:
    """Ground truth of the views ``image_paths`` of ``split`` (RGBA ``r_*.png`` of ``root/test``, or
    the ``test_XXX/rgba.png`` of a TensoIR-Synthetic scene: ``_tensoir_truth``).

    ``split`` "val" scores validation views (ToyWorld ``--n-val``): relit images come from
    ``val_<env>/`` instead of ``test_<env>/``.

    AOVs are read beside each image when present: ``albedo_XXXX.png`` (sRGB 8-bit),
    ``roughness_XXXX.png`` (linear), ``normal_XXXX.exr`` (world unit normals); a Blender dataset
    without a roughness pass but with a uniform material in meta.json (``material.rough``) uses
    that value. ``envs`` overrides/adds env maps of the relit splits (default: meta.json);
    ``envmap_dir`` gives ``<name>.hdr``/``.exr`` to the relit splits that have no map otherwise.
    """
    from studio.data.tensoir import is_tensoir
    from studio.pbr.envmap import envmaps_in, read_envmap

    if is_tensoir(root):
        return _tensoir_truth(root, image_paths, dict(envs or {}), envmap_dir)

    meta_path = root / "meta.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
    if not isinstance(meta, dict):
        meta = {}
    views = []
    for k, path in enumerate(image_paths):
        rgba = read_image(Path(path))
        mask = rgba[..., 3] > 0.5 if rgba.shape[-1] == 4 else np.ones(rgba.shape[:2], bool)
        view = ViewTruth(rgb=over_white(rgba), mask=mask)
        idx, folder = _frame_index(Path(path), k), Path(path).parent
        albedo_path = folder / f"albedo_{idx:04d}.png"
        if albedo_path.is_file():
            lin = srgb_to_linear(torch.from_numpy(read_image(albedo_path)[..., :3])).numpy()
            view.albedo = _metal_albedo_fix(lin, meta).astype(np.float32)
        rough_path = folder / f"roughness_{idx:04d}.png"
        if rough_path.is_file():
            view.roughness = read_image(rough_path)[..., :1]
        elif isinstance(meta.get("material"), dict) and isinstance(meta["material"].get("rough"), (int, float)):
            view.roughness = np.full((*mask.shape, 1), float(meta["material"]["rough"]), np.float32)
        normal_path = folder / f"normal_{idx:04d}.exr"
        if normal_path.is_file():
            view.normal = np.asarray(read_envmap(normal_path), np.float32)
        views.append(view)
    env_maps = default_env_maps(root, meta)
    env_maps.update(envs or {})
    for name, path in (envmaps_in(envmap_dir) if envmap_dir is not None else {}).items():
        if env_maps.get(name) is None and (name in env_maps or (root / f"{split}_{name}").is_dir()):
            env_maps[name] = path
    relit: Dict[str, tuple[Optional[Path], List[Path]]] = {}
    for name, env_path in env_maps.items():
        images = _relit_images(root, name, [Path(p) for p in image_paths], split)
        if images is None:
            if envs and name in envs:
                raise StudioInputError(f"--env {name}: the dataset {root} has no relit split {split}_{name}/.")
            continue
        if env_path is not None and not Path(env_path).is_file():
            raise StudioInputError(f"environment map {env_path} of {split}_{name} does not exist.")
        relit[name] = (env_path, images)
    return TestTruth(views=views, relit=relit)


# ------------------------------------------------------------------------------------ evaluation
def evaluate_inverse(
    cameras,
    truth: TestTruth,
    render_gbuffers: Callable[[object], Dict[str, Tensor]],
    render_relit: Optional[Callable[[object, object, Optional[Tensor]], Tensor]] = None,
    light_resolution: int = 64,
    device: str | torch.device = "cpu",
    progress: Optional[Callable[[str], None]] = None,
    lpips: Optional[Callable[[Tensor, Tensor], Tensor]] = None,
    interior_band_px: Optional[int] = None,
) -> Dict[str, object]:
    """All metrics (module docstring) of one model over the test ``cameras`` (Nerfstudio
    ``Cameras``, same order as ``truth.views``). Returns a dict with exactly ``METRIC_KEYS``.

    ``lpips``: the callable of ``studio.metrics.lpips_if_available`` ([B,3,H,W] in [0,1]); None
    leaves ``nvs_lpips`` / ``relight_lpips`` None. ``interior_band_px``: pixels of the silhouette
    band ``relight_psnr_interior`` leaves out (default ``default_interior_band_px`` of each image).
    """
    if len(cameras) != len(truth.views):
        raise StudioInputError(f"{len(cameras)} test cameras but {len(truth.views)} test images.")
    nvs_p, nvs_s, nvs_l, normal_err, rough_err = [], [], [], [], []
    albedo_preds, albedo_gts, albedo_masks = [], [], []
    with torch.no_grad():
        for i, view in enumerate(truth.views):
            if progress:
                progress(f"view {i + 1}/{len(truth.views)}")
            out = {
                k: v.detach().float().cpu()
                for k, v in render_gbuffers(cameras[i : i + 1]).items()
                if isinstance(v, Tensor)
            }
            gt = torch.from_numpy(view.rgb)
            mask = torch.from_numpy(view.mask)
            pred = out["rgb"][..., :3].clamp(0, 1)
            nvs_p.append(float(psnr(pred, gt)))
            nvs_s.append(float(ssim(pred.permute(2, 0, 1), gt.permute(2, 0, 1))))
            if lpips is not None:
                nvs_l.append(_lpips_value(lpips, pred, gt))
            if not mask.any():
                continue
            if view.albedo is not None and "albedo" in out:
                albedo_preds.append(out["albedo"].clamp(0, 1))
                albedo_gts.append(torch.from_numpy(view.albedo))
                albedo_masks.append(mask)
            if view.roughness is not None and "roughness" in out:
                rough_err.append(
                    float(masked_mse(out["roughness"].clamp(0, 1), torch.from_numpy(view.roughness), mask))
                )
            if view.normal is not None and "normal" in out:
                normal_err.append(float(masked_angular_error_deg(out["normal"], torch.from_numpy(view.normal), mask)))
        metrics: Dict[str, object] = {
            "nvs_psnr": float(np.mean(nvs_p)) if nvs_p else None,
            "nvs_ssim": float(np.mean(nvs_s)) if nvs_s else None,
            "nvs_lpips": float(np.mean(nvs_l)) if nvs_l else None,
            "albedo_psnr": None,
            "roughness_mse": float(np.mean(rough_err)) if rough_err else None,
            "normal_mae_deg": float(np.mean(normal_err)) if normal_err else None,
            "relight_psnr": None,
            "relight_psnr_interior": None,
            "relight_lpips": None,
        }
        scale = None
        if albedo_preds:
            metrics["albedo_psnr"], scale = aligned_albedo_psnr(albedo_preds, albedo_gts, albedo_masks)
        if render_relit is not None and truth.relit:
            from studio.pbr.cubemap import CubemapLight
            from studio.pbr.envmap import read_envmap

            relit: Dict[str, Dict[str, Optional[float]]] = {
                key: {} for key in ("relight_psnr", "relight_psnr_interior", "relight_lpips")
            }
            for name, (env_path, images) in truth.relit.items():
                values: Dict[str, List[float]] = {key: [] for key in relit}
                if env_path is not None:
                    if progress:
                        progress(f"relighting under {name}")
                    light = CubemapLight.from_equirect(read_envmap(env_path), resolution=light_resolution).to(device)
                    for i, path in enumerate(images):
                        gt = torch.from_numpy(over_white(read_image(path)))
                        pred = render_relit(cameras[i : i + 1], light, None if scale is None else scale.to(device))
                        pred = pred.detach().float().cpu()[..., :3].clamp(0, 1)
                        values["relight_psnr"].append(float(psnr(pred, gt)))
                        mask = torch.from_numpy(truth.views[i].mask)
                        band = default_interior_band_px(*mask.shape) if interior_band_px is None else interior_band_px
                        inside = interior_mask(mask, band)
                        if inside.any():
                            values["relight_psnr_interior"].append(float(masked_psnr(pred, gt, inside)))
                        if lpips is not None:
                            values["relight_lpips"].append(_lpips_value(lpips, pred, gt))
                for key, per_view in values.items():
                    relit[key][name] = float(np.mean(per_view)) if per_view else None
            metrics["relight_psnr"] = relit["relight_psnr"]
            metrics["relight_psnr_interior"] = relit["relight_psnr_interior"]
            if lpips is not None:
                metrics["relight_lpips"] = relit["relight_lpips"]
    for key, value in list(metrics.items()):
        if isinstance(value, float) and not math.isfinite(value):
            metrics[key] = None
    return metrics
