"""Synthetic scenes of coloured shapes: sampling (pure data) and rendering (PIL).

A scene holds 1-4 objects, each a unique (colour, shape) pair, so every question about "the red circle" has one
referent. Colours are jittered and sizes vary, so the vision side has to look, not match pixels.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from vlm.data.errors import DataError, read_json

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "green": (40, 165, 60),
    "blue": (45, 85, 215),
    "yellow": (230, 205, 40),
    "purple": (140, 60, 180),
    "orange": (240, 135, 30),
}
SHAPES = ("circle", "square", "triangle", "cross")
MAX_OBJECTS = 4


@dataclass(frozen=True)
class SceneObject:
    color: str
    shape: str
    x: int  # centre, pixels
    y: int
    size: int  # side of the bounding square, pixels
    rgb: tuple[int, int, int]

    @property
    def name(self) -> str:
        return f"{self.color} {self.shape}"


@dataclass(frozen=True)
class Scene:
    objects: tuple[SceneObject, ...]
    image_size: int
    background: tuple[int, int, int]


def sample_scene(rng: random.Random, image_size: int = 64) -> Scene:
    """Sample 1-4 non-overlapping objects with distinct (colour, shape) pairs."""
    n = rng.randint(1, MAX_OBJECTS)
    lo, hi = max(8, image_size // 6), max(10, image_size // 3)
    objects: list[SceneObject] = []
    used: set[tuple[str, str]] = set()
    while len(objects) < n:
        color, shape = rng.choice(list(COLORS)), rng.choice(SHAPES)
        if (color, shape) in used:
            continue
        size = rng.randint(lo, hi)
        for _ in range(100):  # rejection-sample a free spot; give up on this object after 100 tries
            x = rng.randint(size // 2 + 1, image_size - size // 2 - 2)
            y = rng.randint(size // 2 + 1, image_size - size // 2 - 2)
            if all(max(abs(x - o.x), abs(y - o.y)) > (size + o.size) // 2 + 1 for o in objects):
                break
        else:
            n -= 1
            continue
        rgb = tuple(min(255, max(0, c + rng.randint(-20, 20))) for c in COLORS[color])
        objects.append(SceneObject(color, shape, x, y, size, rgb))
        used.add((color, shape))
    background = tuple(rng.randint(200, 250) for _ in range(3))
    return Scene(tuple(objects), image_size, background)


def render_scene(scene: Scene) -> Image.Image:
    image = Image.new("RGB", (scene.image_size, scene.image_size), scene.background)
    draw = ImageDraw.Draw(image)
    for o in scene.objects:
        h = o.size // 2
        box = (o.x - h, o.y - h, o.x + h, o.y + h)
        if o.shape == "circle":
            draw.ellipse(box, fill=o.rgb)
        elif o.shape == "square":
            draw.rectangle(box, fill=o.rgb)
        elif o.shape == "triangle":
            draw.polygon([(o.x, o.y - h), (o.x - h, o.y + h), (o.x + h, o.y + h)], fill=o.rgb)
        elif o.shape == "cross":
            t = max(1, o.size // 6)
            draw.rectangle((o.x - h, o.y - t, o.x + h, o.y + t), fill=o.rgb)
            draw.rectangle((o.x - t, o.y - h, o.x + t, o.y + h), fill=o.rgb)
        else:  # pragma: no cover - SHAPES is closed
            raise ValueError(f"unknown shape {o.shape!r}")
    return image


def scenes_file(root: str | Path, split: str) -> Path:
    return Path(root) / f"scenes_{split}.json"


def scene_record(scene: Scene, image_id: int, image: str) -> dict:
    """One image's ground truth as written next to the VQA files: `{image_id, image, image_size, background,
    objects: [{color, shape, x, y, size, rgb}]}`."""
    return {"image_id": image_id, "image": image, **asdict(scene)}


def load_scenes(root: str | Path, split: str) -> dict[int, Scene]:
    """`image_id -> Scene` from `scenes_<split>.json` (written by `data synth`)."""
    path = scenes_file(root, split)
    if not path.is_file():
        raise DataError(f"{path}: no scene ground truth; it is written by `vlm-rlhf data synth` (regenerate the data)")
    scenes = {}
    for i, r in enumerate(read_json(path)):
        try:
            objects = tuple(SceneObject(**{**o, "rgb": tuple(o["rgb"])}) for o in r["objects"])
            scenes[int(r["image_id"])] = Scene(objects, int(r["image_size"]), tuple(r["background"]))
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"{path}: record [{i}] is not a scene ({e})") from None
    return scenes
