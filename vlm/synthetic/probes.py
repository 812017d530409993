"""Linear probes: what the frozen tower's patch features, and the projector's outputs, say about each object.

For every object of freshly sampled scenes (a random stream of their own, never a dataset's), the feature vector of
the patch holding the object's centre is read; a logistic regression (scikit-learn) is fit on the objects of 2000
scenes and scored on those of 1000 others, for the object's colour (6 classes), shape (4) and cell of a 3 x 3 grid
(9, as the descriptions say it). A model whose probes are near perfect but whose VQA is not has its limit on the
language side, not in what it sees.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from vlm.synthetic.questions import where
from vlm.synthetic.scenes import SHAPES, Scene, sample_scene
from vlm.synthetic.tower_pretraining import COLOR_NAMES, centre_patch, scene_pixels

TARGETS = ("colour", "shape", "cell")
CELLS = tuple(
    f"at the {v} {h}" if (v, h) != ("center", "middle") else "in the center"
    for v in ("top", "center", "bottom")
    for h in ("left", "middle", "right")
)

# scenes -> {feature name: [scenes, tokens, width]}; token 0 is CLS, then the patches row by row
FeatureFn = Callable[[list[Scene]], dict[str, torch.Tensor]]


def _objects(n_scenes: int, stream: str, image_size: int, patch_size: int):
    rng = random.Random(stream)
    scenes = [sample_scene(rng, image_size) for _ in range(n_scenes)]
    grid = image_size // patch_size
    rows = [
        (i, 1 + centre_patch(o, patch_size, grid), COLOR_NAMES.index(o.color), SHAPES.index(o.shape))
        + (CELLS.index(where(o, image_size)),)
        for i, s in enumerate(scenes)
        for o in s.objects
    ]
    return scenes, np.array(rows)


@torch.no_grad()
def scene_features(feature_fn: FeatureFn, scenes: list[Scene], batch: int = 250) -> dict[str, torch.Tensor]:
    """`feature_fn` over the scenes, `batch` at a time, as float32 on the CPU."""
    parts = [feature_fn(scenes[i : i + batch]) for i in range(0, len(scenes), batch)]
    return {name: torch.cat([p[name] for p in parts]).float() for name in parts[0]}


@torch.no_grad()
def probe_accuracies(
    feature_fn: FeatureFn, image_size: int, patch_size: int, train_scenes: int = 2000, test_scenes: int = 1000
) -> dict:
    """`{"<features>.<target>": held-out accuracy}` for every feature the function returns, plus the object counts
    and each target's majority-class accuracy on the test objects (what a probe that learns nothing scores)."""
    train, train_rows = _objects(train_scenes, "probe-train", image_size, patch_size)
    test, test_rows = _objects(test_scenes, "probe-test", image_size, patch_size)
    train_features, test_features = scene_features(feature_fn, train), scene_features(feature_fn, test)
    out = {}
    for name in train_features:
        x_train = train_features[name][train_rows[:, 0], train_rows[:, 1]].numpy()
        x_test = test_features[name][test_rows[:, 0], test_rows[:, 1]].numpy()
        scaler = StandardScaler().fit(x_train)
        x_train, x_test = scaler.transform(x_train), scaler.transform(x_test)
        for column, target in enumerate(TARGETS, start=2):
            probe = LogisticRegression(max_iter=2000).fit(x_train, train_rows[:, column])
            out[f"{name}.{target}"] = round(float((probe.predict(x_test) == test_rows[:, column]).mean()), 4)
    for column, target in enumerate(TARGETS, start=2):
        counts = np.bincount(test_rows[:, column])
        out[f"majority.{target}"] = round(float(counts.max() / counts.sum()), 4)
    out["objects"] = {"train": len(train_rows), "test": len(test_rows)}
    return out


def tower_features(tower, image_mean, image_std) -> FeatureFn:
    def features(scenes):
        pixels = scene_pixels(scenes, image_mean, image_std).to(tower.device)
        return {"tower": tower(pixel_values=pixels).last_hidden_state.cpu()}

    return features


def frozen_tower_features(model, processor, scenes: list[Scene]) -> torch.Tensor:
    """A VLM's tower outputs for every scene, `[scenes, tokens, width]`, on the CPU: what the base's later stages
    cache, since their tower is frozen."""
    image_processor = processor.image_processor
    tower = tower_features(model.model.vision_tower, image_processor.image_mean, image_processor.image_std)
    return scene_features(tower, scenes)["tower"]


def vlm_features(model, processor) -> FeatureFn:
    """The VLM's tower features and the projector's outputs (what is ADDED onto the `<image>` embeddings)."""
    image_processor = processor.image_processor
    device = model.device

    def features(scenes):
        pixels = scene_pixels(scenes, image_processor.image_mean, image_processor.image_std)
        vision = model.get_vision_features(pixels.to(device, model.dtype))
        projected = model.model.projector(vision.to(model.model.projector.out.weight.dtype))
        return {"tower": vision.cpu(), "projector": projected.cpu()}

    return features
