"""Device-agnostic defaults shared by every stage's trainer config."""

from __future__ import annotations

import torch


def bf16_available() -> bool:
    """bf16 mixed precision where the accelerator supports it (CUDA Ampere+); fp32 on CPU, where it is slower."""
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def apply_device_defaults(args) -> None:
    """For a `TrainingArguments` before its `__post_init__`: bf16 where supported unless set, and `use_cpu` on a
    machine without an accelerator, which also makes `accelerate launch --multi_gpu --num_processes N` start N
    gloo (MULTI_CPU) processes there instead of N unconnected single-process runs."""
    if args.bf16 is None:
        args.bf16 = bf16_available() and not args.fp16
    has_accelerator = torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())
    if not has_accelerator and not torch.backends.mps.is_available():
        args.use_cpu = True
