"""Device-agnostic defaults shared by every stage's trainer config."""

from __future__ import annotations

import torch


def bf16_available() -> bool:
    """bf16 mixed precision where the accelerator supports it (CUDA Ampere+); fp32 on CPU, where it is slower."""
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
