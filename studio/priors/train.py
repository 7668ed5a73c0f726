"""Training loops of the embedded toy priors (``studio prior train toy-t2i|toy-nvs``).

One loop for both priors: sample a batch from the ToyWorld data (:mod:`studio.priors.toydata`),
drop the condition with probability ``cond_drop`` (classifier-free guidance), noise at uniform
timesteps, regress the prior's own ``training_target`` (v for the toy priors) with AdamW (linear
warm-up, cosine decay to 10%), keep an EMA of the weights and save the EMA model as fp16
safetensors (:func:`studio.priors.toy.save_toy_prior`, atomic). Everything is seeded: the same
config, data and device give the same weights.

* ``toy-t2i``: every view with its seed's caption (10% empty caption), random horizontal flips.
* ``toy-nvs``: a (reference, target) pair of distinct views of one seed with the relative pose
  ``[d_polar = -d_elev, sin d_az, cos d_az, d_radius]`` (target minus reference; Zero123); 10% null condition.

Training runs in sittings: with ``TrainConfig.checkpoint`` the whole state (weights, EMA, optimiser,
step, random generators) is written there atomically every ``checkpoint_every`` steps and when a
sitting ends (``stop_after`` seconds); ``train_prior(..., resume=True)`` continues from it and gives
the same weights as one uninterrupted run.

``TrainConfig.init`` starts from another toy-prior file of the same kind (:func:`studio.priors.toy.init_from`):
a 64x64 toy-nvs from the 32x32 weights, the progressive-resolution start of pixel-space diffusion
(convolutions and attention are resolution-agnostic; only the token-grid positions are resized).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Optional

import numpy as np
import torch
from torch import Tensor

from studio.cameras.convert import intrinsics_from_fov
from studio.cameras.sampling import orbit_viewmats
from studio.io.training_state import load_training_state, save_training_state
from studio.priors.base import Condition
from studio.priors.toy import ToyNVSPrior, ToyPrior, ToyT2IPrior, build_toy_prior, init_from, save_toy_prior
from studio.priors.toydata import DataConfig, ToyData

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
CALIBRATION_STEPS = 30


@dataclass
class TrainConfig:
    name: str = "toy-t2i"
    steps: int = 6000
    batch: int = 32
    lr: float = 5e-4
    weight_decay: float = 0.01
    warmup: int = 200
    ema_decay: float = 0.999
    cond_drop: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0
    time_budget: float = 0.0
    """Wall-clock seconds for the loop (0: none). After ``CALIBRATION_STEPS`` steps, ``steps`` is cut to
    what fits at the measured speed, so the warm-up/cosine schedule still ends at the last step."""
    arch: Dict = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    checkpoint: Optional[str] = None
    """Training-state file (``torch.save``; read back with ``weights_only=True``); None: no checkpoints."""
    checkpoint_every: int = 250
    """Steps between checkpoints."""
    stop_after: float = 0.0
    """Seconds of this sitting (0: run to ``steps``); then the state is checkpointed and the loop returns."""
    init: Optional[str] = None
    """Toy-prior file of the same kind to start from (:func:`studio.priors.toy.init_from`; e.g. the
    32x32 weights for a 64x64 prior); None: fresh initialisation."""

    def signature(self) -> dict:
        """What a resumed run must share with the run that wrote the checkpoint."""
        keys = ("name", "batch", "lr", "weight_decay", "warmup", "ema_decay", "cond_drop", "grad_clip", "seed")
        out = {k: getattr(self, k) for k in keys}
        out.update(
            arch=dict(self.arch), data={k: list(v) if isinstance(v, tuple) else v for k, v in vars(self.data).items()}
        )
        if self.init:  # only when set, so the checkpoints of runs without --init stay valid
            out["init"] = self.init
        return out


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class Batcher:
    """Draws training batches (model space [-1,1]) from :class:`ToyData` with a seeded generator."""

    def __init__(self, prior: ToyPrior, data: ToyData, cfg: TrainConfig, device: torch.device):
        self.prior, self.cfg, self.device = prior, cfg, device
        self.images = torch.from_numpy(np.ascontiguousarray(data.images))  # [S,V,H,W,3] uint8
        self.S, self.V = data.n_seeds, data.n_views
        self.gen = torch.Generator().manual_seed(cfg.seed + 1)
        if isinstance(prior, ToyT2IPrior):
            self.ids, self.mask = prior.tokenizer([str(c) for c in data.captions])
            self.null_ids, self.null_mask = prior.tokenizer([""])
        else:
            if self.V < 2 + int(prior.kind == "toy-epipolar"):
                raise ValueError(f"{prior.kind} needs at least {2 + int(prior.kind == 'toy-epipolar')} views per seed")
            self.elev = torch.from_numpy(data.elevation).float()
            self.azim = torch.from_numpy(data.azimuth).float()
            self.radius = torch.from_numpy(data.radius).float()

    def _img(self, s: Tensor, v: Tensor) -> Tensor:
        x = self.images[s, v].permute(0, 3, 1, 2).float() / 127.5 - 1.0
        return x.to(self.device)

    def __call__(self, B: int) -> tuple[Tensor, dict]:
        g = self.gen
        s = torch.randint(0, self.S, (B,), generator=g)
        v = torch.randint(0, self.V, (B,), generator=g)
        drop = torch.rand(B, generator=g) < self.cfg.cond_drop
        if isinstance(self.prior, ToyT2IPrior):
            x0 = self._img(s, v)
            flip = (torch.rand(B, generator=g) < 0.5).to(self.device)
            x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
            ids, mask = self.ids[s].clone(), self.mask[s].clone()
            ids[drop], mask[drop] = self.null_ids, self.null_mask
            return x0, {"ids": ids.to(self.device), "mask": mask.to(self.device)}
        if self.prior.kind == "toy-epipolar":
            return self.epipolar_batch(s, drop)
        v2 = (v + torch.randint(1, self.V, (B,), generator=g)) % self.V  # a different view of the same seed
        x0, ref = self._img(s, v2), self._img(s, v)
        pose = ToyNVSPrior.relative_pose(
            self.elev[s, v], self.azim[s, v], self.radius[s, v], self.elev[s, v2], self.azim[s, v2], self.radius[s, v2]
        )
        return x0, {"ref": ref, "pose": pose.to(self.device), "uncond": drop.float()[:, None].to(self.device)}

    def epipolar_batch(self, s: Tensor, drop: Tensor) -> tuple[Tensor, dict]:
        """A target view of each seed ``s`` [B] and 2 or 3 other views as the posed inputs (one
        count per batch, drawn with equal odds), cameras from the data's orbit angles."""
        g, B = self.gen, s.shape[0]
        K = 2 + int(torch.rand(1, generator=g).item() < 0.5)
        order = torch.rand(B, self.V, generator=g).argsort(1)[:, : K + 1]  # distinct views per seed
        rows = s[:, None].expand(B, K + 1)
        mats = orbit_viewmats(
            torch.rad2deg(self.elev[rows, order]), torch.rad2deg(self.azim[rows, order]), self.radius[rows, order]
        )
        x0 = self._img(s, order[:, 0])
        views = (self._img(rows[:, 1:].reshape(-1), order[:, 1:].reshape(-1)) + 1.0) * 0.5
        return x0, {
            "views": views.view(B, K, *views.shape[1:]),
            "view_mats": mats[:, 1:].to(self.device),
            "target_mats": mats[:, 0].to(self.device),
            "uncond": drop.float()[:, None].to(self.device),
        }


