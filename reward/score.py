"""`vlm-rlhf reward score --model RM --answers answers.jsonl [--out scored.jsonl]`: the reward model's verdict on
every answer record, added as `reward` (the logit), `p_correct` (its sigmoid) and `reward_model` (the checkpoint).
`label push` turns those into pre-annotations. Without `--out` the answers file is rewritten in place, atomically.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import AutoProcessor

from vlm.answers import read_answers, write_answers
from vlm.builder import is_vlm_checkpoint
from vlm.config_parsing import parse_config
from vlm.data.images import load_image
from vlm.modeling_vlm import VLMForSequenceClassification
from vlm.precision import bf16_available
from vlm.reward_scoring import score_answers


@dataclass
class ScoreConfig:
    model: str | None = field(default=None, metadata={"help": "Reward model checkpoint (`reward train`'s output)."})
    answers: str | None = field(default=None, metadata={"help": "answers.jsonl to score."})
    out: str | None = field(default=None, metadata={"help": "Where to write (default: rewrite --answers)."})
    batch_size: int = field(default=32)


def load_reward_model(path: str | Path):
    if not is_vlm_checkpoint(path):
        raise ValueError(f"{path} is not a vlm-rlhf checkpoint (no config.json with model_type 'vlm_rlhf')")
    architectures = json.loads((Path(path) / "config.json").read_text()).get("architectures") or []
    if "VLMForSequenceClassification" not in architectures:
        raise ValueError(
            f"{path} is a {', '.join(architectures) or 'VLM'} checkpoint, not a reward model "
            "(`vlm-rlhf reward train` writes one); scoring with an untrained head would mean nothing"
        )
    model = VLMForSequenceClassification.from_pretrained(path, dtype=torch.bfloat16 if bf16_available() else None)
    if model.config.num_labels != 1:
        raise ValueError(f"{path} has {model.config.num_labels} outputs; a reward model has one")
    model.to("cuda" if torch.cuda.is_available() else "cpu").eval()
    return model, AutoProcessor.from_pretrained(path)


def score(cfg: ScoreConfig) -> dict:
    if not cfg.model or not cfg.answers:
        raise ValueError("reward score needs --model REWARD_MODEL and --answers answers.jsonl")
    records = read_answers(cfg.answers)
    model, processor = load_reward_model(cfg.model)
    name = str(Path(cfg.model).resolve())
    for start in tqdm(range(0, len(records), cfg.batch_size), desc="scoring", unit="batch", leave=False):
        batch = records[start : start + cfg.batch_size]
        images = [load_image(r["image"], f"{cfg.answers}: answer {r['answer_id']}") for r in batch]
        logits = score_answers(model, processor, images, [r["question"] for r in batch], [r["answer"] for r in batch])
        for record, logit in zip(batch, logits.tolist()):
            record.update(reward=logit, p_correct=float(torch.sigmoid(torch.tensor(logit))), reward_model=name)
    out = write_answers(cfg.out or cfg.answers, records)
    rewards = [r["reward"] for r in records]
    return {
        "answers": len(records),
        "mean_reward": sum(rewards) / len(rewards) if rewards else None,
        "predicted_correct": sum(r["p_correct"] >= 0.5 for r in records),
        "out": str(out),
    }


def main(argv=None) -> dict:
    (cfg,) = parse_config((ScoreConfig,), argv, prog="vlm-rlhf reward score")
    return score(cfg)
