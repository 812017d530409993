"""The tiny preset's vision tower pre-training and the linear probes that measure a tower.

Each patch's targets are the colour and shape of the object whose centre falls in it (checked on a hand-made scene);
a short pre-training run lowers the loss, its heads name held-out objects' colours far above chance, and a linear
probe on its patches does too.
"""

from __future__ import annotations

import torch
from transformers import CLIPVisionConfig
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from vlm.synthetic.probes import probe_accuracies, tower_features
from vlm.synthetic.scenes import Scene, SceneObject
from vlm.synthetic.tower_pretraining import patch_targets, pretrain_vision_tower

SMALL = CLIPVisionConfig(
    hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2, image_size=64, patch_size=16
)


def test_patch_targets_mark_the_patch_holding_each_centre():
    objects = (
        SceneObject("red", "circle", x=8, y=8, size=10, rgb=(215, 40, 40)),  # patch (0, 0)
        SceneObject("blue", "cross", x=40, y=60, size=10, rgb=(45, 85, 215)),  # patch (3, 2)
    )
    colour, shape = patch_targets([Scene(objects, 64, (230, 230, 230))], patch_size=16)
    assert colour.shape == (1, 16)
    assert colour[0, 0] == 1 and shape[0, 0] == 1  # red = colour 1, circle = shape 1 (0 = none)
    assert colour[0, 3 * 4 + 2] == 3 and shape[0, 3 * 4 + 2] == 4  # blue, cross
    assert int((colour > 0).sum()) == 2 and int((shape > 0).sum()) == 2


def test_short_pretraining_learns_colours_and_the_probes_see_it():
    tower, report = pretrain_vision_tower(
        SMALL, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, steps=200, batch_size=32, learning_rate=3e-3, log_every=40
    )
    losses = [point["loss"] for point in report["loss_curve"]]
    assert losses[-1] < 0.6 * losses[0], losses
    # 6 colours: 17 % by guessing; untrained heads say "none" everywhere (0 % on objects)
    assert report["held_out_object_colour"] > 0.5, report
    assert not any(p.requires_grad for p in tower.parameters())

    with torch.no_grad():
        probes = probe_accuracies(tower_features(tower, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD), 64, 16, 300, 150)
    # colour is linear in the pixels, so even a random tower's patches give it away (~85 %); shape needs training
    # (the demo's base: ~99 %; docs/results.md), so the short run is only held to beating chance by far on colour
    assert probes["tower.colour"] > probes["majority.colour"] + 0.4, probes
    assert probes["objects"]["test"] > 300
