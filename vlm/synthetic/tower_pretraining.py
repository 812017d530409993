"""Pre-train the tiny preset's CLIP vision tower in code, supervised patch by patch by the scenes' ground truth.

The real setup starts from `openai/clip-vit-base-patch32`, a tower that already sees; a random tower gives the VQA
stage nothing to bind attributes to. This is the tiny preset's stand-in for CLIP's pre-training: every patch token
learns, through two linear heads that are dropped afterwards, the colour and the shape of the object whose centre
falls in that patch (or "none"). Scenes come from their own random stream, never the dataset's images, and go
through the same JPEG round trip as the dataset's files.

Why this objective (measured, docs/results.md "Stage 1"): at the demo's size it reaches ~99 % colour and shape on
held-out objects in ~2500 steps of 64 scenes (~3.5 CPU-minutes), where CLIP's contrastive loss on scene descriptions
spent 7 minutes to tell colour-swapped twins apart 51 % of the time. Adding the object's x, y as a target costs the
patches their shape (99 -> 78 %): where an object is stays in the token's index, as in a ViT.
"""

from __future__ import annotations

import io
import logging
import random
import time

import numpy as np
import torch
from PIL import Image
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel

from vlm.synthetic.fit import fit
from vlm.synthetic.scenes import COLORS, SHAPES, Scene, render_scene, sample_scene

logger = logging.getLogger(__name__)

COLOR_NAMES = tuple(COLORS)
JPEG_QUALITY = 92  # the dataset's default (`data synth --jpeg_quality`)


def centre_patch(o, patch_size: int, grid: int) -> int:
    """Index (row-major, CLS excluded) of the patch holding the object's centre."""
    return min(o.y // patch_size, grid - 1) * grid + min(o.x // patch_size, grid - 1)


def patch_targets(scenes: list[Scene], patch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per patch: colour (0 = none, 1..6) and shape (0 = none, 1..4) of the object centred in it; [B, patches]."""
    grid = scenes[0].image_size // patch_size
    colour = torch.zeros(len(scenes), grid * grid, dtype=torch.long)
    shape = torch.zeros_like(colour)
    for b, scene in enumerate(scenes):
        for o in scene.objects:
            p = centre_patch(o, patch_size, grid)
            colour[b, p] = 1 + COLOR_NAMES.index(o.color)
            shape[b, p] = 1 + SHAPES.index(o.shape)
    return colour, shape


def scene_pixels(scenes: list[Scene], mean, std) -> torch.Tensor:
    """CLIP pixel values of the scenes as the dataset stores them (JPEG); rendered at the tower's size, so CLIP's
    processing is just scaling and normalisation."""
    images = []
    for scene in scenes:
        buf = io.BytesIO()
        render_scene(scene).save(buf, format="JPEG", quality=JPEG_QUALITY)
        buf.seek(0)
        images.append(np.asarray(Image.open(buf).convert("RGB"), dtype=np.float32))
    array = np.stack(images) / 255.0
    mean, std = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    return (torch.from_numpy(array).permute(0, 3, 1, 2) - mean) / std


class PatchHeads(nn.Module):
    """The pre-training's read-out: colour and shape logits per patch token."""

    def __init__(self, width: int):
        super().__init__()
        self.colour = nn.Linear(width, 1 + len(COLOR_NAMES))
        self.shape = nn.Linear(width, 1 + len(SHAPES))

    def loss(self, patches: torch.Tensor, colour: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
        ce = nn.functional.cross_entropy
        return ce(self.colour(patches).flatten(0, 1), colour.flatten()) + ce(
            self.shape(patches).flatten(0, 1), shape.flatten()
        )


def pretrain_vision_tower(
    vision_config: CLIPVisionConfig,
    image_mean,
    image_std,
    steps: int,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    seed: int = 0,
    log_every: int | None = None,
) -> tuple[CLIPVisionModel, dict]:
    """The trained (frozen) tower and a report: loss curve and the heads' accuracy on 1000 held-out scenes."""
    rng = random.Random(f"tower-{seed}")
    torch.manual_seed(seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tower = CLIPVisionModel(vision_config).to(device)
    heads = PatchHeads(vision_config.hidden_size).to(device)
    size, patch = vision_config.image_size, vision_config.patch_size

    def step_loss(step: int) -> torch.Tensor:
        scenes = [sample_scene(rng, size) for _ in range(batch_size)]
        colour, shape = (t.to(device) for t in patch_targets(scenes, patch))
        hidden = tower(pixel_values=scene_pixels(scenes, image_mean, image_std).to(device)).last_hidden_state
        return heads.loss(hidden[:, 1:], colour, shape)

    started = time.time()
    tower.train()
    params = list(tower.parameters()) + list(heads.parameters())
    warmup = max(1, steps // 20)  # 5 % of the steps
    curve = fit(step_loss, params, steps, learning_rate, warmup, "vision tower pre-training", 0.01, log_every=log_every)
    tower.eval()
    report = {
        "steps": steps,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "seconds": round(time.time() - started, 1),
        "loss_curve": curve,
        **_held_out_head_accuracy(tower, heads, image_mean, image_std, seed),
    }
    logger.info("vision tower pre-trained: %s", {k: v for k, v in report.items() if k != "loss_curve"})
    tower.requires_grad_(False)
    return tower.cpu(), report


@torch.no_grad()
def _held_out_head_accuracy(tower, heads: PatchHeads, mean, std, seed: int, n: int = 1000) -> dict:
    rng = random.Random(f"tower-held-out-{seed}")
    size, patch = tower.config.image_size, tower.config.patch_size
    scenes = [sample_scene(rng, size) for _ in range(n)]
    colour, shape = (t.to(tower.device) for t in patch_targets(scenes, patch))
    hidden = torch.cat(
        [
            tower(pixel_values=scene_pixels(scenes[i : i + 250], mean, std).to(tower.device)).last_hidden_state
            for i in range(0, n, 250)
        ]
    )[:, 1:]
    has_object = colour > 0
    return {
        "held_out_object_colour": round(
            (heads.colour(hidden).argmax(-1) == colour)[has_object].float().mean().item(), 4
        ),
        "held_out_object_shape": round((heads.shape(hidden).argmax(-1) == shape)[has_object].float().mean().item(), 4),
        "held_out_empty_patch": round((heads.colour(hidden).argmax(-1) == 0)[~has_object].float().mean().item(), 4),
    }
