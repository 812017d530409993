"""`vlm-rlhf pretrain-base`: build the tiny preset's pre-trained tower (the demo's stand-in for CLIP) and its card.

    vlm-rlhf pretrain-base --config configs/demo/base.yaml --out runs/base

Trains the tower on freshly sampled scenes (`vlm/synthetic/tower_pretraining.py`), measures it with linear probes
(`vlm/synthetic/probes.py`) and writes the folder whole or not at all: a killed run leaves no base behind.
`vlm/synthetic/base/` is this command's output at `configs/demo/base.yaml`, shipped with the package.
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import transformers
from transformers import CLIPVisionModel
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from vlm.config_parsing import parse_config, record_config, resolved_config
from vlm.io import atomic_write_json, atomic_write_text
from vlm.synthetic.base_tower import CARD, WEIGHTS, sha256
from vlm.synthetic.presets import TowerShape
from vlm.synthetic.probes import probe_accuracies, tower_features
from vlm.synthetic.tower_pretraining import pretrain_vision_tower

logger = logging.getLogger(__name__)


@dataclass
class PretrainBaseConfig(TowerShape):
    out: str = field(default="runs/base", metadata={"help": "Folder to write the base to (must not exist)."})
    steps: int = field(default=2500, metadata={"help": "Optimizer steps of the tower pre-training."})
    batch_size: int = field(default=64, metadata={"help": "Freshly sampled scenes per step."})
    learning_rate: float = field(default=1e-3, metadata={"help": "Peak learning rate (AdamW, warm-up + cosine)."})
    seed: int = field(default=0, metadata={"help": "Seed of the weights and of the scene stream."})
    probe_train_scenes: int = field(default=2000, metadata={"help": "Scenes whose objects fit the linear probes."})
    probe_test_scenes: int = field(default=1000, metadata={"help": "Other scenes whose objects score the probes."})


def _commit(out: Path) -> str | None:
    """The checkout's commit, and which files differ from it (the output folder aside: rebuilding the shipped base
    replaces tracked files)."""
    try:
        root = Path(__file__).resolve().parents[2]
        head = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
        status = subprocess.run(["git", "-C", root, "status", "--porcelain"], capture_output=True, text=True).stdout
        own = f"{out.resolve()}"
        changed = [line[3:] for line in status.splitlines() if not f"{root / line[3:]}".startswith(own)]
        return head.stdout.strip() + (f" (uncommitted changes in {', '.join(changed)})" if changed else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def pretrain_base(cfg: PretrainBaseConfig, argv: list[str]) -> Path:
    out = Path(cfg.out)
    if out.exists():
        raise FileExistsError(f"{out} already exists; remove it or choose another --out")
    started = time.time()
    tower, report = pretrain_vision_tower(
        cfg.vision_config(),
        OPENAI_CLIP_MEAN,
        OPENAI_CLIP_STD,
        steps=cfg.steps,
        batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        seed=cfg.seed,
    )
    torch.manual_seed(cfg.seed)
    untrained = CLIPVisionModel(cfg.vision_config()).eval()  # what the probes read before any training
    with torch.no_grad():
        probes, random_probes = (
            probe_accuracies(
                tower_features(t, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD),
                cfg.image_size,
                cfg.patch_size,
                cfg.probe_train_scenes,
                cfg.probe_test_scenes,
            )
            for t in (tower, untrained)
        )
    logger.info("probes on held-out objects: %s (random tower: %s)", probes, random_probes)
    partial = out.with_name(f"{out.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    tower.save_pretrained(partial)
    cuda = torch.cuda.is_available()
    card = {
        "command": " ".join(["vlm-rlhf pretrain-base", *argv]),
        "config": resolved_config(cfg),
        "commit": _commit(out),
        "data": f"{cfg.steps * cfg.batch_size} freshly sampled scenes (stream 'tower-{cfg.seed}'), no dataset image",
        "seconds": round(time.time() - started, 1),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, {'CUDA' if cuda else 'CPU'}",
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "python": platform.python_version(),
        },
        "pretraining": report,
        "probes": probes,
        "probes_random_tower": random_probes,
        "sha256": {WEIGHTS: sha256(partial / WEIGHTS)},
    }
    atomic_write_json(partial / CARD, card, indent=1)
    atomic_write_text(partial / "README.md", model_card(card))
    partial.rename(out)  # the folder appears whole
    logger.info("saved the base to %s (%.0f s)", out, card["seconds"])
    return out


def model_card(card: dict) -> str:
    probes, report = card["probes"], card["pretraining"]
    rows = [
        f"| {label} | {100 * found[f'{key}.colour']:.1f} | {100 * found[f'{key}.shape']:.1f} | "
        f"{100 * found[f'{key}.cell']:.1f} |"
        for label, found, key in (
            ("this tower", probes, "tower"),
            ("the same tower untrained", card["probes_random_tower"], "tower"),
            ("majority class", probes, "majority"),
        )
    ]
    return "\n".join(
        [
            "# The demo's base vision tower",
            "",
            "The tiny preset's stand-in for a pre-trained CLIP tower (`vision_base: shipped` in",
            "configs/demo/model.yaml): a CLIP vision tower trained in code, each patch token supervised with the",
            "colour and shape of the object centred in it (`vlm/synthetic/tower_pretraining.py`), on freshly sampled",
            "synthetic scenes only: no image of any dataset split, no question.",
            "",
            f"- command: `{card['command']}`",
            f"- commit: {card['commit']}",
            f"- data: {card['data']}",
            f"- training: {report['steps']} steps of {report['batch_size']} scenes, lr {report['learning_rate']}, "
            f"{card['seconds']:.0f} s in all on {card['machine']}",
            f"- its heads on 1000 held-out scenes: colour {100 * report['held_out_object_colour']:.1f} %, shape "
            f"{100 * report['held_out_object_shape']:.1f} %, "
            f"empty patches {100 * report['held_out_empty_patch']:.1f} %",
            f"- sha256 of {WEIGHTS}: `{card['sha256'][WEIGHTS]}`",
            "",
            f"Linear probes (held-out accuracy, %) on the patch holding each object's centre; "
            f"{probes['objects']['train']} objects fit them, {probes['objects']['test']} others score them "
            "(`vlm/synthetic/probes.py`); the majority class is what a probe that learns nothing scores:",
            "",
            "| features | colour | shape | cell (3 x 3) |",
            "|---|---|---|---|",
            *rows,
            "",
            "Colour is linear in the pixels, so even an untrained tower gives it away; shape is what training adds.",
            "The cell is not a training target (it cost the patches their shape when it was): where an object is stays",
            "in the token's index, as in a ViT. Rebuild with the command above; the full record is card.json.",
            "",
        ]
    )


def main(argv=None) -> Path:
    argv = list(sys.argv[1:] if argv is None else argv)
    (cfg,) = parse_config((PretrainBaseConfig,), argv, prog="vlm-rlhf pretrain-base")
    out = pretrain_base(cfg, argv)
    record_config(cfg, out=out)
    return out
