"""LoRA copies of a diffusers UNet: VSD's fake score and BSD's fine-tuned prior.

A copy holds no new weight tensor. :func:`lora_unet` makes a structural copy of the teacher's UNet
(new ``nn.Module`` objects) whose parameters and buffers *are* the teacher's tensors (shared
storage, frozen) and injects peft LoRA adapters (rank r on ``LORA_TARGET_MODULES`` of every
attention layer) into that copy only, so the teacher keeps predicting exactly as before. Optionally
a :class:`CameraEmbedding` becomes the copy's ``class_embedding``, so a camera is added to the
timestep embedding as in ProlificDreamer. LoRA ``B`` and the camera MLP's last layer start at zero:
a fresh copy predicts exactly what the teacher predicts. Extra memory: the float32 LoRA factors
(about 0.8M parameters for SD 2.1 at rank 4) and the camera MLP (about 1.7M for SD's E = 1280).
"""

from __future__ import annotations

import copy
import itertools
from collections import OrderedDict

import torch
from torch import Tensor, nn

LORA_TARGET_MODULES = ("to_q", "to_k", "to_v", "to_out.0")


class CameraEmbedding(nn.Module):
    """Camera [B, camera_dim] -> [B, E]: ``Linear -> SiLU -> Linear``, added to the UNet's timestep
    embedding (E its width). Kept in float32 whatever the UNet's dtype (the UNet casts the result to
    its own dtype); the last layer starts at zero, so the embedding is initially 0."""

    def __init__(self, camera_dim: int, embed_dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(camera_dim, embed_dim)
        self.act = nn.SiLU()
        self.linear_2 = nn.Linear(embed_dim, embed_dim)
        nn.init.zeros_(self.linear_2.weight)
        nn.init.zeros_(self.linear_2.bias)

    def forward(self, cam: Tensor) -> Tensor:
        cam = cam.reshape(cam.shape[0], -1).to(self.linear_1.weight.dtype)
        return self.linear_2(self.act(self.linear_1(cam)))


def camera_tensor(pose: Tensor) -> Tensor:
    """A camera condition ([4,4], [B,4,4], [16] or [B,16]) as [B,16] float32."""
    pose = torch.as_tensor(pose)
    if pose.dim() == 2 and pose.shape == (4, 4):
        pose = pose[None]
    if pose.dim() == 1:
        pose = pose[None]
    return pose.reshape(pose.shape[0], -1).float()


def _share_weights_copy(module: nn.Module) -> nn.Module:
    """New module objects whose parameters and buffers are the same tensors as ``module``'s."""
    memo = {id(t): t for t in itertools.chain(module.parameters(), module.buffers())}
    return copy.deepcopy(module, memo)


def shallow_module_copy(module: nn.Module) -> nn.Module:
    """A copy of ``module`` sharing its children, whose child/parameter/buffer tables are its own
    (so assigning a child on the copy leaves the original alone)."""
    new = copy.copy(module)
    new._modules = OrderedDict(module._modules)
    new._parameters = OrderedDict(module._parameters)
    new._buffers = OrderedDict(module._buffers)
    return new


def lora_unet(unet: nn.Module, rank: int, camera_dim: int, what: str) -> tuple[nn.Module, list[nn.Parameter]]:
    """(a LoRA copy of ``unet`` sharing its weights, its trainable parameters): the LoRA factors in
    float32 and, when ``camera_dim > 0``, a :class:`CameraEmbedding` of ``camera_dim`` inputs as its
    ``class_embedding``. ``what`` names the model in errors."""
    from peft import LoraConfig, inject_adapter_in_model

    unet = _share_weights_copy(unet)
    unet.requires_grad_(False)
    config = LoraConfig(
        r=rank, lora_alpha=rank, lora_dropout=0.0, init_lora_weights=True, target_modules=list(LORA_TARGET_MODULES)
    )
    inject_adapter_in_model(config, unet)
    params: list[nn.Parameter] = []
    for name, p in unet.named_parameters():
        if "lora_" in name:
            p.data = p.data.float()  # train the factors in float32 (peft casts activations)
            p.requires_grad_(True)
            params.append(p)
    if not params:
        raise ValueError(f"{what}: no attention projections {LORA_TARGET_MODULES} found for LoRA")
    if camera_dim > 0:
        if unet.class_embedding is not None:
            raise ValueError(f"{what}: the UNet already has a class embedding; camera_dim must be 0")
        device = next(unet.parameters()).device
        cam = CameraEmbedding(camera_dim, unet.time_embedding.linear_2.out_features).to(device)
        unet.class_embedding = cam
        for p in cam.parameters():
            p.requires_grad_(True)
            params.append(p)
    unet.eval()
    return unet, params


__all__ = ["LORA_TARGET_MODULES", "CameraEmbedding", "camera_tensor", "lora_unet", "shallow_module_copy"]
