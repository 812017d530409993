"""`vlm-rlhf pipeline`: run every stage that exists, in order, each handing over through files.

Today: synthesise the data, build the initial model, and show a few of its answers with their VQA accuracy.
Each step is skipped when its output is already complete, so an interrupted pipeline resumes where it stopped.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from vlm.builder import is_vlm_checkpoint, load_vlm
from vlm.commands.init_model import InitModelConfig, init_model
from vlm.config_parsing import parse_config
from vlm.data.images import load_image
from vlm.data.synthetic import SPLITS, SynthConfig, write_synthetic_dataset
from vlm.data.vqa import load_vqa
from vlm.generation import generate_answers
from vlm.io import atomic_write_json
from vlm.metrics import vqa_accuracy
from vlm.presets import TinyPreset

logger = logging.getLogger(__name__)


@dataclass
class PipelineConfig:
    output_dir: str = field(default="runs/demo", metadata={"help": "Every stage writes under this folder."})
    data_config: str = field(default="configs/demo/data.yaml", metadata={"help": "`data synth` config."})
    model_config: str = field(default="configs/demo/model.yaml", metadata={"help": "`init-model` config."})
    examples: int = field(default=8, metadata={"help": "Validation questions answered by the initial model."})
    max_new_tokens: int = field(default=8, metadata={"help": "Answer length limit for the examples."})


def _stage_config(types, path: str, out: Path):
    return parse_config(types, ["--config", path, "--out", str(out)])


def run_pipeline(cfg: PipelineConfig) -> dict:
    root = Path(cfg.output_dir)
    started = time.time()

    (synth,) = _stage_config((SynthConfig,), cfg.data_config, root / "data")
    data_dir = write_synthetic_dataset(synth)

    model_dir = root / "models" / "init"
    if not is_vlm_checkpoint(model_dir):
        model_cfg, preset = _stage_config((InitModelConfig, TinyPreset), cfg.model_config, model_dir)
        init_model(model_cfg, preset)

    model, processor = load_vlm(model_dir)
    model.eval()
    val = load_vqa(data_dir, SPLITS["val"], limit=cfg.examples)
    images = [load_image(p, f"question_id {q}") for p, q in zip(val["image_path"], val["question_id"])]
    answers = generate_answers(model, processor, images, val["question"], max_new_tokens=cfg.max_new_tokens)
    rows = [
        {
            "question_id": r["question_id"],
            "question": r["question"],
            "human_answer": r["multiple_choice_answer"],
            "model_answer": a,
            "vqa_accuracy": round(vqa_accuracy(a, r["answers"]), 3),
        }
        for r, a in zip(val, answers)
    ]
    summary = {
        "data": str(data_dir),
        "model": str(model_dir),
        "examples": rows,
        "mean_vqa_accuracy": sum(r["vqa_accuracy"] for r in rows) / max(1, len(rows)),
        "seconds": round(time.time() - started, 1),
    }
    atomic_write_json(root / "pipeline.json", summary, indent=2)
    return summary


def format_examples(rows: list[dict]) -> str:
    header = ("question", "human answer", "model answer", "VQA acc")
    table = [header] + [
        (r["question"], r["human_answer"], repr(r["model_answer"]), f"{r['vqa_accuracy']:.2f}") for r in rows
    ]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    lines = [" | ".join(str(c).ljust(w) for c, w in zip(row, widths)) for row in table]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv=None) -> dict:
    (cfg,) = parse_config((PipelineConfig,), argv, prog="vlm-rlhf pipeline")
    return run_pipeline(cfg)
