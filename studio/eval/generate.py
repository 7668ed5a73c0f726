"""Evaluation of the one-step 3D generator (FlashWorld) on held-out posed scenes (``studio eval generate``).

Per scene (a NeRF-synthetic folder, e.g. ``studio scenes make`` of test-split ToyWorld seeds):

* **inputs**: training frame 0 is the reference view (its image is the condition, composited on
  white, area-resized to the generator's resolution); ``views - 1`` further training frames, drawn
  with a generator seeded by ``(seed, scene index)``, complete the cameras to generate (all
  cameras normalised to the scene frame, :mod:`studio.cameras.normalize`); ``--condition`` picks
  image, caption (``meta.json``'s) or both;
* **variants**: the student in 1 and 4 steps, and the multi-step teacher (MV mode, DDIM with CFG,
  then 3D-mode reconstruction);
* **novel views**: the Gaussians, mapped back to the scene's world, are rasterized at every *test*
  frame at its own resolution: PSNR / SSIM / mask IoU against the RGBA ground truth on white
  (:func:`studio.eval.image_to_3d.score_views`), LPIPS when its weights are local;
* **3D consistency**: the mean absolute RGB difference (in [0,1]) between each pair of the
  variant's generated views at corresponding pixels (reprojected through the depth its Gaussians
  render, visible in both views; :func:`reprojection_error`): the teacher's DDIM images may
  disagree, the 3D mode's renders agree by construction up to blending;
* **seconds**: wall clock of the generation itself (after one warm-up scene), torch threads as set.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

VARIANTS = ("1-step", "4-step", "teacher")


@dataclass
class GenerateEvalConfig:
    views: int = 4
    """Cameras generated per scene (the reference view included)."""
    condition: str = "image"
    """image, caption or both."""
    teacher_steps: int = 50
    guidance_scale: float = 3.0
    seed: int = 0
    variants: tuple[str, ...] = VARIANTS


def render_fn_of(gaussians, frames, device: str = "cpu"):
    """``render_fn(c2w) -> (rgb [H,W,3], alpha [H,W])`` of world :class:`Gaussians` at the
    intrinsics of ``frames`` (a :class:`studio.data.nerf_synthetic.FrameSet`) on white."""
    from studio.cameras.convert import opengl_c2w_to_viewmat
    from studio.render import rasterize

    K = torch.tensor([[frames.fx, 0.0, frames.cx], [0.0, frames.fy, frames.cy], [0.0, 0.0, 1.0]])
    g = gaussians.to(device)

    def render(c2w: np.ndarray):
        viewmat = opengl_c2w_to_viewmat(torch.from_numpy(np.asarray(c2w)).float())
        out = rasterize(
            g.means, g.quats, g.scales, g.opacities, g.sh, viewmat[None].to(device), K[None].to(device),
            frames.width, frames.height, background=torch.ones(3, device=device), sh_degree=g.sh_degree,
        )  # fmt: skip
        return out.color[0].cpu(), out.alpha[0, ..., 0].cpu()

    return render


def reprojection_error(images: Tensor, depth: Tensor, alpha: Tensor, viewmats: Tensor, Ks: Tensor) -> float:
    """Mean |I_i(p) - I_j(q)| over ordered view pairs (i, j) and pixels p of view i covered by the
    Gaussians (alpha > 0.5), q = p reprojected into view j through view i's depth, kept when q is
    inside view j, covered there, and not occluded (|z_j - depth_j(q)| < 5% of z_j).

    Args:
        images: [V,3,h,w] the generated views in [0,1]; depth, alpha: [V,h,w] rendered by the
            Gaussians at the same cameras; viewmats [V,4,4] (OpenCV world-to-camera), Ks [V,3,3].
    """
    from studio.lift.gaussians import unproject_depth

    V, _, h, w = images.shape
    points = unproject_depth(depth[None], viewmats[None], Ks[None])[0]  # [V,h,w,3]
    errors, counts = 0.0, 0
    for i in range(V):
        src = alpha[i] > 0.5
        X = points[i][src]  # [P,3]
        for j in range(V):
            if i == j or X.shape[0] == 0:
                continue
            cam = X @ viewmats[j, :3, :3].T + viewmats[j, :3, 3]
            z = cam[:, 2].clamp(min=1e-6)
            uv = (cam @ Ks[j].T)[:, :2] / z[:, None]
            x, y = uv[:, 0].floor().long(), uv[:, 1].floor().long()
            inside = (x >= 0) & (x < w) & (y >= 0) & (y < h) & (cam[:, 2] > 1e-6)
            x, y = x.clamp(0, w - 1), y.clamp(0, h - 1)
            visible = inside & (alpha[j, y, x] > 0.5) & ((depth[j, y, x] - z).abs() < 0.05 * z)
            if visible.any():
                diff = (images[i][:, src][:, visible] - images[j][:, y[visible], x[visible]]).abs().mean(0)
                errors += float(diff.sum())
                counts += int(visible.sum())
    return errors / max(counts, 1)


def reference_image(path: Path, res: int) -> Tensor:
    """A view's image [1,3,res,res] in [0,1]: RGBA composited over white, area-resized."""
    from studio.eval.inverse import over_white, read_image

    image = torch.from_numpy(over_white(read_image(path))).float().permute(2, 0, 1)[None]
    return F.interpolate(image, size=(res, res), mode="area")


