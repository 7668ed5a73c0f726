"""Tiny random diffusers snapshots in the real layouts (Stable Diffusion, DeepFloyd IF, Zero123 /
Stable Zero123) and a tiny transformers DPT depth model, built offline for the adapter tests and
the end-to-end runs of ``tests/test_real_weights_pipeline.py``."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from conftest import save_tiny_t5_tokenizer
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, PNDMScheduler, UNet2DConditionModel

UNET_BLOCKS = {
    "layers_per_block": 1,
    "block_out_channels": (32, 64),
    "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
    "cross_attention_dim": 32,
    "attention_head_dim": 8,
    "norm_num_groups": 32,
}


# ---- tiny snapshots --------------------------------------------------------------------------
def tiny_vae(root: Path) -> None:
    torch.manual_seed(1)
    AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=32,
        sample_size=16,
    ).save_pretrained(root / "vae")


def tiny_clip_tokenizer(d: Path) -> None:
    d.mkdir(parents=True)
    vocab = [
        "l",
        "o",
        "w",
        "e",
        "r",
        "s",
        "t",
        "i",
        "d",
        "n",
        "lo",
        "l</w>",
        "w</w>",
        "r</w>",
        "t</w>",
        "low</w>",
        "er</w>",
        "lowest</w>",
        "newer</w>",
        "wider",
        "<unk>",
        "<|startoftext|>",
        "<|endoftext|>",
    ]
    (d / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (d / "merges.txt").write_text("#version: 0.2\nl o\nlo w</w>\ne r</w>\n")
    (d / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "CLIPTokenizer",
                "model_max_length": 77,
                "unk_token": "<|endoftext|>",
                "bos_token": "<|startoftext|>",
                "eos_token": "<|endoftext|>",
                "pad_token": "<|endoftext|>",
            }
        )
    )


def make_sd(root: Path, prediction_type: str = "epsilon") -> Path:
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, **UNET_BLOCKS).save_pretrained(root / "unet")
    tiny_vae(root)
    CLIPTextModel(
        CLIPTextConfig(
            vocab_size=100,
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            projection_dim=32,
            bos_token_id=21,
            eos_token_id=22,
            pad_token_id=22,
        )
    ).save_pretrained(root / "text_encoder")
    tiny_clip_tokenizer(root / "tokenizer")
    PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        skip_prk_steps=True,
        prediction_type=prediction_type,
    ).save_pretrained(root / "scheduler")
    return root


def make_if(root: Path) -> Path:
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(0)
    blocks = dict(UNET_BLOCKS)
    UNet2DConditionModel(sample_size=16, in_channels=3, out_channels=6, encoder_hid_dim=16, **blocks).save_pretrained(
        root / "unet"
    )
    T5EncoderModel(
        T5Config(vocab_size=64, d_model=16, d_kv=4, d_ff=32, num_layers=2, num_heads=4, decoder_start_token_id=0)
    ).save_pretrained(root / "text_encoder")
    save_tiny_t5_tokenizer(root / "tokenizer")
    DDPMScheduler(
        beta_schedule="squaredcos_cap_v2",
        variance_type="learned_range",
        prediction_type="epsilon",
        clip_sample=False,
        thresholding=False,
    ).save_pretrained(root / "scheduler")
    return root


def make_zero123(root: Path) -> Path:
    from safetensors.torch import save_file
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    UNet2DConditionModel(sample_size=8, in_channels=8, out_channels=4, **UNET_BLOCKS).save_pretrained(root / "unet")
    tiny_vae(root)
    CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=37,
            projection_dim=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=32,
            patch_size=8,
        )
    ).save_pretrained(root / "image_encoder")
    (root / "feature_extractor").mkdir()
    (root / "feature_extractor" / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "image_processor_type": "CLIPImageProcessor",
                "crop_size": 32,
                "size": 32,
                "image_mean": [0.48145466, 0.4578275, 0.40821073],
                "image_std": [0.26862954, 0.26130258, 0.27577711],
            }
        )
    )
    cc = torch.nn.Linear(32 + 4, 32)
    (root / "cc_projection").mkdir()
    (root / "cc_projection" / "config.json").write_text(
        json.dumps({"_class_name": "CCProjection", "in_channel": 36, "out_channel": 32})
    )
    save_file(
        {"projection.weight": cc.weight.detach().contiguous(), "projection.bias": cc.bias.detach().contiguous()},
        str(root / "cc_projection" / "diffusion_pytorch_model.safetensors"),
    )
    DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False
    ).save_pretrained(root / "scheduler")
    return root


def make_depth_model(root: Path) -> Path:
    """A tiny random DPT (``DPTForDepthEstimation`` + ``DPTImageProcessor`` at 32 px) in ``root``."""
    from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessor

    torch.manual_seed(0)
    config = DPTConfig(
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=37,
        image_size=32,
        patch_size=8,
        neck_hidden_sizes=[8, 16, 16, 32],
        fusion_hidden_size=16,
        backbone_out_indices=[0, 1, 2, 3],
    )
    DPTForDepthEstimation(config).save_pretrained(root)
    DPTImageProcessor(size={"height": 32, "width": 32}, keep_aspect_ratio=False).save_pretrained(root)
    return root
