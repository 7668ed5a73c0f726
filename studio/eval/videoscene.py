"""Evaluation of VideoScene on held-out posed scenes (``studio eval generate --method videoscene``).

Protocol (per scene, a NeRF-synthetic folder whose **test** split is a ring of evenly spaced views,
e.g. ``studio scenes make --n-test 24``: 15 degrees apart):

* ``pairs`` input pairs per scene: test views ``i`` and ``i + gap`` for ``i = k * n / pairs``
  (``n`` test views), composited on white at the predictor's resolution (:data:`INPUT_RES`); the
  ``gap - 1`` test views between them are the **novel views** (never given to any variant);
* **variants**: ``coarse`` (the feed-forward predictor's Gaussians of the two views), ``fixed``
  (one step at the fixed leap timestep chosen on validation scenes), ``policy`` (one step at the
  policy network's timestep), ``teacher`` (the multi-step video model from pure noise, DDIM with
  CFG, ``teacher_steps``), ``teacher-leap`` (the teacher from the coarse video noised to the fixed
  timestep, DDIM over the same share of ``teacher_steps``, at least 2: what the student distils)
  and ``t=N`` (one step at timestep N: the validation sweep that chooses the fixed timestep);
  every variant but ``coarse`` reconstructs its Gaussians from its frames the same way;
* **novel-view scores**: the Gaussians rendered at the novel views at ``res`` (default the video
  model's, 32 px) against the ground truth area-downsampled to it: PSNR, SSIM, mask IoU
  (:func:`studio.eval.image_to_3d.score_views`), LPIPS when its weights are local;
* **3D consistency**: :func:`studio.eval.generate.reprojection_error` of the variant's frames (the
  coarse video for ``coarse``) through the depth its Gaussians render along the trajectory;
* **seconds**: wall clock of the whole variant (predictor included) after one warm-up pair.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

VARIANTS = ("coarse", "fixed", "policy", "teacher", "teacher-leap")
INPUT_RES = 64
"""Side (pixels) the input views are resized to: the embedded predictor's training resolution."""


@dataclass
class VideoSceneEvalConfig:
    gap: int = 3
    """Test-ring steps between the two input views (3 x 15 degrees with --n-test 24)."""
    pairs: int = 3
    """Input pairs per scene, evenly spaced around the ring."""
    res: int = 0
    """Scoring resolution (0: the video model's)."""
    teacher_steps: int = 50
    guidance_scale: float = 3.0
    seed: int = 0
    variants: tuple[str, ...] = VARIANTS


def ring_pairs(n: int, gap: int, pairs: int) -> list[tuple[int, int, list[int]]]:
    """(first, last, novel views) of each input pair on a ring of ``n`` views (indices mod n)."""
    if not 2 <= gap < n:
        raise ValueError(f"--gap {gap} needs a ring of more than {gap} test views (the scene has {n})")
    out = []
    for k in range(pairs):
        i = k * n // pairs
        out.append((i, (i + gap) % n, [(i + d) % n for d in range(1, gap)]))
    return out


def _rgba(paths, size: int) -> list[np.ndarray]:
    """Images [size,size,4] float (RGBA, area-resized; colour premultiplied then un-premultiplied
    so the background does not bleed)."""
    from studio.eval.inverse import read_image

    out = []
    for p in paths:
        img = torch.from_numpy(read_image(p)).float()
        if img.shape[-1] == 3:
            img = torch.cat([img, torch.ones_like(img[..., :1])], -1)
        pre = torch.cat([img[..., :3] * img[..., 3:], img[..., 3:]], -1).permute(2, 0, 1)[None]
        small = F.interpolate(pre, size=(size, size), mode="area")[0].permute(1, 2, 0)
        a = small[..., 3:]
        out.append(torch.cat([small[..., :3] / a.clamp(min=1e-6), a], -1).clamp(0, 1).numpy())
    return out


def pair_inputs(model, test, i: int, j: int, device):
    """The prepared inputs (:class:`~studio.generators.videoscene.TwoViews`, one item) of views
    ``i`` and ``j`` of ``test`` (a :class:`~studio.data.nerf_synthetic.FrameSet`), on white at
    :data:`INPUT_RES`."""
    from studio.cameras.convert import opengl_c2w_to_viewmat
    from studio.eval.generate import reference_image

    images = torch.cat([reference_image(test.image_paths[v], INPUT_RES) for v in (i, j)])
    c2w = torch.from_numpy(test.camera_to_worlds[[i, j]]).float()
    K = torch.tensor([[test.fx, 0.0, test.cx], [0.0, test.fy, test.cy], [0.0, 0.0, 1.0]])
    K[:2] *= INPUT_RES / test.width
    return model.prepare(
        images[None].to(device), opengl_c2w_to_viewmat(c2w)[None].to(device), K.expand(1, 2, 3, 3).to(device)
    )


