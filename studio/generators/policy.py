"""VideoScene's dynamic denoising policy network (DDPN, Wang et al. CVPR 2025, Sec. 3.3).

The leap timestep t trades the coarse render's structure (small t keeps it, artefacts included)
against the video model's freedom (large t repaints it, and can drift from the inputs). The best t
depends on the input, so a small network picks it per input, trained as a **contextual bandit**:

* context: the coarse video along the trajectory and the two given views, [B,V,3,h,w] each;
* actions: a grid of leap timesteps (:data:`ACTIONS`);
* reward: the quality of the result, the PSNR (dB) of the final Gaussians' renders at the scene's
  ground-truth views other than the inputs, minus that of the coarse Gaussians at the same views
  (the gain; the coarse PSNR removes the scene's own difficulty from the target);
* the network predicts the expected reward of every action (a neural reward model, regressed on the
  observed reward of the action taken, MSE); actions are taken epsilon-greedily during training
  (epsilon decays linearly from 1 to ``epsilon_end`` over the first half of the run) and greedily
  (argmax) at inference.

The paper trains its DDPN with the MSE of the one-step output against the ground-truth video as
the (negative) reward; the reward here is measured on the 3D result, what the pipeline delivers.

Training (``python -m studio.generators.policy``) runs the frozen pipeline
(:class:`studio.generators.videoscene.VideoScene`) on arc batches of the training split
(:mod:`studio.generators.orbits`), on HuggingFace Accelerate like the other trainers (one CPU or
``torchrun --nproc_per_node=K``). The file also records the best *fixed* timestep, chosen on
validation scenes (``studio eval generate --method videoscene --timesteps ...``) and passed as
``--fixed-timestep``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np
import torch
from torch import Tensor, nn

from studio.lift.data import LiftDataConfig
from studio.priors.base import Condition

ACTIONS = (100, 200, 300, 400, 500, 600, 700, 800)
"""Leap timesteps (of T = 1000) the policy chooses from."""


class LeapPolicy(nn.Module):
    """Predicted reward [B,K] of each of the K :attr:`actions` for a context (see the module docstring)."""

    def __init__(self, actions: tuple[int, ...] = ACTIONS, views: int = 4, width: int = 32):
        super().__init__()
        self.actions, self.views, self.width = tuple(int(a) for a in actions), int(views), int(width)
        w = self.width

        def block(i: int, o: int, stride: int) -> list[nn.Module]:
            return [nn.Conv2d(i, o, 3, stride=stride, padding=1), nn.GroupNorm(8, o), nn.SiLU()]

        self.body = nn.Sequential(
            *block(6 * self.views, w, 1), *block(w, 2 * w, 2), *block(2 * w, 2 * w, 2), *block(2 * w, 4 * w, 2)
        )
        self.head = nn.Sequential(nn.Linear(4 * w, 4 * w), nn.SiLU(), nn.Linear(4 * w, len(self.actions)))

    def config(self) -> dict:
        return {"actions": list(self.actions), "views": self.views, "width": self.width}

    def forward(self, coarse_video: Tensor, cond: Condition) -> Tensor:
        """``coarse_video`` [B,V,3,h,w] in [0,1]; ``cond`` a keyframe condition (``refs``,
        ``ref_mask``) of the video model -> [B,K] predicted rewards (dB gain over the coarse Gaussians)."""
        refs = cond.expand(coarse_video.shape[0]).tensors["refs"].to(coarse_video)  # zeros where not given
        x = torch.cat([coarse_video * 2.0 - 1.0, refs], 2).flatten(1, 2)
        return self.head(self.body(x).mean((-2, -1)))

    @torch.no_grad()
    def choose(self, coarse_video: Tensor, cond: Condition) -> Tensor:
        """[B] the timesteps of the highest predicted reward."""
        index = self(coarse_video, cond).argmax(-1)
        return torch.tensor(self.actions, device=coarse_video.device)[index]


def save_policy(policy: LeapPolicy, path: Union[str, Path], fixed_timestep: int, extra: Optional[dict] = None) -> Path:
    """Write ``policy`` (fp32; tiny) and the fixed timestep chosen on validation, atomically."""
    from safetensors.torch import save_file

    from studio.io import atomic_path, atomic_write_text

    path = Path(path)
    meta = {
        "kind": "videoscene-policy",
        "policy": policy.config(),
        "fixed_timestep": int(fixed_timestep),
        "training": extra or {},
    }
    state = {k: v.detach().cpu().contiguous() for k, v in policy.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"studio_config": json.dumps(meta), "format": "pt"})
    atomic_write_text(path.with_suffix(".json"), json.dumps(meta, indent=1) + "\n")
    return path


def load_policy(path: Union[str, Path]) -> tuple[LeapPolicy, int]:
    """(the policy, the fixed timestep chosen on validation) of a policy file."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from studio.io.errors import StudioInputError

    path = Path(path)
    if not path.is_file():
        raise StudioInputError(f"No VideoScene policy at {path}; train one with `python -m studio.generators.policy`.")
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads((f.metadata() or {}).get("studio_config", "{}"))
    if meta.get("kind") != "videoscene-policy":
        raise StudioInputError(f"{path} is not a VideoScene policy file.")
    policy = LeapPolicy(**{k: tuple(v) if k == "actions" else v for k, v in meta["policy"].items()})
    policy.load_state_dict(load_file(str(path)))
    return policy.eval(), int(meta["fixed_timestep"])


# ---- training ---------------------------------------------------------------------------------------


