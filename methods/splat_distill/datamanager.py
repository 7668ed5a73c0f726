"""Scene-set data manager of ``splat-distill``: context pairs and target views from many scenes.

``--data DIR`` is one NeRF-synthetic scene folder or a folder of them (``studio scenes make``
writes these). Every scene's train split is read once, composited over white and resized to
``resolution`` (the Gaussian predictor's input size). A training step draws ``scenes_per_batch``
scenes and, in each, two context views ``i, j`` whose viewing directions (from the scene centre)
differ by ``context_angle_deg`` and ``targets_per_scene`` target views lying between them (both
angles to the context views at most the context angle; MVSplat's interpolation setting), else the
views nearest to their midpoint.

Batches (``next_train`` returns ``(batch, batch)``; the model reads the first) are float32 tensors
on the device: ``context_images`` [B,2,3,H,W] in [0,1], ``context_alpha`` [B,2,1,H,W] coverage, ``context_viewmats`` [B,2,4,4] world-to-
camera (OpenCV), ``context_Ks`` [B,2,3,3] (pixels, centres at +0.5), ``target_images``
[B,T,3,H,W], ``target_alpha``, ``target_viewmats``, ``target_Ks``, ``near``/``far`` [B] (world units) and
``scene`` [B] (int64 index into ``scenes``); with ``fit_views`` F > 0 also ``fit_images`` [B,F,3,H,W],
``fit_alpha``, ``fit_viewmats``, ``fit_Ks``.

``near``/``far`` bound the scene's sphere (``meta.json`` ``bounds`` when present, else the sphere
the field of view frames at the cameras' mean distance) in every view.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Type

import torch
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.data.datamanagers.base_datamanager import DataManagerConfig
from nerfstudio.data.datamanagers.random_cameras_datamanager import TrivialDataset
from torch import Tensor

from studio.cameras.nerfstudio import nerfstudio_cameras
from studio.data.base import StudioDataManager
from studio.data.scene_set import SceneViews, check_scene_set, load_scene_views, scene_folders, view_angles
from studio.io.inputs import Input, Kind


def choose_context(directions: Tensor, angle_range: Tuple[float, float], gen: torch.Generator) -> Tuple[int, int]:
    """Context views ``(i, j)`` whose angle is in ``angle_range`` (degrees; the pair closest to the
    range's middle when none is)."""
    angles = view_angles(directions)
    i = int(torch.randint(len(directions), (1,), generator=gen))
    lo, hi = angle_range
    ok = torch.nonzero((angles[i] >= lo) & (angles[i] <= hi)).flatten()
    if len(ok) == 0:
        ok = torch.argsort((angles[i] - 0.5 * (lo + hi)).abs())[1:2]
    return i, int(ok[torch.randint(len(ok), (1,), generator=gen)])


def views_between(directions: Tensor, i: int, j: int, minimum: int = 1) -> Tensor:
    """Views other than ``i, j`` within the context angle of both (at least ``minimum``: else the
    ones nearest to the pair), ordered by the sum of their angles to ``i`` and ``j``."""
    angles = view_angles(directions)
    order = torch.argsort(angles[i] + angles[j])
    order = order[(order != i) & (order != j)]
    inside = (angles[i, order] <= angles[i, j]) & (angles[j, order] <= angles[i, j])
    return order[: max(int(inside.sum()), minimum)]


@dataclass
class SceneSetDataManagerConfig(DataManagerConfig):
    """Scenes of ``--data`` for splat-distill (see module docstring)."""

    _target: Type = field(default_factory=lambda: SceneSetDataManager)
    data: Path = Path()
    """A NeRF-synthetic scene folder or a folder of them (train splits are used)."""
    resolution: int = 64
    """Side (pixels) of the square views fed to the Gaussian predictor."""
    scenes_per_batch: int = 2
    targets_per_scene: int = 1
    context_angle_deg: Tuple[float, float] = (25.0, 60.0)
    """Range of the angle between the two context views' directions (the predictor's training arcs
    spanned 30-70 degrees)."""
    max_scenes: int = 0
    """Use at most this many scenes (0: all)."""
    fixed_context: bool = False
    """One context pair per scene for the whole run (drawn once per scene); the FiT3D-style baseline
    needs it, its per-scene feature Gaussians belong to one pair."""
    fit_views: int = 0
    """Also return up to this many views between the context views of each scene (``fit_*``: the views
    the FiT3D-style baseline optimises its per-scene features on); 0: none."""
    seed: int = 0

    def inputs(self) -> List[Input]:
        return [Input("--data", Kind.DATASET, self.data, check=check_scene_set, required=True)]


class SceneSetDataManager(StudioDataManager):
    """See module docstring."""

    config: SceneSetDataManagerConfig

    def setup_data(self) -> None:
        from rich.progress import track

        config = self.config
        folders = scene_folders(config.data)
        if config.max_scenes > 0:
            folders = folders[: config.max_scenes]
        self.scenes: List[SceneViews] = [
            load_scene_views(p, config.resolution) for p in track(folders, description="Loading scenes", transient=True)
        ]
        self.scene_paths = folders
        self.generator = torch.Generator().manual_seed(int(config.seed) + 7919 * self.local_rank)
        self.train_dataset = self.eval_dataset = TrivialDataset(self.viewer_cameras(0))
        self.train_dataset.metadata = {}

    def viewer_cameras(self, index: int) -> Cameras:
        """Nerfstudio cameras of scene ``index``'s train views (what the viewer shows)."""
        sc = self.scenes[index]
        return nerfstudio_cameras(sc.viewmats, sc.Ks[0], self.config.resolution)

    def batch(self, scene_ids: List[int], gen: torch.Generator) -> Dict[str, Tensor]:
        """A batch (module docstring) of the scenes ``scene_ids``."""
        cfg, parts = self.config, {k: [] for k in ("ci", "ca", "cv", "ck", "ti", "ta", "tv", "tk", "near", "far")}
        fit: Dict[str, list] = {"fit_images": [], "fit_alpha": [], "fit_viewmats": [], "fit_Ks": []}
        for s in scene_ids:
            sc = self.scenes[s]
            if cfg.fixed_context:
                i, j = choose_context(sc.directions, cfg.context_angle_deg, torch.Generator().manual_seed(cfg.seed + s))
            else:
                i, j = choose_context(sc.directions, cfg.context_angle_deg, gen)
            between = views_between(sc.directions, i, j, cfg.targets_per_scene)
            t = between[torch.randperm(len(between), generator=gen)[: cfg.targets_per_scene]].tolist()
            if cfg.fit_views > 0:
                f = [i, j] + between[: max(cfg.fit_views - 2, 0)].tolist()
                f += [f[-1]] * (cfg.fit_views - len(f))  # a fixed count per scene (repeats the last view)
                for key, src in zip(fit, (sc.images, sc.alpha, sc.viewmats, sc.Ks)):
                    fit[key].append(src[f])
            parts["ci"].append(sc.images[[i, j]])
            parts["ca"].append(sc.alpha[[i, j]])
            parts["ta"].append(sc.alpha[t])
            parts["cv"].append(sc.viewmats[[i, j]])
            parts["ck"].append(sc.Ks[[i, j]])
            parts["ti"].append(sc.images[t])
            parts["tv"].append(sc.viewmats[t])
            parts["tk"].append(sc.Ks[t])
            parts["near"].append(sc.near)
            parts["far"].append(sc.far)
        out = {
            "context_images": torch.stack(parts["ci"]),
            "context_alpha": torch.stack(parts["ca"]),
            "context_viewmats": torch.stack(parts["cv"]),
            "context_Ks": torch.stack(parts["ck"]),
            "target_images": torch.stack(parts["ti"]),
            "target_alpha": torch.stack(parts["ta"]),
            "target_viewmats": torch.stack(parts["tv"]),
            "target_Ks": torch.stack(parts["tk"]),
            "near": torch.tensor(parts["near"]),
            "far": torch.tensor(parts["far"]),
            "scene": torch.tensor(scene_ids, dtype=torch.long),
        }
        out.update({k: torch.stack(v) for k, v in fit.items() if v})
        return {k: v.to(self.device) for k, v in out.items()}

    def next_train(self, step: int) -> Tuple[Dict[str, Tensor], Dict[str, Tensor]]:
        self.train_count += 1
        n = len(self.scenes)
        ids = torch.randint(n, (self.config.scenes_per_batch,), generator=self.generator).tolist()
        batch = self.batch(ids, self.generator)
        return batch, batch

    def next_eval(self, step: int) -> Tuple[Dict[str, Tensor], Dict[str, Tensor]]:
        """A fixed batch per step number (scenes and views from a generator seeded by ``step``)."""
        self.eval_count += 1
        gen = torch.Generator().manual_seed(int(step))
        ids = torch.randint(len(self.scenes), (self.config.scenes_per_batch,), generator=gen).tolist()
        batch = self.batch(ids, gen)
        return batch, batch

    def next_eval_image(self, step: int) -> Tuple[Cameras, Dict[str, Tensor]]:
        """One scene's batch (seeded by ``step``) and the Nerfstudio camera of its first target view."""
        gen = torch.Generator().manual_seed(int(step))
        batch = self.batch([int(torch.randint(len(self.scenes), (1,), generator=gen))], gen)
        camera = nerfstudio_cameras(batch["target_viewmats"][0, :1], batch["target_Ks"][0, 0], self.config.resolution)
        return camera.to(self.device), batch

    def get_train_rays_per_batch(self) -> int:
        return self.config.resolution**2 * self.config.scenes_per_batch * self.config.targets_per_scene

    def get_eval_rays_per_batch(self) -> int:
        return self.get_train_rays_per_batch()

    def get_param_groups(self) -> Dict:
        return {}

    def get_datapath(self) -> Optional[Path]:
        return self.config.data
