"""Pre-train the tiny preset's CLIP vision tower in code, with CLIP's own contrastive loss, on synthetic scenes.

The real setup starts from `openai/clip-vit-base-patch32`, a tower that already sees; a random tower gives the
VQA stage nothing to bind attributes to. This is the tiny preset's stand-in for CLIP's pre-training: a tiny
`CLIPModel` (our vision config + a small text tower) learns to match rendered scenes with their descriptions
("A red square is at the top left. ..."). Half of each batch are counterfactual twins of the other half (two
objects' colours swapped, or one object's shape changed, layout kept), so in-batch negatives can only be told
apart by which colour goes with which shape: the binding that VQA questions ask about. Only the vision tower is
kept. Scenes are drawn from their own random stream, never the dataset's images.
"""

from __future__ import annotations

import dataclasses
import logging
import random

import numpy as np
import torch
from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPVisionConfig, CLIPVisionModel

from vlm.synthetic.questions import describe
from vlm.synthetic.scenes import SHAPES, Scene, render_scene, sample_scene

logger = logging.getLogger(__name__)


def _unique(objects) -> bool:
    pairs = [(o.color, o.shape) for o in objects]
    return len(set(pairs)) == len(pairs)


def counterfactual(scene: Scene, rng: random.Random) -> Scene:
    """The same layout with two objects' colours swapped (or one object's shape changed); every (colour, shape)
    pair stays unique, so each description still has one referent per object."""
    objects = list(scene.objects)
    swaps = []
    for i in range(len(objects)):
        for j in range(i + 1, len(objects)):
            a, b = objects[i], objects[j]
            swapped = list(objects)
            swapped[i] = dataclasses.replace(a, color=b.color, rgb=b.rgb)
            swapped[j] = dataclasses.replace(b, color=a.color, rgb=a.rgb)
            if a.color != b.color and a.shape != b.shape and _unique(swapped):
                swaps.append(swapped)
    if swaps and rng.random() < 0.5:
        objects = rng.choice(swaps)
    else:
        i = rng.randrange(len(objects))
        taken = {(o.color, o.shape) for o in objects}
        shapes = [s for s in SHAPES if (objects[i].color, s) not in taken]
        if shapes:
            objects[i] = dataclasses.replace(objects[i], shape=rng.choice(shapes))
    return dataclasses.replace(scene, objects=tuple(objects))


def _pixels(scenes: list[Scene], mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    # The images are rendered at the tower's size, so CLIP's processing is just scaling and normalisation.
    array = np.stack([np.asarray(render_scene(s), dtype=np.float32) for s in scenes]) / 255.0
    return (torch.from_numpy(array).permute(0, 3, 1, 2) - mean) / std


def pretrain_vision_tower(
    vision_config: CLIPVisionConfig,
    tokenizer,
    image_mean,
    image_std,
    steps: int,
    batch_size: int = 128,
    learning_rate: float = 1e-3,
    seed: int = 0,
) -> tuple[CLIPVisionModel, dict]:
    """Returns the trained tower and a small report (loss, image->text accuracy on held-out twin pairs)."""
    rng = random.Random(f"tower-{seed}")
    torch.manual_seed(seed)
    width = vision_config.hidden_size
    text_config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=width,
        intermediate_size=4 * width,
        num_hidden_layers=2,
        num_attention_heads=vision_config.num_attention_heads,
        max_position_embeddings=96,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
    )
    clip = CLIPModel(
        CLIPConfig(text_config=text_config.to_dict(), vision_config=vision_config.to_dict(), projection_dim=width)
    )
    mean = torch.tensor(image_mean).view(1, 3, 1, 1)
    std = torch.tensor(image_std).view(1, 3, 1, 1)
    size = vision_config.image_size
    eos = tokenizer.eos_token  # CLIP's text tower pools at the first EOS; padding repeats it

    def batch(n: int):
        scenes = [sample_scene(rng, size) for _ in range(n // 2)]
        scenes += [counterfactual(s, rng) for s in scenes]
        ids = [tokenizer(describe(s) + eos, add_special_tokens=False)["input_ids"] for s in scenes]
        longest = max(map(len, ids))
        input_ids = torch.tensor([t + [tokenizer.eos_token_id] * (longest - len(t)) for t in ids])
        attention_mask = torch.tensor([[1] * len(t) + [0] * (longest - len(t)) for t in ids])
        return dict(input_ids=input_ids, attention_mask=attention_mask, pixel_values=_pixels(scenes, mean, std))

    optimizer = torch.optim.AdamW(clip.parameters(), lr=learning_rate, weight_decay=0.1)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, learning_rate, total_steps=steps, pct_start=0.05)
    clip.train()
    losses = []
    for step in range(steps):
        loss = clip(**batch(batch_size), return_loss=True).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if (step + 1) % 100 == 0:
            logger.info(
                "vision tower pre-training: step %d/%d, contrastive loss %.3f", step + 1, steps, np.mean(losses[-100:])
            )

    clip.eval()
    with torch.no_grad():  # image -> text retrieval within held-out batches of twins
        held_out = batch(256)
        logits = clip(**held_out).logits_per_image
        accuracy = (logits.argmax(-1) == torch.arange(len(logits))).float().mean().item()
    report = {
        "steps": steps,
        "final_loss": float(np.mean(losses[-50:])) if losses else None,
        "twin_retrieval": accuracy,
    }
    logger.info("vision tower pre-trained: %s", report)
    tower = clip.vision_model
    tower.requires_grad_(False)
    return tower, report
