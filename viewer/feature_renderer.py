"""Interactive rendering of ``splat-distill`` runs for viser clients: lifted feature Gaussians.

``FeatureRenderer`` offers ``GaussianRenderer``'s interface to ``studio.viewer.app`` (``render(viewmat,
K, width, height, mode) -> uint8 [H,W,3]``, cameras in the data's world frame, OpenCV axes). A
splat-distill run has no trained 3D scene: the viewer shows one scene of the run's data as the
model lifts it, i.e. the pixel-aligned Gaussians its predictor makes from two context views with
the teacher's features on them (``SplatDistillModel.set_preview``), rendered by
``SplatDistillModel.render_preview``. The modes (``FEATURE_MODES``) are the features in PCA
colours (the default) and the Gaussians' colours, both over white.

The scene is chosen by its index in the data manager's ``scenes`` and a context seed: the batch is
the one ``SceneSetDataManager.next_eval_image`` would make for that scene with a generator seeded
by the seed (a random context pair in the configured angle range). The PCA colours are computed
once per scene (``SplatDistillModel.preview_colors``, a deterministic eigendecomposition), so they
do not change between frames.

The splat-distill data manager uses the scenes' own world frame (no dataparser transform), so
viser's cameras are passed through unchanged (OpenCV -> OpenGL axes for Nerfstudio ``Cameras``).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Optional

import numpy as np
import torch

SPLAT_DISTILL_METHOD = "splat-distill"
FEATURE_MODES = ("features (PCA)", "rgb")
_OUTPUTS = {"features (PCA)": "features_pca", "rgb": "rgb"}


def is_splat_distill_config(path: Path) -> bool:
    """Whether ``path`` is the config.yml of a ``splat-distill`` run (method_name, restricted loader)."""
    path = Path(path)
    if path.suffix.lower() not in (".yml", ".yaml"):
        return False
    from studio.io.config_loader import load_trainer_config

    try:
        return getattr(load_trainer_config(path), "method_name", None) == SPLAT_DISTILL_METHOD
    except Exception:  # noqa: BLE001 - not a readable run config: the Gaussian path reports the error
        return False


class FeatureRenderer:
    """Renders the lifted Gaussians of one scene of a splat-distill run as uint8 RGB images [H,W,3]."""

    modes = FEATURE_MODES

    def __init__(self, model, datamanager):
        """``model``: a ``SplatDistillModel`` (eval mode); ``datamanager``: its ``SceneSetDataManager``."""
        self.model = model
        self.datamanager = datamanager
        params = list(model.parameters())
        self.device = params[0].device if params else torch.device("cpu")
        self.scene_index: Optional[int] = None
        self.context_seed: int = 0
        self._object: Optional[torch.Tensor] = None  # [N] bool: Gaussians of object pixels (context alpha)
        self._lock = threading.Lock()  # one render (or scene change) at a time

    @classmethod
    def from_config(cls, config_path: Path, device: Optional[str] = None, scene: int = 0) -> "FeatureRenderer":
        """Load the run (with its data) and lift scene ``scene``."""
        from studio.models.runs import load_run

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        run = load_run(config_path, device, with_data=True)
        renderer = cls(run.model, run.pipeline.datamanager)
        renderer.set_scene(scene)
        return renderer

    # ---- scenes --------------------------------------------------------------------------------
    @property
    def num_scenes(self) -> int:
        return len(self.datamanager.scenes)

    def scene_names(self) -> list[str]:
        """One label per scene of the data manager: ``"index: folder name"``."""
        paths = getattr(self.datamanager, "scene_paths", None) or [f"scene {i}" for i in range(self.num_scenes)]
        return [f"{i}: {Path(p).name}" for i, p in enumerate(paths)]

    def set_scene(self, index: int, seed: Optional[int] = None) -> None:
        """Lift scene ``index`` from the context pair drawn with ``seed`` (default: the current one)."""
        index = int(index)
        if not 0 <= index < self.num_scenes:
            raise ValueError(f"scene {index} is not one of the run's {self.num_scenes} scenes.")
        seed = self.context_seed if seed is None else int(seed)
        batch = self.datamanager.batch([index], torch.Generator().manual_seed(seed))
        with self._lock, torch.no_grad():
            self.model.set_preview(batch)
            self._object = (batch["context_alpha"][0].reshape(-1) > 0.5).to(self.model.preview[0].means.device)
        self.scene_index, self.context_seed = index, seed

    @property
    def num_gaussians(self) -> int:
        return 0 if self.model.preview is None else int(self.model.preview[0].num_gaussians)

    def bounds(self) -> tuple[np.ndarray, float]:
        """Centre [3] and radius of a sphere around the Gaussians of the context views' object pixels."""
        from studio.gaussians.bounds import gaussian_bounds

        with self._lock:
            g = self.model.preview[0]
            means, scales = g.means[0].float(), g.scales[0].float()
            if self._object is not None and int(self._object.sum()) >= 8:
                means, scales = means[self._object], scales[self._object]
        center, radius = gaussian_bounds(means.cpu(), scales=scales.cpu(), quantile=0.01, scale_pad=3.0, sphere=True)
        return center.numpy(), max(float(radius), 1e-6)

    # ---- rendering -----------------------------------------------------------------------------
    def camera(self, viewmat: np.ndarray, K: np.ndarray, width: int, height: int):
        """Nerfstudio ``Cameras`` (OpenGL axes) of a world-to-camera viewmat (OpenCV) and K."""
        from studio.cameras.convert import viewmat_to_opengl_c2w
        from studio.viewer.camera import nerfstudio_camera

        c2w = viewmat_to_opengl_c2w(torch.as_tensor(np.asarray(viewmat), dtype=torch.float64))[:3, :4]
        return nerfstudio_camera(c2w, K, width, height)

    def render_outputs(self, viewmat: np.ndarray, K: np.ndarray, width: int, height: int) -> dict[str, torch.Tensor]:
        """``render_preview``'s outputs (``rgb``, ``features_pca`` [H,W,3], ``accumulation``, ``depth`` [H,W,1])."""
        camera = self.camera(viewmat, K, width, height)
        with self._lock, torch.no_grad():
            return self.model.render_preview(camera)

    def render(self, viewmat: np.ndarray, K: np.ndarray, width: int, height: int, mode: str = FEATURE_MODES[0]):
        """Image of ``mode`` (one of ``FEATURE_MODES``) seen by (viewmat [4,4], K [3,3]), uint8 [H,W,3]."""
        if mode not in _OUTPUTS:
            raise ValueError(f"Unknown render mode {mode!r}; choose one of {FEATURE_MODES}.")
        image = self.render_outputs(viewmat, K, width, height)[_OUTPUTS[mode]]
        image = image.clamp(0.0, 1.0).float().cpu().numpy()
        return (image * 255.0 + 0.5).astype(np.uint8)