def scene_inputs(folder: Path, cfg: GenerateEvalConfig, index: int, res: int):
    """(train frames, test frames, test images, chosen train indices, viewmats [V,4,4] (world),
    Ks [V,3,3] at ``res``, reference image [3,res,res], caption)."""
    from studio.cameras.convert import intrinsics_from_fov, opengl_c2w_to_viewmat
    from studio.data.nerf_synthetic import read_nerf_synthetic
    from studio.data.scene_set import scene_caption
    from studio.eval.inverse import read_image
    from studio.io.errors import StudioInputError

    train, test = read_nerf_synthetic(folder, "train"), read_nerf_synthetic(folder, "test")
    if len(train.image_paths) < cfg.views:
        raise StudioInputError(
            f"{folder} has {len(train.image_paths)} training views; --views {cfg.views} needs as many."
        )
    rng = np.random.default_rng([cfg.seed, index])
    chosen = [0] + sorted(rng.choice(np.arange(1, len(train.image_paths)), cfg.views - 1, replace=False).tolist())
    viewmats = opengl_c2w_to_viewmat(torch.from_numpy(train.camera_to_worlds[chosen]).float())
    fov = float(np.degrees(2.0 * np.arctan(0.5 * train.width / train.fx)))
    Ks = intrinsics_from_fov(fov, res, res).expand(cfg.views, 3, 3).clone()
    ref = reference_image(train.image_paths[0], res)[0]
    caption = scene_caption(folder)
    test_images = [read_image(p) for p in test.image_paths]
    return train, test, test_images, chosen, viewmats, Ks, ref, caption


@dataclass
class VariantModels:
    """The generator whose 1- and k-step variants are scored, and the frozen teacher."""

    student: "FlashWorld"  # noqa: F821 (studio.generators.flashworld, imported lazily)
    teacher: "FlashWorld"  # noqa: F821

    @classmethod
    def load(cls, weights=None, teacher_weights=None, device="cpu") -> "VariantModels":
        """The student ``weights`` (default: the embedded student) and the teacher
        ``teacher_weights`` (default: the embedded dual-mode model ``toy-mv``)."""
        from studio.generators.flashworld import TEACHER_WEIGHTS, load_flashworld

        return cls(load_flashworld(weights, device), load_flashworld(teacher_weights or TEACHER_WEIGHTS, device))


