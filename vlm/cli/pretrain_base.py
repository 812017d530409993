"""`vlm-rlhf pretrain-base`: build the tiny preset's base (the demo's stand-in for pre-trained CLIP + GPT-2).

    vlm-rlhf pretrain-base --config configs/demo/base.yaml --out runs/base

Up to three stages on freshly sampled scenes, never a dataset's: the tower learns each patch's object
(`vlm/synthetic/tower_pretraining.py`); then, with the tower frozen, the projector and language model learn to
describe scenes (`vlm/synthetic/description_pretraining.py`, LLaVA's stage 1); then left/right questions, first
with each object's column written out (`vlm/synthetic/comparison_pretraining.py`). Linear probes measure what the tower
and the projector carry (`vlm/synthetic/probes.py`). The folder is written whole or not at all: a killed run leaves
no base behind. `vlm/synthetic/base/` is this command's output at `configs/demo/base.yaml`, shipped with the package.
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
import transformers
from transformers import CLIPVisionModel
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from vlm.config_parsing import parse_config, record_config, resolved_config
from vlm.io import atomic_write_json, atomic_write_text
from vlm.model.builder import load_vlm, save_vlm
from vlm.synthetic.base_model import CARD, WEIGHTS, check_base, sha256
from vlm.synthetic.comparison_pretraining import pretrain_on_comparisons
from vlm.synthetic.description_pretraining import ORDERS, pretrain_on_descriptions
from vlm.synthetic.presets import TinyShape, build_tiny_vlm
from vlm.synthetic.probes import probe_accuracies, tower_features, vlm_features
from vlm.synthetic.tower_pretraining import pretrain_vision_tower

logger = logging.getLogger(__name__)


@dataclass
class PretrainBaseConfig(TinyShape):
    out: str = field(default="runs/base", metadata={"help": "Folder to write the base to (must not exist)."})
    steps: int = field(default=2500, metadata={"help": "Optimizer steps of the tower pre-training."})
    batch_size: int = field(default=64, metadata={"help": "Freshly sampled scenes per step."})
    learning_rate: float = field(default=1e-3, metadata={"help": "Peak learning rate (AdamW, warm-up + cosine)."})
    describe_steps: int = field(
        default=2000,
        metadata={"help": "Optimizer steps of the projector + language model on scene descriptions (0: none)."},
    )
    describe_scenes: int = field(
        default=30000, metadata={"help": "Scenes in the description stage's pool (tower features computed once)."}
    )
    describe_batch_size: int = field(default=64, metadata={"help": "Descriptions per step."})
    describe_learning_rate: float = field(default=1e-3, metadata={"help": "Peak learning rate of that stage."})
    describe_order: str = field(
        default="random",
        metadata={
            "help": "Order of the objects in each description: random (finding each object's place takes matching "
            "its colour and shape) or left-to-right.",
            "choices": list(ORDERS),
        },
    )
    compare_left_steps: int = field(
        default=0,
        metadata={
            "help": "Comparison stage: steps of left/right questions asking 'left' only, columns written (0 with "
            "the three below: no comparison stage)."
        },
    )
    compare_both_steps: int = field(
        default=0, metadata={"help": "Then 'left' and 'right', columns written, for at least this many steps."}
    )
    compare_max_both_steps: int = field(
        default=0,
        metadata={
            "help": "... and on, up to this many, until both columns are written right on compare_columns_found "
            "of the stage's held-out questions (checked every 250 steps)."
        },
    )
    compare_columns_found: float = field(
        default=0.8, metadata={"help": "The share of held-out questions with both columns right that starts the ramp."}
    )
    compare_ramp_steps: int = field(
        default=0, metadata={"help": "Then steps over which the share of plainly asked batches rises from 0 to 1."}
    )
    compare_plain_steps: int = field(default=0, metadata={"help": "Then plain questions only."})
    compare_scenes: int = field(default=20000, metadata={"help": "Scenes in the comparison stage's pool."})
    compare_batch_size: int = field(
        default=64, metadata={"help": "Rows per step of that stage, descriptions included."}
    )
    compare_learning_rate: float = field(
        default=1e-3, metadata={"help": "Its learning rate (AdamW, 50 warm-up steps, then constant)."}
    )
    compare_describe_share: float = field(
        default=0.5,
        metadata={
            "help": "Share of each of its batches that goes on describing the same scenes, so the base keeps "
            "its descriptions."
        },
    )
    compare_seed: int | None = field(
        default=None, metadata={"help": "The comparison stage's seed (its scenes and dropout draws); default: seed."}
    )
    continue_from: str | None = field(
        default=None,
        metadata={
            "help": "A base built with this config's tower and description settings: taken as it is, and only "
            "the comparison stage runs (the build is deterministic on one thread, so the result is the whole "
            "command's in half the time); the card records it."
        },
    )
    probe_train_scenes: int = field(default=2000, metadata={"help": "Scenes whose objects fit the linear probes."})
    probe_test_scenes: int = field(default=1000, metadata={"help": "Other scenes whose objects score the probes."})


def compare_seed(cfg: PretrainBaseConfig) -> int:
    return cfg.seed if cfg.compare_seed is None else cfg.compare_seed


def compare_steps(cfg: PretrainBaseConfig) -> int:
    return cfg.compare_left_steps + cfg.compare_both_steps + cfg.compare_ramp_steps + cfg.compare_plain_steps


# what the tower and description stages depend on: a base to continue from must have been built with the same
_EARLIER_STAGES = tuple(f.name for f in fields(TinyShape)) + ("steps", "batch_size", "learning_rate")


def _earlier_stages(cfg: PretrainBaseConfig):
    """The tower and description stages: trained here, or taken from `continue_from` when its card says they were
    trained as this config asks. Returns the model, its processor and the card's entries for them."""
    if cfg.continue_from:
        folder = Path(cfg.continue_from)
        earlier = check_base(folder)
        keys = _EARLIER_STAGES + tuple(k for k in earlier["config"] if k.startswith("describe_"))
        differ = [
            f"{k} {earlier['config'].get(k)} (asked {getattr(cfg, k)})"
            for k in keys
            if earlier["config"].get(k) != getattr(cfg, k)
        ]
        if differ:
            raise ValueError(f"{folder / CARD}: built with other tower or description settings: {', '.join(differ)}")
        if earlier.get("comparison_pretraining"):
            raise ValueError(
                f"{folder / CARD}: this base has had its comparison stage already; continue from one built with the "
                "compare_* steps at 0"
            )
        model, processor = load_vlm(folder)
        entries = {k: earlier[k] for k in ("tower_pretraining", "description_pretraining", "probes_random_tower")}
        entries["continued_from"] = {k: earlier[k] for k in ("command", "commit", "seconds", "machine")}
        entries["continued_from"]["sha256"] = earlier["sha256"][WEIGHTS]
        return model, processor, entries
    tower, tower_report = pretrain_vision_tower(
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
    random_probes = _probe(tower_features(untrained, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD), cfg)
    model, processor = build_tiny_vlm(cfg, vision_tower=tower)
    describe_report = None
    if cfg.describe_steps:
        describe_report = pretrain_on_descriptions(
            model,
            processor,
            cfg.describe_steps,
            pool_scenes=cfg.describe_scenes,
            batch_size=cfg.describe_batch_size,
            learning_rate=cfg.describe_learning_rate,
            seed=cfg.seed,
            order=cfg.describe_order,
        )
    entries = {"tower_pretraining": tower_report, "description_pretraining": describe_report}
    return model, processor, {**entries, "probes_random_tower": random_probes}


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


def _probe(feature_fn, cfg: PretrainBaseConfig) -> dict:
    return probe_accuracies(feature_fn, cfg.image_size, cfg.patch_size, cfg.probe_train_scenes, cfg.probe_test_scenes)


def pretrain_base(cfg: PretrainBaseConfig, argv: list[str]) -> Path:
    out = Path(cfg.out)
    if out.exists():
        raise FileExistsError(f"{out} already exists; remove it or choose another --out")
    started = time.time()
    model, processor, earlier = _earlier_stages(cfg)
    compare_report = None
    if compare_steps(cfg):
        compare_report = pretrain_on_comparisons(
            model,
            processor,
            cfg.compare_left_steps,
            cfg.compare_both_steps,
            cfg.compare_ramp_steps,
            cfg.compare_plain_steps,
            max_both_steps=cfg.compare_max_both_steps,
            columns_found=cfg.compare_columns_found,
            pool_scenes=cfg.compare_scenes,
            batch_size=cfg.compare_batch_size,
            learning_rate=cfg.compare_learning_rate,
            describe_share=cfg.compare_describe_share,
            seed=compare_seed(cfg),
        )
    probes = _probe(vlm_features(model, processor), cfg)
    logger.info("probes on held-out objects: %s (random tower: %s)", probes, earlier["probes_random_tower"])
    partial = out.with_name(f"{out.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    save_vlm(model.cpu(), processor, partial)
    cuda = torch.cuda.is_available()
    scenes = f"{cfg.steps * cfg.batch_size} freshly sampled scenes (stream 'tower-{cfg.seed}') for the tower"
    if earlier["description_pretraining"]:
        scenes += f", {cfg.describe_scenes} others (stream 'describe-{cfg.seed}') for the descriptions"
    if compare_report:
        scenes += f", {cfg.compare_scenes} others (stream 'compare-{compare_seed(cfg)}') for left/right questions"
    questions = "left/right questions on the base's own scenes" if compare_report else "no question"
    card = {
        "command": " ".join(["vlm-rlhf pretrain-base", *argv]),
        "config": resolved_config(cfg),
        "commit": _commit(out),
        "data": f"{scenes}; no dataset image, {questions}",
        "seconds": round(time.time() - started + earlier.get("continued_from", {}).get("seconds", 0), 1),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, {'CUDA' if cuda else 'CPU'}",
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "python": platform.python_version(),
        },
        **earlier,
        "comparison_pretraining": compare_report,
        "probes": probes,
        "sha256": {WEIGHTS: sha256(partial / WEIGHTS)},
    }
    atomic_write_json(partial / CARD, card, indent=1)
    atomic_write_text(partial / "README.md", model_card(card))
    partial.rename(out)  # the folder appears whole
    logger.info("saved the base to %s (%.0f s)", out, card["seconds"])
    return out


def _probe_row(label: str, found: dict, key: str) -> str:
    cells = " | ".join(f"{100 * found[f'{key}.{target}']:.1f}" for target in ("colour", "shape", "cell"))
    return f"| {label} | {cells} |"


def model_card(card: dict) -> str:
    probes, tower, describing = card["probes"], card["tower_pretraining"], card["description_pretraining"]
    if describing:
        language = [
            f"- language side: {describing['steps']} steps of {describing['batch_size']} descriptions (objects in "
            f"{describing['order']} order) from a pool of {describing['pool_scenes']} scenes, lr "
            f"{describing['learning_rate']}, {describing['seconds']:.0f} s; "
            f"loss {describing['loss_curve'][0]['loss']} -> {describing['loss_curve'][-1]['loss']}; on "
            f"{describing['held_out_scenes']} held-out scenes {100 * describing['held_out_token_accuracy']:.1f} % of "
            f"the description tokens right (teacher-forced), "
            f"{100 * describing['held_out_whole_descriptions']:.1f} % of the descriptions whole",
        ]
    else:
        language = ["- language side: random (describe_steps 0)"]
    comparing = card.get("comparison_pretraining")
    if comparing:
        curve = ", ".join(f"{p['plain']:.2f}" for p in comparing["held_out_curve"])
        language.append(
            f"- left/right (the one VQA question family the base is taught, on its own scenes): "
            f"{comparing['left_steps']} steps asking 'left' only with each object's column written, "
            f"{comparing['both_steps']} with both relation words, {comparing['ramp_steps']} dropping the columns, "
            f"{comparing['plain_steps']} plain; {100 * comparing['describe_share']:.0f} % of each batch of "
            f"{comparing['batch_size']} goes on describing; {comparing['seconds']:.0f} s; on "
            f"{comparing['held_out_scenes']} held-out scenes: plain questions "
            f"{100 * comparing['held_out_plain_accuracy']:.1f} % (chance 50; every 250 steps: {curve}), with the "
            f"columns written {100 * comparing['held_out_written_accuracy']:.1f} %, both columns written right "
            f"{100 * comparing['held_out_both_columns_right']:.1f} %"
        )
    return "\n".join(
        [
            "# The demo's base: a stand-in for pre-trained CLIP + GPT-2",
            "",
            "The tiny preset's starting point (`base: shipped` in configs/demo/model.yaml), trained in code on freshly "
            "sampled synthetic scenes only: no image of any dataset split, "
            + ("and one VQA question family, left/right, asked about its own scenes." if comparing else "no question.")
            + " First the CLIP vision tower, each patch token supervised with the colour and shape of the object "
            "centred in it (`vlm/synthetic/tower_pretraining.py`); then, with the tower frozen, the projector and the "
            "GPT-2 learn to describe scenes (`vlm/synthetic/description_pretraining.py`, LLaVA's stage 1)"
            + (
                "; then they learn left/right questions through each object's written-out column, which a random "
                "language model does not find from plain questions (`vlm/synthetic/comparison_pretraining.py`). "
                "SFT's left/right figure from this base measures what SFT keeps and sharpens, not what it finds."
                if comparing
                else "."
            ),
            "",
            f"- command: `{card['command']}`",
            f"- commit: {card['commit']}",
            f"- data: {card['data']}",
            f"- {card['seconds']:.0f} s in all on {card['machine']}",
            *_continued(card),
            f"- tower: {tower['steps']} steps of {tower['batch_size']} scenes, lr {tower['learning_rate']}; its heads "
            f"on 1000 held-out scenes: colour {100 * tower['held_out_object_colour']:.1f} %, shape "
            f"{100 * tower['held_out_object_shape']:.1f} %, empty patches {100 * tower['held_out_empty_patch']:.1f} %",
            *language,
            f"- sha256 of {WEIGHTS}: `{card['sha256'][WEIGHTS]}`",
            "",
            f"Linear probes (held-out accuracy, %) on the token of the patch holding each object's centre; "
            f"{probes['objects']['train']} objects fit them, {probes['objects']['test']} others score them "
            "(`vlm/synthetic/probes.py`); the majority class is what a probe that learns nothing scores:",
            "",
            "| features | colour | shape | cell (3 x 3) |",
            "|---|---|---|---|",
            _probe_row("the tower", probes, "tower"),
            _probe_row("the projector's output", probes, "projector"),
            _probe_row("the same tower untrained", card["probes_random_tower"], "tower"),
            _probe_row("majority class", probes, "majority"),
            "",
            "Colour is linear in the pixels, so even an untrained tower gives it away; shape is what training adds.",
            "The cell is not a training target (it cost the patches their shape when it was): where an object is stays",
            "in the token's index, as in a ViT. Rebuild with the command above; the full record is card.json.",
            "",
        ]
    )


def _continued(card: dict) -> list[str]:
    earlier = card.get("continued_from")
    if not earlier:
        return []
    return [
        f"- the tower and description stages are those of an earlier build with the same settings, "
        f"`{earlier['command']}` (commit {earlier['commit']}, {earlier['seconds']:.0f} s on {earlier['machine']}, "
        f"sha256 `{earlier['sha256']}`): this command continued from it (`continue_from`) and ran the comparison "
        "stage; the seconds above include both"
    ]


def main(argv=None) -> Path:
    argv = list(sys.argv[1:] if argv is None else argv)
    (cfg,) = parse_config((PretrainBaseConfig,), argv, prog="vlm-rlhf pretrain-base")
    out = pretrain_base(cfg, argv)
    record_config(cfg, out=out)
    return out
