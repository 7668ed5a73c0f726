"""VideoScene at toy scale: two views -> coarse Gaussians -> one leap of a distilled video model -> 3D.

Wang et al., "VideoScene: Distilling Video Diffusion Model to Generate 3D Scenes in One Step"
(CVPR 2025), Sec. 3 (its Fig. 2 pipeline):

1. **Coarse 3D** (:meth:`VideoScene.coarse`): the feed-forward predictor (MVSplat-style,
   :class:`studio.lift.model.GaussianPredictor`) turns the two posed input views into pixel-aligned
   Gaussians.
2. **Rendered trajectory** (:meth:`VideoScene.prepare`, :meth:`VideoScene.coarse_video`): V cameras
   interpolated from the first input camera to the second
   (:func:`studio.cameras.paths.interpolate_viewmats`), the coarse Gaussians rendered there: a
   3D-consistent but artefact-laden "video".
3. **Leap** (:meth:`VideoScene.leap`): the rendered video is noised to the *leap timestep* t and
   the distilled student (a video model: :class:`~studio.generators.flashworld.FlashWorld`'s MV
   mode, first and last frame given) maps it to clean frames in **one** step. The timestep comes
   from the dynamic denoising policy network (:class:`studio.generators.policy.LeapPolicy`) or is
   fixed (:attr:`VideoScene.timestep`, chosen on validation scenes).
4. **3D from the frames** (:meth:`VideoScene.reconstruct`): the teacher's 3D mode (FlashWorld's
   Gaussian head at t = 0, every frame given; the teacher is trained for it with clean items,
   ``--loss.p-clean``) reconstructs pixel-aligned Gaussians feed-forward from the frames. (A
   four-view MVSplat-style predictor fine-tuned on two sharp end views and two low-resolution
   frames reconstructed worse on validation scenes: 25.5 vs 28.8 dB from ground-truth frames.)

The **teacher** (:meth:`VideoScene.teacher_generate`) is the multi-step video model the student is
distilled from (the keyframe-conditioned ``toy-mv``, DDIM with classifier-free guidance from pure
noise), followed by the same reconstruction. Paper vs here: the paper's video model is
CogVideoX-5B fine-tuned for two-view interpolation and its release stops at the video; ours is the
embedded ``toy-mv`` fine-tuned the same way (``python -m studio.generators.train --phase dual
--loss.keyframes 0 -1 --arc``) and goes on to 3D.

Frames: cameras in the trajectory's normalised scene frame (:mod:`studio.cameras.normalize`);
images in [0,1] on white; the predictor reads the inputs at its own resolution (64 px for the
embedded one), the video model works at ``res`` (32 px).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import torch
from torch import Tensor, nn

from studio.cameras.normalize import SceneFrame, scene_frame, to_frame
from studio.cameras.paths import interpolate_viewmats
from studio.generators.flashworld import FlashWorld, load_flashworld
from studio.generators.orbits import OrbitBatch
from studio.generators.policy import LeapPolicy, load_policy
from studio.lift.gaussians import PixelGaussians
from studio.lift.model import GaussianPredictor, load_predictor
from studio.priors.base import Condition
from studio.priors.sampling import ddim

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
STUDENT_WEIGHTS = WEIGHTS_DIR / "videoscene-toy.safetensors"
"""The embedded one-step student (leap-flow distilled)."""
TEACHER_WEIGHTS = WEIGHTS_DIR / "videoscene-teacher.safetensors"
"""The embedded interpolation teacher (``toy-mv`` fine-tuned with the first and last frame given)."""
POLICY_WEIGHTS = WEIGHTS_DIR / "videoscene-policy.safetensors"
"""The embedded dynamic denoising policy network (and the fixed timestep chosen on validation)."""

NEAR, FAR = 0.6, 1.45
"""Depth range (normalised frame: unit mean camera distance) of the coarse predictor's cost volume:
the training arcs put the scene's bounding sphere within 0.69-1.31."""


@dataclass
class TwoViews:
    """The prepared inputs of B scenes (see the module docstring)."""

    images: Tensor  # [B,2,3,R,R] the input views in [0,1] at the predictor's resolution
    context_viewmats: Tensor  # [B,2,4,4] their cameras, normalised frame
    context_Ks: Tensor  # [B,2,3,3] pixels of R x R
    viewmats: Tensor  # [B,V,4,4] the trajectory (first and last: the inputs), normalised frame
    Ks: Tensor  # [B,V,3,3] pixels of res x res
    frame: SceneFrame  # each item's normalised frame in its world