def run_variant(models: VariantModels, variant: str, image, text: str, viewmats: Tensor, Ks: Tensor, cfg, seed: int):
    """(Gaussians, generated views [1,V,3,res,res] in [0,1], seconds) of one variant; ``image``
    [1,3,h,w] in [0,1] or None, ``text`` a caption or ""; the seconds include the condition's encoding."""
    generator = torch.Generator().manual_seed(seed)
    model = models.teacher if variant == "teacher" else models.student
    start = time.perf_counter()
    cond = model.condition(viewmats, Ks, image=image, text=text)
    if variant == "teacher":
        gaussians, views = model.teacher(cond, viewmats, Ks, cfg.teacher_steps, cfg.guidance_scale, generator)
    else:
        gaussians = model.generate(cond, viewmats, Ks, int(variant.split("-")[0]), generator)
        views = None
    seconds = time.perf_counter() - start
    if views is None:
        views = model.render(gaussians, viewmats, Ks)
    return gaussians, views, seconds


@torch.no_grad()
def evaluate(models: VariantModels, folders: list[Path], cfg: GenerateEvalConfig, log=print) -> dict:
    """Metrics per variant, averaged over ``folders`` (see the module docstring)."""
    from studio.cameras.normalize import scene_frame, to_frame
    from studio.eval.image_to_3d import score_views
    from studio.generators.flashworld import world_gaussians
    from studio.lift.gaussians import render as render_gaussians
    from studio.metrics import lpips_if_available

    lpips = lpips_if_available()
    per_scene: dict[str, list[dict]] = {v: [] for v in cfg.variants}
    res = models.student.res
    for index, folder in enumerate([folders[0], *folders]):  # the first scene twice: a warm-up
        warmup = index == 0
        train, test, test_images, chosen, viewmats, Ks, ref, caption = scene_inputs(folder, cfg, max(index - 1, 0), res)
        frame = scene_frame(viewmats[None])
        vm, K = to_frame(viewmats[None], frame), Ks[None]
        image = ref[None] if cfg.condition in ("image", "both") else None
        text = caption if cfg.condition in ("caption", "both") else ""
        for variant in cfg.variants:
            gaussians, views, seconds = run_variant(models, variant, image, text, vm, K, cfg, cfg.seed + index)
            if warmup:
                continue
            out = render_gaussians(gaussians, vm, K, res, res)
            consistency = reprojection_error(views[0], out.depth[0, ..., 0], out.alpha[0, ..., 0], vm[0], K[0])
            scene = world_gaussians(gaussians, frame)
            metrics = score_views(render_fn_of(scene, test), test, test_images, lpips)
            metrics.update(reprojection_error=consistency, seconds=seconds)
            per_scene[variant].append({"scene": folder.name, **metrics})
        if not warmup:
            log(f"  {folder.name}: " + ", ".join(f"{v} {per_scene[v][-1]['psnr']:.2f} dB" for v in cfg.variants))
    summary = {}
    for variant, rows in per_scene.items():
        keys = [k for k in rows[0] if k != "scene"]
        summary[variant] = {k: float(np.mean([r[k] for r in rows])) for k in keys}
    result = {
        "variants": summary,
        "per_scene": per_scene,
        "n_scenes": len(folders),
        "torch_threads": torch.get_num_threads(),
    }
    if "1-step" in summary and "teacher" in summary:
        result["speedup_1step_vs_teacher"] = summary["teacher"]["seconds"] / summary["1-step"]["seconds"]
    return result


