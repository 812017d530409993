"""The demo's stand-in for a pre-trained CLIP tower: written by `vlm-rlhf pretrain-base`, shipped in
`vlm/synthetic/base/`, loaded by the tiny preset's `vision_base`.

A base folder holds the tower in Hugging Face format (`config.json`, `model.safetensors`), `card.json` (how it was
made, what its probes measure, the weights' sha256) and `README.md` (the same card, for people).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from transformers import CLIPVisionConfig, CLIPVisionModel

SHIPPED = Path(__file__).resolve().parent / "base"
CARD = "card.json"
WEIGHTS = "model.safetensors"
_SHAPE_KEYS = ("image_size", "patch_size", "hidden_size", "num_hidden_layers", "num_attention_heads")


def resolve_base(name: str) -> Path:
    """`shipped` -> the package's base; anything else is a folder."""
    return SHIPPED if name == "shipped" else Path(name)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_base(folder: Path) -> dict:
    """The card of a base folder; one line naming the file when it is not a base or its weights differ from
    what its card says."""
    config, card = folder / "config.json", folder / CARD
    if not config.is_file() or json.loads(config.read_text()).get("model_type") != "clip_vision_model":
        raise ValueError(
            f"{folder}: not a base tower (no config.json of a CLIP vision model); build one with "
            "`vlm-rlhf pretrain-base --config configs/demo/base.yaml --out DIR`"
        )
    if not card.is_file():
        raise ValueError(f"{card}: missing; a base folder is written whole by `vlm-rlhf pretrain-base`")
    facts = json.loads(card.read_text())
    recorded = facts["sha256"][WEIGHTS]
    if not (folder / WEIGHTS).is_file() or sha256(folder / WEIGHTS) != recorded:
        raise ValueError(
            f"{folder / WEIGHTS}: missing or not the weights its card.json describes (sha256 differs); "
            "rebuild the base with the command in its card"
        )
    return facts


def load_base_tower(name: str, expected: CLIPVisionConfig) -> CLIPVisionModel:
    """The frozen tower of base `name`, refused (one line) when its sizes are not the preset's."""
    folder = resolve_base(name)
    check_base(folder)
    tower = CLIPVisionModel.from_pretrained(folder)
    found = {k: getattr(tower.config, k) for k in _SHAPE_KEYS}
    wanted = {k: getattr(expected, k) for k in _SHAPE_KEYS}
    if found != wanted:
        differ = ", ".join(f"{k} {found[k]} (preset {wanted[k]})" for k in _SHAPE_KEYS if found[k] != wanted[k])
        raise ValueError(f"{folder}: the base tower's sizes are not the preset's: {differ}")
    tower.requires_grad_(False)
    return tower
