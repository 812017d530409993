"""The demo's stand-in for pre-trained CLIP + GPT-2: written by `vlm-rlhf pretrain-base`, shipped in
`vlm/synthetic/base/`, loaded by the tiny preset's `base`.

A base folder is a VLM checkpoint (the tower pre-trained on the scenes' ground truth, the projector and language
model pre-trained on scene descriptions, the tokenizer and image processor) plus `card.json` (how it was made, what
its probes measure, the weights' sha256) and `README.md` (the same card, for people).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from vlm.model.builder import is_vlm_checkpoint, load_vlm

SHIPPED = Path(__file__).resolve().parent / "base"
CARD = "card.json"
WEIGHTS = "model.safetensors"
_VISION_SIZES = ("image_size", "patch_size", "hidden_size", "num_hidden_layers", "num_attention_heads")
_FREEZE_FLAGS = ("freeze_vision", "freeze_projector", "freeze_language_model")


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
    if not is_vlm_checkpoint(folder):
        raise ValueError(
            f"{folder}: not a base (no config.json of a vlm-rlhf model); build one with "
            "`vlm-rlhf pretrain-base --config configs/demo/base.yaml --out DIR`"
        )
    card = folder / CARD
    if not card.is_file():
        raise ValueError(f"{card}: missing; a base folder is written whole by `vlm-rlhf pretrain-base`")
    facts = json.loads(card.read_text())
    if not (folder / WEIGHTS).is_file() or sha256(folder / WEIGHTS) != facts["sha256"][WEIGHTS]:
        raise ValueError(
            f"{folder / WEIGHTS}: missing or not the weights its card.json describes (sha256 differs); "
            "rebuild the base with the command in its card"
        )
    return facts


def _size_mismatch(config, vision_config, text_sizes: dict) -> str:
    """What differs between a VLM config and the wanted tower config / GPT-2 sizes; empty when nothing does."""
    differ = [
        f"vision {k} {getattr(config.vision_config, k)} (preset {getattr(vision_config, k)})"
        for k in _VISION_SIZES
        if getattr(config.vision_config, k) != getattr(vision_config, k)
    ]
    differ += [
        f"text {k} {getattr(config.text_config, k)} (preset {v})"
        for k, v in text_sizes.items()
        if getattr(config.text_config, k) != v
    ]
    return ", ".join(differ)


def load_base(name: str, vision_config, text_sizes: dict, **config_kwargs):
    """The base VLM and its processor, refused (one line) when its sizes are not the preset's. `config_kwargs`:
    the freeze flags to train it with (and `projector_num_heads`, which must be the base's)."""
    folder = resolve_base(name)
    check_base(folder)
    model, processor = load_vlm(folder)
    differ = _size_mismatch(model.config, vision_config, text_sizes)
    heads = config_kwargs.pop("projector_num_heads", model.config.projector_num_heads)
    if heads != model.config.projector_num_heads:
        differ += f"{', ' if differ else ''}projector_num_heads {model.config.projector_num_heads} (asked {heads})"
    if differ:
        raise ValueError(f"{folder}: the base's sizes are not the preset's: {differ}")
    unknown = set(config_kwargs) - set(_FREEZE_FLAGS)
    assert not unknown, f"a base takes only the freeze flags, not {sorted(unknown)}"
    for flag, value in config_kwargs.items():
        setattr(model.config, flag, value)
    model.apply_freezing()
    return model, processor