def render_fn_of(gaussians, inputs, K: torch.Tensor, res: int):
    """``render_fn(c2w [4,4] world, OpenGL) -> (rgb [res,res,3], alpha [res,res])`` of one item's
    normalised-frame ``gaussians`` (the frame of ``inputs``) with pinhole ``K`` [3,3] on white."""
    from studio.cameras.convert import opengl_c2w_to_viewmat
    from studio.cameras.normalize import to_frame
    from studio.lift.gaussians import render

    device = inputs.images.device

    def render_fn(c2w):
        vm = to_frame(opengl_c2w_to_viewmat(torch.as_tensor(c2w).float())[None, None].to(device), inputs.frame)
        out = render(gaussians, vm, K[None, None].to(device), res, res, background=torch.ones(3, device=device))
        return out.color[0, 0].cpu(), out.alpha[0, 0, ..., 0].cpu()

    return render_fn


def variant_timestep(model, variant: str):
    """The leap timestep a one-step variant asks for: None (the policy's choice), the fixed one, or N of ``t=N``."""
    if variant == "policy":
        return None
    return model.timestep if variant == "fixed" else int(variant.removeprefix("t="))


def run_variant(model, variant: str, inputs, cfg: VideoSceneEvalConfig, generator):
    """(Gaussians, frames [1,V,3,res,res], seconds, leap timestep or None) of ``variant`` on
    prepared ``inputs``."""
    start = time.perf_counter()
    if variant == "coarse":
        gaussians = model.coarse(inputs)
        frames, timestep = model.coarse_video(gaussians, inputs), None
    elif variant == "teacher":
        out = model.teacher_generate(inputs, cfg.teacher_steps, cfg.guidance_scale, generator)
        gaussians, frames, timestep = out.gaussians, out.video, None
    elif variant == "teacher-leap":
        steps = max(2, round(cfg.teacher_steps * model.timestep / model.teacher.prior.num_train_timesteps))
        out = model.teacher_generate(inputs, steps, cfg.guidance_scale, generator, model.timestep)
        gaussians, frames, timestep = out.gaussians, out.video, model.timestep
    else:
        out = model.generate(inputs, variant_timestep(model, variant), generator)
        gaussians, frames, timestep = out.gaussians, out.video, int(out.timestep[0])
    return gaussians, frames, time.perf_counter() - start, timestep


@torch.no_grad()
def evaluate(model, folders: list[Path], cfg: VideoSceneEvalConfig, log=print) -> dict:
    """Metrics per variant averaged over every pair of ``folders`` (see the module docstring)."""
    from studio.data.nerf_synthetic import read_nerf_synthetic
    from studio.eval.generate import reprojection_error
    from studio.eval.image_to_3d import score_views
    from studio.lift.gaussians import render
    from studio.metrics import lpips_if_available

    if model.policy is None and "policy" in cfg.variants:
        raise ValueError("the policy variant needs a policy network (load_videoscene(use_policy=True))")
    lpips = lpips_if_available()
    res = cfg.res or model.res
    device = next(model.parameters()).device
    per_pair: dict[str, list[dict]] = {v: [] for v in cfg.variants}
    jobs = []
    for folder in folders:
        test = read_nerf_synthetic(folder, "test")
        jobs += [(folder, test, pair) for pair in ring_pairs(len(test.image_paths), cfg.gap, cfg.pairs)]
    for index, (folder, test, (i, j, novel)) in enumerate([jobs[0], *jobs]):  # the first pair twice: a warm-up
        warmup = index == 0
        inputs = pair_inputs(model, test, i, j, device)
        K_res = torch.tensor([[test.fx, 0.0, test.cx], [0.0, test.fy, test.cy], [0.0, 0.0, 1.0]])
        K_res[:2] *= res / test.width
        gt = _rgba([test.image_paths[v] for v in novel], res)
        frames_of_novel = dataclasses.replace(test, camera_to_worlds=test.camera_to_worlds[novel])
        for variant in cfg.variants:
            generator = torch.Generator().manual_seed(cfg.seed + index)
            gaussians, frames, seconds, timestep = run_variant(model, variant, inputs, cfg, generator)
            if warmup:
                continue
            metrics = score_views(render_fn_of(gaussians, inputs, K_res, res), frames_of_novel, gt, lpips)
            traj = render(gaussians, inputs.viewmats, inputs.Ks, model.res, model.res)
            consistency = reprojection_error(
                frames[0], traj.depth[0, ..., 0], traj.alpha[0, ..., 0], inputs.viewmats[0], inputs.Ks[0]
            )
            metrics.update(reprojection_error=consistency, seconds=seconds)
            if timestep is not None:
                metrics["timestep"] = float(timestep)
            per_pair[variant].append({"scene": folder.name, "pair": [i, j], **metrics})
        if not warmup:
            log(f"  {folder.name} {i}-{j}: " + ", ".join(f"{v} {per_pair[v][-1]['psnr']:.2f} dB" for v in cfg.variants))
    summary = {}
    for variant, rows in per_pair.items():
        keys = [k for k in rows[0] if k not in ("scene", "pair")]
        summary[variant] = {k: float(np.mean([r[k] for r in rows])) for k in keys}
    result = {"variants": summary, "per_pair": per_pair, "n_scenes": len(folders), "n_pairs": len(jobs)}
    result["torch_threads"] = torch.get_num_threads()
    one_step = "policy" if "policy" in summary else "fixed" if "fixed" in summary else None
    if one_step and "teacher" in summary:
        result["speedup_1step_vs_teacher"] = summary["teacher"]["seconds"] / summary[one_step]["seconds"]
    return result
