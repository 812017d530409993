"""`vlm-rlhf probe --model CKPT`: what a checkpoint's vision side carries, object by object (linear probes).

    vlm-rlhf probe --model runs/demo/models/sft --out runs/demo/eval/probes.json

Linear probes (`vlm/synthetic/probes.py`) on the tower's patch features and on the projector's outputs (what is
ADDED onto the `<image>` embeddings) read each object's colour, shape and 3 x 3 cell on freshly sampled scenes.
Near-perfect probes beside a weak VQA accuracy put the limit on the language side.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from vlm.config_parsing import parse_config
from vlm.io import atomic_write_json
from vlm.model.builder import check_checkpoint, load_vlm
from vlm.synthetic.probes import TARGETS, probe_accuracies, vlm_features

logger = logging.getLogger(__name__)


@dataclass
class ProbeConfig:
    model: str | None = field(default=None, metadata={"help": "Policy checkpoint whose vision side is probed."})
    out: str | None = field(default=None, metadata={"help": "Also write the figures to this JSON file."})
    train_scenes: int = field(default=2000, metadata={"help": "Scenes whose objects fit the probes."})
    test_scenes: int = field(default=1000, metadata={"help": "Other scenes whose objects score them."})


def probe(cfg: ProbeConfig) -> dict:
    if not cfg.model:
        raise ValueError("probe needs --model CHECKPOINT")
    check_checkpoint(cfg.model, "policy", "--model")
    model, processor = load_vlm(cfg.model)
    model.eval()
    vision = model.config.vision_config
    figures = probe_accuracies(
        vlm_features(model, processor), vision.image_size, vision.patch_size, cfg.train_scenes, cfg.test_scenes
    )
    if cfg.out:
        atomic_write_json(cfg.out, {"model": cfg.model, **figures}, indent=1)
    return figures


def format_probes(figures: dict) -> str:
    rows = [
        f"{name:<10}" + "".join(f"{100 * figures[f'{name}.{t}']:>9.1f}" for t in TARGETS)
        for name in ("tower", "projector", "majority")
    ]
    head = f"{'held-out':<10}" + "".join(f"{t:>9}" for t in TARGETS)
    return "\n".join([f"linear probes on {figures['objects']['test']} held-out objects (%):", head, *rows])


def main(argv=None) -> dict:
    (cfg,) = parse_config((ProbeConfig,), argv, prog="vlm-rlhf probe")
    return probe(cfg)