@dataclass
class VideoSceneOutput:
    coarse: PixelGaussians
    coarse_video: Tensor  # [B,V,3,res,res] in [0,1]
    video: Tensor  # [B,V,3,res,res] the generated frames in [0,1]
    gaussians: PixelGaussians  # reconstructed from the frames, normalised frame
    timestep: Tensor  # [B] the leap timesteps (T - 1 for the teacher)


class VideoScene(nn.Module):
    """The pipeline of the module docstring: ``predictor`` (coarse), ``student`` (one-step video
    model), ``teacher`` (multi-step video model and 3D reconstructor), optional ``policy``."""

    def __init__(
        self,
        predictor: GaussianPredictor,
        student: FlashWorld,
        teacher: FlashWorld,
        policy: Optional[LeapPolicy] = None,
        timestep: int = 400,
    ):
        super().__init__()
        self.predictor, self.student, self.teacher, self.policy = predictor, student, teacher, policy
        self.timestep = int(timestep)

    @property
    def res(self) -> int:
        return self.student.res

    @property
    def views(self) -> int:
        return self.student.prior.n_views

    def prepare(self, images: Tensor, viewmats: Tensor, Ks: Tensor) -> TwoViews:
        """Inputs of B scenes: ``images`` [B,2,3,R,R] in [0,1], world cameras ``viewmats`` [B,2,4,4]
        (OpenCV world-to-camera) and ``Ks`` [B,2,3,3] (pixels of R x R)."""
        R = images.shape[-1]
        trajectory = interpolate_viewmats(viewmats[:, 0], viewmats[:, 1], self.views)
        frame = scene_frame(trajectory)
        Ks_res = Ks[:, :1].clone()
        Ks_res[..., :2, :] *= self.res / R
        return TwoViews(
            images=images,
            context_viewmats=to_frame(viewmats, frame),
            context_Ks=Ks,
            viewmats=to_frame(trajectory, frame),
            Ks=Ks_res.expand(-1, self.views, 3, 3).contiguous(),
            frame=frame,
        )

    def prepare_arc(self, batch: OrbitBatch) -> TwoViews:
        """The inputs of an arc batch with source images (``sample_orbits(arc=True, source=True)``):
        its first and last generated views, at the data's resolution, in the batch's frame."""
        ends = [0, -1]
        return self.prepare(batch.source_images[:, ends], batch.viewmats[:, ends], batch.source_Ks[:, ends])

    def coarse(self, inputs: TwoViews) -> PixelGaussians:
        """Step 1: the predictor's Gaussians of the two views (normalised frame; depth range
        :data:`NEAR`-:data:`FAR`)."""
        near = torch.full((inputs.images.shape[0],), NEAR, device=inputs.images.device)
        return self.predictor(
            inputs.images, inputs.context_viewmats, inputs.context_Ks, near, torch.full_like(near, FAR)
        )

    def coarse_video(self, gaussians: PixelGaussians, inputs: TwoViews) -> Tensor:
        """Step 2: [B,V,3,res,res] renders of ``gaussians`` along the trajectory, on white."""
        return self.student.render(gaussians, inputs.viewmats, inputs.Ks)

    def condition(self, model: FlashWorld, inputs: TwoViews) -> Condition:
        """``model``'s condition: the trajectory's cameras, the inputs as the first and last frame."""
        first, last = inputs.images[:, 0], inputs.images[:, 1]
        return model.condition(inputs.viewmats, inputs.Ks, keyframes={0: first, -1: last})

    def choose_timestep(self, coarse_video: Tensor, cond: Condition) -> Tensor:
        """[B] leap timesteps: the policy's choice, or :attr:`timestep` without a policy."""
        B = coarse_video.shape[0]
        if self.policy is None:
            return torch.full((B,), self.timestep, dtype=torch.long, device=coarse_video.device)
        return self.policy.choose(coarse_video, cond)

    def leap(self, coarse_video: Tensor, t: Tensor, cond: Condition, generator=None) -> Tensor:
        """Step 3: [B,V,3,res,res] frames in [0,1]: the coarse video noised to ``t`` [B], one student step."""
        prior = self.student.prior
        x = coarse_video * 2.0 - 1.0
        x_t = prior.add_noise(x, torch.randn(x.shape, generator=generator).to(x), t)
        return prior.decode(self.student.clean_estimate(x_t, t, prior.predict(x_t, t, cond), cond))

    def reconstruct(self, video: Tensor, inputs: TwoViews) -> PixelGaussians:
        """Step 4: Gaussians from frames ``video`` [B,V,3,res,res] in [0,1] (the teacher's 3D mode
        at t = 0 with every frame given)."""
        keyframes = {v: video[:, v] for v in range(video.shape[1])}
        cond = self.teacher.condition(inputs.viewmats, inputs.Ks, keyframes=keyframes)
        zero = torch.zeros(video.shape[0], dtype=torch.long, device=video.device)
        return self.teacher.denoise(video * 2.0 - 1.0, zero, cond, inputs.viewmats, inputs.Ks)[2]

    @torch.no_grad()
    def generate(self, inputs: TwoViews, timestep: Union[int, Tensor, None] = None, generator=None) -> VideoSceneOutput:
        """The one-step pipeline; ``timestep`` (int or [B]) overrides the policy / fixed choice."""
        coarse = self.coarse(inputs)
        video_c = self.coarse_video(coarse, inputs)
        cond = self.condition(self.student, inputs)
        B = video_c.shape[0]
        if timestep is None:
            t = self.choose_timestep(video_c, cond)
        else:
            t = torch.as_tensor(timestep, dtype=torch.long, device=video_c.device).expand(B).clone()
        video = self.leap(video_c, t, cond, generator)
        return VideoSceneOutput(coarse, video_c, video, self.reconstruct(video, inputs), t)

    @torch.no_grad()
    def teacher_generate(
        self,
        inputs: TwoViews,
        steps: int = 50,
        guidance_scale: float = 3.0,
        generator=None,
        timestep: Optional[int] = None,
    ) -> VideoSceneOutput:
        """The multi-step teacher (first and last frame given, DDIM with CFG), then the same
        reconstruction: from pure noise (``timestep`` None: the video model alone), or from the
        coarse video noised to ``timestep`` (the trajectory the student learns to leap)."""
        prior = self.teacher.prior
        coarse = self.coarse(inputs)
        video_c = self.coarse_video(coarse, inputs)
        cond = self.condition(self.teacher, inputs)
        B = video_c.shape[0]
        t = prior.num_train_timesteps - 1 if timestep is None else int(timestep)
        t_start = torch.full((B,), t, dtype=torch.long, device=video_c.device)
        noise = torch.randn(video_c.shape, generator=generator).to(video_c)
        x_t = noise if timestep is None else prior.add_noise(video_c * 2.0 - 1.0, noise, t_start)
        uncond = prior.unconditional(cond) if guidance_scale != 1.0 else None
        x0 = ddim(prior, x_t, t_start, cond, uncond, guidance_scale, steps, clamp_x0=True, generator=generator)
        video = prior.decode(FlashWorld.with_given(x0, cond))
        return VideoSceneOutput(coarse, video_c, video, self.reconstruct(video, inputs), t_start)


def load_videoscene(
    student: Union[str, Path, None] = None,
    teacher: Union[str, Path, None] = None,
    predictor: Union[str, Path, None] = None,
    policy: Union[str, Path, None] = POLICY_WEIGHTS,
    device: Union[str, torch.device] = "cpu",
    use_policy: bool = True,
    timestep: int = 400,
) -> VideoScene:
    """The pipeline from its weights (``None``/"": the embedded files). ``policy`` (None: no
    policy, fixed ``timestep``) also gives the fixed timestep chosen on validation, used instead
    of the policy's choice when ``use_policy`` is False."""
    pol = None
    if policy:
        pol, timestep = load_policy(policy)
    model = VideoScene(
        load_predictor(predictor or None),
        load_flashworld(student or STUDENT_WEIGHTS),
        load_flashworld(teacher or TEACHER_WEIGHTS),
        pol if use_policy else None,
        timestep,
    )
    return model.to(device).eval()
