"""A small learned text encoder for the embedded toy priors (``toy-t2i``).

* :class:`WordTokenizer`: word level over ToyWorld's caption vocabulary (:func:`toyworld_vocabulary`:
  articles, "with"/"and", finishes, colours, metals, texture words, categories, part names) plus
  ``<pad>`` (id 0) and ``<unk>`` (id 1). Lower-cases, treats commas and full stops as spaces; any
  other word maps to ``<unk>``. Sequences are padded/truncated to ``max_len``; the mask marks the
  real words, and an empty text keeps one position (a ``<pad>`` token, mask 1) so attention never
  sees an all-masked row: the empty text is the unconditional (CFG) prompt.
* :class:`TextEncoder`: token + learned positional embeddings and a few pre-norm transformer layers
  -> tokens ``[B, L, D]`` for cross-attention, trained jointly with the denoiser.

The vocabulary is stored with the weights (the JSON config), so a later change of ToyWorld's word
lists does not silently change a trained model's ids.
"""

from __future__ import annotations

import re
from typing import List, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

PAD, UNK = "<pad>", "<unk>"


def toyworld_vocabulary() -> List[str]:
    """Every word ToyWorld's captions use (sorted), without the special tokens."""
    from studio.scenes.toyworld import captions, materials, shapes

    words = {"a", "an", "with", "and"}
    for rough in (0.1, 0.4, 0.8):
        for metal in (0.0, 1.0):
            words.update(materials.finish_of(rough, metal).split())
    words.update(materials.PALETTE_SRGB)
    words.update(materials.METAL_SRGB)
    words.update(captions.TEX_WORD.values())
    words.update(shapes.CATEGORIES)
    words.update(captions.MAIN_PART.values())
    return sorted(words)


class WordTokenizer:
    """Word-level tokenizer: ``<pad>`` = 0, ``<unk>`` = 1, then the vocabulary words."""

    def __init__(self, words: Sequence[str] | None = None, max_len: int = 16):
        words = list(toyworld_vocabulary() if words is None else words)
        words = [w for w in words if w not in (PAD, UNK)]
        self.itos: List[str] = [PAD, UNK] + words
        self.stoi = {w: i for i, w in enumerate(self.itos)}
        self.max_len = int(max_len)

    def __len__(self) -> int:
        return len(self.itos)

    @property
    def words(self) -> List[str]:
        """The vocabulary without the special tokens (what the config stores)."""
        return self.itos[2:]

    @staticmethod
    def split(text: str) -> List[str]:
        return re.sub(r"[,.;:!?]", " ", text.lower()).split()

    def ids(self, text: str) -> List[int]:
        return [self.stoi.get(w, 1) for w in self.split(text)][: self.max_len]

    def __call__(self, texts: Union[str, Sequence[str]]) -> Tuple[Tensor, Tensor]:
        """``(ids [B, L] long, mask [B, L] bool)`` with ``L = max_len``."""
        if isinstance(texts, str):
            texts = [texts]
        ids = torch.zeros(len(texts), self.max_len, dtype=torch.long)
        mask = torch.zeros(len(texts), self.max_len, dtype=torch.bool)
        for b, t in enumerate(texts):
            row = self.ids(t)
            if row:
                ids[b, : len(row)] = torch.tensor(row)
            mask[b, : max(len(row), 1)] = True
        return ids, mask

    def decode(self, ids: Sequence[int]) -> str:
        return " ".join(self.itos[i] for i in ids if i != 0)


class TextEncoder(nn.Module):
    """Embeddings + ``layers`` pre-norm transformer layers -> ``[B, L, dim]`` tokens."""

    def __init__(self, vocab_size: int, max_len: int = 16, dim: int = 128, layers: int = 2, heads: int = 4):
        super().__init__()
        self.tok = nn.Embedding(vocab_size, dim)
        self.pos = nn.Parameter(torch.zeros(1, max_len, dim))
        nn.init.normal_(self.tok.weight, std=0.02)
        nn.init.normal_(self.pos, std=0.02)
        layer = nn.TransformerEncoderLayer(
            dim, heads, dim_feedforward=2 * dim, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.layers = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def forward(self, ids: Tensor, mask: Tensor) -> Tensor:
        h = self.tok(ids) + self.pos[:, : ids.shape[1]]
        h = self.layers(h, src_key_padding_mask=~mask)
        return self.norm(h) * mask[..., None].to(h.dtype)
