"""Small text classifiers for token-id inputs (`hf:` text datasets), in the model registry.

A registry factory sees only the input shape and the number of classes, not the tokenizer's
vocabulary, so the embedding is a fixed table of `VOCAB_BUCKETS` rows and token ids beyond it are
hashed into it (id modulo the table size): any tokenizer works, and a vocabulary of up to 32,767
tokens (BERT's 30,522 included) maps one row per token. Inputs follow `harness.datasets.Dataset`'s
token convention: (B, L, 1, 1) int64, tokenizer id + 1, 0 = padding, which every model here masks.

Both models are deliberately tiny (CPU-trainable in seconds on thousands of sentences) and
deterministic given the seed: no dropout, so CSL from the harness and from a plain loop agree.
"""

from __future__ import annotations

import torch
from torch import nn

from harness.errors import HarnessError
from harness.model_registry import register_model

__all__ = ["VOCAB_BUCKETS", "TextBoW", "TextCNN"]

#: Rows of the embedding table (row 0 is padding): 2**15, so 32,767 token ids map one to one.
VOCAB_BUCKETS = 2**15
_DIM = 64


def _token_ids(x: torch.Tensor) -> torch.Tensor:
    """(B, L, 1, 1) or (B, L) ids (any dtype: the registry's input check sends float zeros) ->
    (B, L) int64 rows of the table, padding (0) kept at 0, larger ids hashed into 1..BUCKETS-1."""
    ids = x.reshape(x.shape[0], -1).long()
    return torch.where(ids > 0, (ids - 1) % (VOCAB_BUCKETS - 1) + 1, torch.zeros_like(ids))


def _check_shape(name: str, input_shape: tuple[int, int, int]) -> int:
    length, h, w = input_shape
    if (h, w) != (1, 1):
        raise HarnessError(f"model {name} takes token ids (a text dataset, e.g. hf:PATH,text=COLUMN,tokenizer=...), "
                           f"not {length}x{h}x{w} images; pick mlp or small_cnn for images")
    return int(length)


class TextBoW(nn.Module):
    """fastText-style classifier: mean of the (non-padding) token embeddings, one hidden layer."""

    def __init__(self, num_classes: int, dim: int = _DIM) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB_BUCKETS, dim, padding_idx=0)
        self.head = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids = _token_ids(x)
        mask = (ids > 0).unsqueeze(-1).to(self.embed.weight.dtype)
        pooled = (self.embed(ids) * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        return self.head(pooled)


class TextCNN(nn.Module):
    """Kim (2014)-style classifier: one 1-D convolution (width 3) over the token embeddings, ReLU,
    max over the (non-padding) positions."""

    def __init__(self, num_classes: int, dim: int = _DIM, channels: int = 128) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB_BUCKETS, dim, padding_idx=0)
        self.conv = nn.Conv1d(dim, channels, 3, padding=1)
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids = _token_ids(x)
        h = torch.relu(self.conv(self.embed(ids).transpose(1, 2)))  # (B, channels, L)
        pad = (ids == 0).unsqueeze(1)
        h = h.masked_fill(pad, 0.0)  # ReLU outputs are >= 0: a masked 0 never wins the max of a real token
        return self.head(h.amax(2))


@register_model("text_bow", "text: mean of token embeddings (2^15 hashed rows x 64) + 1 hidden layer; for hf: "
                "text datasets")
def text_bow(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    _check_shape("text_bow", input_shape)
    return TextBoW(num_classes)


@register_model("text_cnn", "text: token embeddings (2^15 hashed rows x 64), one width-3 conv (128), max-pool; "
                "for hf: text datasets")
def text_cnn(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    _check_shape("text_cnn", input_shape)
    return TextCNN(num_classes)
