"""A character-level language model on Python's own standard-library sources (no download).

The text is a fixed list of standard-library modules read from
``sysconfig.get_paths()["stdlib"]`` (so it is the same on every machine with the same
Python version); the vocabulary is the set of bytes that occur in it. The model is a
tiny GPT (2 layers, d=64) whose logits come out as ``(batch, vocab, time)``, the layout
``F.cross_entropy`` takes with ``(batch, time)`` targets, so it is a plain TensorTask.
"""

from __future__ import annotations

import math
import sysconfig
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from autolrs.tasks.base import TensorTask

SOURCE_FILES = ("argparse.py", "textwrap.py", "functools.py", "dataclasses.py",
                "shutil.py", "threading.py", "heapq.py", "string.py")


def stdlib_text(files: tuple[str, ...] = SOURCE_FILES) -> bytes:
    """The concatenated bytes of ``files`` from this interpreter's standard library."""
    root = Path(sysconfig.get_paths()["stdlib"])
    missing = [name for name in files if not (root / name).is_file()]
    if missing:
        raise FileNotFoundError(f"standard-library sources not found under {root}: {missing}")
    return b"".join((root / name).read_bytes() for name in files)


class Block(nn.Module):
    """Pre-norm transformer block: causal self-attention and a 4x MLP."""

    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.norm1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(),
                                 nn.Linear(4 * d_model, d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, time, d_model = x.shape
        q, k, v = self.qkv(self.norm1(x)).split(d_model, dim=2)
        shape = (batch, time, self.n_heads, d_model // self.n_heads)
        q, k, v = (t.view(shape).transpose(1, 2) for t in (q, k, v))
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(attended.transpose(1, 2).reshape(batch, time, d_model))
        return x + self.mlp(self.norm2(x))


class CharGPT(nn.Module):
    """A tiny GPT: token and position embeddings, ``n_layers`` blocks, a linear head."""

    def __init__(self, vocab_size: int, context: int, d_model: int = 64, n_layers: int = 2,
                 n_heads: int = 4):
        super().__init__()
        self.token = nn.Embedding(vocab_size, d_model)
        self.position = nn.Parameter(torch.zeros(context, d_model))
        self.blocks = nn.Sequential(*(Block(d_model, n_heads) for _ in range(n_layers)))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size)
        nn.init.normal_(self.position, std=0.02)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits of shape ``(batch, vocab, time)`` for tokens of shape ``(batch, time)``."""
        x = self.token(tokens) + self.position[: tokens.shape[1]]
        return self.head(self.norm(self.blocks(x))).transpose(1, 2)


def charlm_task(seed: int = 0, context: int = 32, batch_size: int = 32,
                val_fraction: float = 0.1, val_windows: int = 256) -> TensorTask:
    """Next-byte prediction: windows of ``context`` bytes (stride ``context // 2``) from the
    first 90% of the text for training, ``val_windows`` windows from the last 10% for validation."""
    text = stdlib_text()
    vocab = sorted(set(text))
    index = torch.zeros(256, dtype=torch.long)
    index[torch.tensor(vocab)] = torch.arange(len(vocab))
    tokens = index[torch.tensor(list(text), dtype=torch.long)]
    split = int(len(tokens) * (1 - val_fraction))
    x_train, y_train = _windows(tokens[:split], context, stride=context // 2)
    x_val, y_val = _windows(tokens[split:], context, stride=context)
    pick = torch.linspace(0, len(x_val) - 1, min(val_windows, len(x_val))).round().long()
    x_val, y_val = x_val[pick], y_val[pick]

    def make_model() -> nn.Module:
        torch.manual_seed(seed)
        return CharGPT(len(vocab), context)

    return TensorTask("charlm", x_train, y_train, x_val, y_val, make_model, batch_size)


def _windows(tokens: torch.Tensor, context: int, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, next-token targets), each ``(n, context)``."""
    count = math.floor((len(tokens) - context - 1) / stride) + 1
    starts = torch.arange(count) * stride
    offsets = torch.arange(context + 1)
    chunks = tokens[starts[:, None] + offsets[None, :]]
    return chunks[:, :-1].contiguous(), chunks[:, 1:].contiguous()