def embed(prior: ToyPrior, c: dict) -> Condition:
    """Condition of a training batch (with gradients into the text encoder for toy-t2i)."""
    if prior.kind == "toy-epipolar":
        S, fov = prior.image_size, prior.config["training_fov_deg"]
        K = intrinsics_from_fov(fov, S, S).to(c["views"].device)
        cond = prior.condition_views(c["views"], c["view_mats"], K, c["target_mats"], K)
        cond.tensors["uncond"] = c["uncond"]
        return cond
    if isinstance(prior, ToyT2IPrior):
        return Condition({"text": prior.text_encoder(c["ids"], c["mask"]), "text_mask": c["mask"]})
    return Condition({"ref": c["ref"], "pose": c["pose"], "uncond": c["uncond"]})


def denoising_loss(
    prior: ToyPrior,
    x0: Tensor,
    cond: Condition,
    gen: Optional[torch.Generator] = None,
    t: Optional[Tensor] = None,
    eps: Optional[Tensor] = None,
) -> Tensor:
    """MSE between ``predict(x_t, t, cond)`` and ``training_target`` (uniform t unless given)."""
    B = x0.shape[0]
    if t is None:
        t = torch.randint(0, prior.num_train_timesteps, (B,), generator=gen).to(x0.device)
    if eps is None:
        eps = torch.randn(x0.shape, generator=gen).to(x0.device)
    x_t = prior.add_noise(x0, eps, t)
    return (prior.predict(x_t, t, cond) - prior.training_target(x0, eps, t)).square().mean()


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    p = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(p, 1.0))))


