"""`vlm-rlhf reward score --model RM --answers answers.jsonl [--out scored.jsonl]`: the reward model's verdict on
every answer record, added as `reward` (the logit), `p_correct` (its sigmoid) and `reward_model` (the checkpoint).
`label push` turns those into pre-annotations. Without `--out` the answers file is rewritten in place, atomically.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from vlm.config_parsing import parse_config
from vlm.labels.answers import read_answers, write_answers
from vlm.model.reward_scoring import load_reward_model, score_records


@dataclass
class ScoreConfig:
    model: str | None = field(default=None, metadata={"help": "Reward model checkpoint (`reward train`'s output)."})
    answers: str | None = field(default=None, metadata={"help": "answers.jsonl to score."})
    out: str | None = field(default=None, metadata={"help": "Where to write (default: rewrite --answers)."})
    batch_size: int = field(default=32, metadata={"help": "Answers scored per reward-model forward."})


def score(cfg: ScoreConfig) -> dict:
    if not cfg.model or not cfg.answers:
        raise ValueError("reward score needs --model REWARD_MODEL and --answers answers.jsonl")
    records = read_answers(cfg.answers)
    model, processor = load_reward_model(cfg.model, "--model")
    score_records(model, processor, records, str(Path(cfg.model).resolve()), cfg.batch_size, cfg.answers)
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