def image_to_3d_generated(
    train,
    test,
    view: int,
    orbit: tuple,
    camera: str = "gt",
    variant: str = "1-step",
    weights=None,
    teacher_weights=None,
    seed: int = 0,
) -> dict:
    """The image-to-3D protocol (``studio eval image-to-3d``) for the generator: from training
    frame ``view`` it generates 4 cameras around the object (the reference and azimuths
    +90/180/270 at the same elevation and distance) with ``variant`` ("1-step", "4-step" or
    "teacher"), then scores the test views (PSNR, SSIM, mask IoU) and reports the seconds (model
    loading excluded). No mesh: ``chamfer`` is None.

    ``camera="gt"``: the cameras are the dataset's reference orbit ``orbit`` (elevation, azimuth
    (degrees), distance, field of view) and the image keeps its framing (composited on white,
    area-resized). ``camera="default"``: the generator's own default cameras
    (``studio.generators.flashworld.default_cameras``: elevation 20, fov 40, unit distance,
    spanning 270 degrees of azimuth in 4 views) and the image recentred as DreamCraft3D's
    preprocessing does (``load_reference`` with the image-to-3D data manager's border ratio); the
    test cameras are mapped into the generator's world by
    :func:`studio.eval.image_to_3d.default_camera_alignment`. The JSON also records ``camera`` and
    ``alignment`` (:func:`studio.eval.image_to_3d.protocol_record`)."""
    from studio.cameras.convert import intrinsics_from_fov, opengl_c2w_to_viewmat, viewmat_to_opengl_c2w
    from studio.cameras.normalize import scene_frame, to_frame
    from studio.cameras.sampling import orbit_c2w
    from studio.eval.image_to_3d import protocol_record, reference_alignment, score_views
    from studio.eval.inverse import read_image
    from studio.generators.flashworld import default_cameras, world_gaussians

    models = VariantModels.load(weights, teacher_weights)
    res = models.student.res
    similarity = None
    if camera == "gt":
        elev, az, dist, fov = orbit
        azimuths = torch.tensor([az + 90.0 * k for k in range(4)])
        c2w = orbit_c2w(torch.full((4,), elev), azimuths, torch.full((4,), dist))
        viewmats, Ks = opengl_c2w_to_viewmat(c2w)[None], intrinsics_from_fov(fov, res, res).expand(1, 4, 3, 3).clone()
        ref = reference_image(train.image_paths[view], res)
    else:
        from studio.data.reference import ReferenceDataManagerConfig
        from studio.data.single_image import load_reference

        viewmats, Ks = (m[None] for m in default_cameras(4, res, span_deg=270.0))
        loaded = load_reference(train.image_paths[view], res, ReferenceDataManagerConfig.border_ratio)
        ref = torch.from_numpy(loaded.rgb).float().permute(2, 0, 1)[None]
        c2w_m = viewmat_to_opengl_c2w(viewmats[0, 0]).numpy()
        similarity = reference_alignment(train, view, c2w_m, float(Ks[0, 0, 0, 0]), loaded.recentring)
    frame = scene_frame(viewmats)
    vm = to_frame(viewmats, frame)
    with torch.no_grad():
        gaussians, _, seconds = run_variant(models, variant, ref, "", vm, Ks, GenerateEvalConfig(), seed)
    base = render_fn_of(world_gaussians(gaussians, frame), test)

    def render(c2w: np.ndarray):
        return base(c2w if similarity is None else similarity.camera_in_method(c2w))

    metrics = score_views(render, test, [read_image(p) for p in test.image_paths])
    return {**metrics, "chamfer": None, "seconds": seconds, **protocol_record(camera, similarity)}


def print_generate_table(result: dict, title: str, printer=print) -> None:
    rows = result["variants"]
    keys = ["psnr", "ssim", "mask_iou", "lpips", "reprojection_error", "seconds"]
    keys = [k for k in keys if any(k in r for r in rows.values())]
    printer(f"{title} ({result['n_scenes']} scenes)")
    printer("| variant | " + " | ".join(keys) + " |")
    printer("|---|" + "---:|" * len(keys))
    for name, r in rows.items():
        printer(f"| {name} | " + " | ".join(f"{r[k]:.4f}" if k in r else "-" for k in keys) + " |")
    if "speedup_1step_vs_teacher" in result:
        printer(f"1-step is {result['speedup_1step_vs_teacher']:.1f}x faster than the teacher")