def train_prior(
    cfg: TrainConfig,
    data: ToyData,
    device: str | torch.device = "cpu",
    progress: Optional[Callable[[int, float], None]] = None,
    prior: Optional[ToyPrior] = None,
    resume: bool = False,
) -> tuple[ToyPrior, dict]:
    """Train ``cfg.name`` on ``data``; returns (EMA prior in eval mode, stats). ``stats["finished"]``
    is False when the sitting stopped early (``cfg.stop_after``); rerun with ``resume=True``.

    With ``cfg.time_budget`` set, ``cfg.steps`` is lowered in place to the steps that fit (a resumed
    run keeps the step count of its checkpoint). ``resume`` needs ``cfg.checkpoint``; a missing file
    starts from scratch."""
    device = resolve_device(str(device)) if not isinstance(device, torch.device) else device
    torch.manual_seed(cfg.seed)
    if prior is None:
        prior = build_toy_prior(cfg.name, {"arch": dict(cfg.arch)} if cfg.arch else None)
    if data.images.shape[2] != prior.image_size:
        raise ValueError(f"{cfg.name} is {prior.image_size}x{prior.image_size}, the data {data.images.shape[2]} px")
    if prior.kind == "toy-epipolar":  # the cameras of the training renders (condition_views needs intrinsics)
        prior.config["training_fov_deg"] = cfg.data.fov_deg
    init = init_from(prior, cfg.init) if cfg.init else None  # a resumed run then loads its own state
    prior = prior.to(device).train()
    ema = copy.deepcopy(prior).eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    decay_params = [p for n, p in prior.named_parameters() if p.dim() >= 2 and "pos" not in n and "null" not in n]
    other = [p for n, p in prior.named_parameters() if not (p.dim() >= 2 and "pos" not in n and "null" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay_params, "weight_decay": cfg.weight_decay}, {"params": other, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.99),
    )
    batcher = Batcher(prior, data, cfg, device)
    gen = torch.Generator().manual_seed(cfg.seed + 2)
    losses, step, before, sittings = [], 0, 0.0, 1
    ckpt = Path(cfg.checkpoint) if cfg.checkpoint else None
    if resume and ckpt is not None and ckpt.is_file():
        state = load_training_state(ckpt, cfg.signature())
        prior.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        batcher.gen.set_state(state["batcher_gen"])
        gen.set_state(state["gen"])
        losses = state["losses"].tolist()
        step, cfg.steps, before, sittings = state["step"], state["steps"], state["seconds"], state["sittings"] + 1

    def checkpoint() -> None:
        if ckpt is not None:
            state = {"model": prior.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(), "step": step}
            state.update(steps=cfg.steps, seconds=before + time.time() - t0, sittings=sittings)
            state.update(batcher_gen=batcher.gen.get_state(), gen=gen.get_state(), losses=torch.tensor(losses[-100:]))
            save_training_state(ckpt, state, cfg.signature())

    t0, first = time.time(), step
    while step < cfg.steps:
        if cfg.time_budget > 0 and step == CALIBRATION_STEPS and first == 0:
            per_step = (time.time() - t0) / step
            cfg.steps = max(step + 1, min(cfg.steps, int(cfg.time_budget / per_step)))
        if cfg.stop_after > 0 and step > first and time.time() - t0 >= cfg.stop_after:
            break
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        x0, c = batcher(cfg.batch)
        loss = denoising_loss(prior, x0, embed(prior, c), gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(prior.parameters(), cfg.grad_clip)
        opt.step()
        d = min(cfg.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(list(ema.parameters()), list(prior.parameters()), 1.0 - d)
        losses.append(loss.item())
        step += 1
        if progress:
            progress(step, float(np.mean(losses[-50:])))
        if step % cfg.checkpoint_every == 0:
            checkpoint()
    checkpoint()
    seconds = before + time.time() - t0
    stats = {
        "steps": cfg.steps,
        "steps_done": step,
        "finished": step >= cfg.steps,
        "sittings": sittings,
        "batch": cfg.batch,
        "lr": cfg.lr,
        "ema_decay": cfg.ema_decay,
        "cond_drop": cfg.cond_drop,
        "seed": cfg.seed,
        "final_loss": float(np.mean(losses[-100:])) if losses else None,
        "seconds": round(seconds, 1),
        "seconds_per_step": round(seconds / max(step, 1), 3),
        "device": str(device),
        "torch": torch.__version__,
        "init": init,
        "data": {
            **{k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(cfg.data).items()},
            "n_images": int(data.n_seeds * data.n_views),
            "first_seed": int(data.seeds[0]),
            "last_seed": int(data.seeds[-1]),
            "split": "train (splits.json)",
        },
    }
    ema.config.setdefault("training", {}).update(stats)
    return ema, stats


def default_output(name: str) -> Path:
    return WEIGHTS_DIR / f"{name}.safetensors"


def save(prior: ToyPrior, path: Path) -> Path:
    return save_toy_prior(prior, path)