@dataclass
class PolicyTrainConfig:
    student: str = ""
    """One-step student (default: the embedded videoscene-toy)."""
    teacher: str = ""
    """Interpolation teacher / reconstructor (default: the embedded videoscene-teacher)."""
    predictor: str = ""
    """Coarse feed-forward predictor (default: the embedded mvsplat-toy)."""
    data: LiftDataConfig = field(default_factory=LiftDataConfig)
    """The training arcs (the Gaussian predictor's multi-view data, training split)."""
    actions: tuple[int, ...] = ACTIONS
    width: int = 32
    steps: int = 600
    batch: int = 16
    """Contexts per step and process."""
    lr: float = 1e-3
    epsilon_end: float = 0.1
    fixed_timestep: int = 400
    """The best fixed timestep on validation scenes (recorded in the file; the comparison baseline)."""
    seed: int = 0
    log_every: int = 50
    output: str = ""
    """Where the policy goes (default: the embedded videoscene-policy)."""
    device: str = "auto"
    workers: int = 2


def arc_inputs(model, batch):
    """(pipeline inputs, ground-truth views [B,E,3,h,w], their cameras [B,E,4,4] / Ks in the
    pipeline's frame) of an arc batch with source images: the first and last generated views are
    the inputs, every other view of the scene is ground truth."""
    from studio.cameras.normalize import to_frame

    inputs = model.prepare_arc(batch)
    gt = torch.cat([batch.images[:, 1:-1], batch.held_images], 1)
    vm = to_frame(torch.cat([batch.viewmats[:, 1:-1], batch.held_viewmats], 1), inputs.frame)
    Ks = torch.cat([batch.Ks[:, 1:-1], batch.held_Ks], 1)
    return inputs, gt, vm, Ks


def view_psnr(model, gaussians, gt: Tensor, vm: Tensor, Ks: Tensor) -> Tensor:
    """[B] PSNR (dB) of ``gaussians``' renders against ``gt`` [B,E,3,h,w] over the E views."""
    mse = (model.student.render(gaussians, vm, Ks) - gt).pow(2).mean((1, 2, 3, 4))
    return -10.0 * torch.log10(mse.clamp(min=1e-10))


def train_policy(cfg: PolicyTrainConfig, log: Callable[[str], None] = print) -> tuple[LeapPolicy, dict]:
    """The bandit training of the module docstring; saves and returns the policy."""
    from accelerate import Accelerator

    from studio.generators.orbits import orbits_from_lift, sample_orbits
    from studio.generators.videoscene import POLICY_WEIGHTS, load_videoscene
    from studio.io.cache import main_process_first
    from studio.lift.data import load_or_make

    accelerator = Accelerator(cpu=cfg.device == "cpu" or not torch.cuda.is_available())
    say = log if accelerator.is_main_process else (lambda _m: None)
    read = lambda log: orbits_from_lift(load_or_make(cfg.data, workers=cfg.workers, log=log))  # noqa: E731
    data = main_process_first(read, accelerator.is_main_process, accelerator.wait_for_everyone, say)
    model = load_videoscene(cfg.student, cfg.teacher, cfg.predictor, policy=None, device=accelerator.device)
    torch.manual_seed(cfg.seed)
    policy = LeapPolicy(cfg.actions, model.views, cfg.width)
    opt = torch.optim.Adam(policy.parameters(), lr=cfg.lr)
    policy, opt = accelerator.prepare(policy, opt)
    actions = torch.tensor(cfg.actions, device=accelerator.device)
    t0, seen = time.time(), []
    for step in range(cfg.steps):
        rng = np.random.default_rng([cfg.seed, step, accelerator.process_index])
        gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
        scenes = rng.integers(0, data.n_scenes, cfg.batch)
        batch = sample_orbits(data, scenes, model.views, model.res, rng, arc=True, source=True)
        batch = batch.to(accelerator.device)
        with torch.no_grad():
            inputs, gt, vm, Ks = arc_inputs(model, batch)
            coarse = model.coarse(inputs)
            video_c = model.coarse_video(coarse, inputs)
            cond = model.condition(model.student, inputs)
        predicted = policy(video_c, cond)
        epsilon = max(cfg.epsilon_end, 1.0 - (1.0 - cfg.epsilon_end) * step / max(cfg.steps // 2, 1))
        explore = torch.from_numpy(rng.random(cfg.batch) < epsilon).to(accelerator.device)
        random_a = torch.from_numpy(rng.integers(0, len(cfg.actions), cfg.batch)).to(accelerator.device)
        a = torch.where(explore, random_a, predicted.detach().argmax(-1))
        with torch.no_grad():
            video = model.leap(video_c, actions[a], cond, gen)
            reward = view_psnr(model, model.reconstruct(video, inputs), gt, vm, Ks) - view_psnr(
                model, coarse, gt, vm, Ks
            )
        loss = (predicted.gather(1, a[:, None])[:, 0] - reward).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        opt.step()
        seen.append(float(reward.mean()))
        if (step + 1) % cfg.log_every == 0:
            say(
                f"step {step + 1}/{cfg.steps} loss {float(loss.detach()):.4f} reward {np.mean(seen[-cfg.log_every :]):+.3f} dB "
                f"epsilon {epsilon:.2f} ({(time.time() - t0) / (step + 1):.2f} s/step)"
            )
    net = accelerator.unwrap_model(policy).eval()
    info = {"steps": cfg.steps, "seconds": round(time.time() - t0), "processes": accelerator.num_processes}
    if accelerator.is_main_process:
        out = Path(cfg.output) if cfg.output else POLICY_WEIGHTS
        extra = {**dataclasses.asdict(cfg), **info}
        save_policy(net, out, cfg.fixed_timestep, extra)
        say(f"Saved {out}")
    return net, info


def main() -> None:
    import tyro

    cfg = tyro.cli(PolicyTrainConfig, description=__doc__.split("\n\n")[0])
    train_policy(cfg)


if __name__ == "__main__":
    main()
