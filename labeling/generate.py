"""`vlm-rlhf label generate --model CKPT --data DIR --split train2014 --questions N --samples K --out answers.jsonl`.

The policy answers N questions (drawn with `seed`) K times each by sampling, so annotators see right and wrong
answers; identical answers to one question are merged (`count` says how many samples gave it). Empty answers
are dropped: there is nothing to judge. Records are described in `vlm.labels.answers`. An existing `--out` is
refused (it may be pushed and labelled already) unless `--overwrite true`, which also removes its stale gold key.
"""

from __future__ import annotations

import logging
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from labeling.selection import STRATEGIES, UNITS, select_answers
from vlm.data.vqa import load_vqa
from vlm.eval.vqa import GenerationSettings, predict
from vlm.labels.answers import answer_id, write_answers
from vlm.labels.gold import gold_key_path
from vlm.labels.store import LabelStore
from vlm.model.builder import check_checkpoint, load_vlm
from vlm.model.reward_scoring import load_reward_model, score_records
from vlm.training.feature_bank import image_key
from vlm.training.precision import bf16_available

logger = logging.getLogger(__name__)

SAMPLING_FIELDS = ("do_sample", "temperature", "top_p", "num_beams", "max_new_tokens")


@dataclass
class GenerateConfig(GenerationSettings):
    do_sample: bool = field(
        default=True, metadata={"help": "Sample the answers (so annotators see right and wrong ones); false: greedy."}
    )
    model: str | None = field(default=None, metadata={"help": "Policy checkpoint that answers."})
    data: str | None = field(default=None, metadata={"help": "VQA v2 folder."})
    split: str = field(default="train2014", metadata={"help": "VQA split the questions come from."})
    image_dir: str | None = field(default=None, metadata={"help": "Image folder (default: <data>/<split>)."})
    questions: int = field(default=100, metadata={"help": "Questions to answer (drawn at random with seed)."})
    samples: int = field(default=4, metadata={"help": "Sampled answers per question (duplicates merged)."})
    out: str = field(default="answers.jsonl", metadata={"help": "Where the answer records are written."})
    overwrite: bool = field(
        default=False,
        metadata={
            "help": "Replace an existing --out (answers written before, maybe pushed and labelled) and remove "
            "its gold key <out>.gold.jsonl, which belongs to the answers replaced; false: refuse."
        },
    )
    seed: int = field(
        default=0, metadata={"help": "Seed of the question draw, the answer sampling and the --select choice."}
    )
    select: str | None = field(
        default=None,
        metadata={
            "help": "Keep only --budget answers of the pool: random, uncertainty (RM P(correct) nearest 0.5) or "
            "disagreement (questions whose samples disagree most).",
            "choices": list(STRATEGIES),
        },
    )
    select_by: str = field(
        default="question",
        metadata={
            "help": "--select chooses whole questions (every distinct sampled answer of each) or single answers.",
            "choices": list(UNITS),
        },
    )
    budget: int | None = field(default=None, metadata={"help": "Answers to label, chosen by --select."})
    pool: int | None = field(
        default=None, metadata={"help": "Questions answered to choose from (default: --questions)."}
    )
    random_fraction: float = field(
        default=0.1, metadata={"help": "Also keep this share of the budget as a random slice (unbiased evaluation)."}
    )
    skip_labelled: str | None = field(
        default=None, metadata={"help": "Label store: answers it already holds labels for are not chosen again."}
    )
    reward_model: str | None = field(
        default=None,
        metadata={"help": "Score the answers with this RM: P(correct) becomes the annotators' pre-annotation."},
    )


def generate(cfg: GenerateConfig) -> dict:
    if not cfg.model or not cfg.data:
        raise ValueError("label generate needs --model CHECKPOINT and --data VQA_FOLDER")
    check_checkpoint(cfg.model, "policy", "--model")
    if cfg.reward_model:  # checked now, not after sampling every answer
        check_checkpoint(cfg.reward_model, "reward model", "--reward_model")
    if Path(cfg.out).exists() and not cfg.overwrite:  # checked before an hour of sampling, not after
        raise FileExistsError(
            f"{cfg.out} already exists (answers written before, maybe pushed and labelled): pass --overwrite true to "
            f"replace it (its gold key {gold_key_path(cfg.out).name} is removed too), or choose another --out"
        )
    if cfg.questions < 1 or cfg.samples < 1:
        raise ValueError(f"--questions and --samples must be at least 1 (got {cfg.questions}, {cfg.samples})")
    if cfg.select and not cfg.budget:
        raise ValueError("--select needs --budget N (the answers to label)")
    if cfg.select == "uncertainty" and not cfg.reward_model:
        raise ValueError("--select uncertainty needs --reward_model RM (its P(correct) is what is uncertain)")
    if cfg.pool:
        cfg.questions = cfg.pool
    questions = load_vqa(cfg.data, cfg.split, cfg.image_dir)
    picked = sorted(random.Random(cfg.seed).sample(range(len(questions)), min(cfg.questions, len(questions))))
    questions = questions.select(picked)
    repeated = questions.select([i for i in range(len(questions)) for _ in range(cfg.samples)])

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, processor = load_vlm(cfg.model, dtype=torch.bfloat16 if bf16_available() else None)
    model.to(device).eval()
    torch.manual_seed(cfg.seed)
    predictions = predict(model, processor, repeated, cfg, desc="sampling answers")

    model_name = str(Path(cfg.model).resolve())
    sampling = {k: v for k, v in asdict(cfg).items() if k in SAMPLING_FIELDS} | {"seed": cfg.seed}
    by_question = {row["question_id"]: row for row in questions}
    digests: dict[str, str] = {}
    records: dict[str, dict] = {}
    empty = 0
    for p in predictions:
        text = p["answer"].strip()
        if not text:
            empty += 1
            continue
        q = by_question[p["question_id"]]
        if q["image_path"] not in digests:  # hash each image once, not once per sample
            digests[q["image_path"]] = image_key(q["image_path"])
        digest = digests[q["image_path"]]
        key = answer_id(digest, q["question"], text, model_name)
        if key in records:
            records[key]["count"] += 1
            continue
        records[key] = {
            "answer_id": key,
            "image": str(Path(q["image_path"]).resolve()),
            "image_id": q["image_id"],
            "question_id": q["question_id"],
            "question": q["question"],
            "answer": text,
            "count": 1,
            "samples": cfg.samples,
            "finished": p["finished"],
            "model": model_name,
            "data_dir": str(Path(cfg.data).resolve()),
            "split": cfg.split,
            "sampling": sampling,
        }
    del model
    records = list(records.values())
    if cfg.skip_labelled and Path(cfg.skip_labelled).is_dir():
        labelled = {row["answer_id"] for row in LabelStore(cfg.skip_labelled).latest()}
        records = [r for r in records if r["answer_id"] not in labelled]
    pooled = len(records)
    if cfg.reward_model:  # P(correct) for uncertainty selection and as the annotators' pre-annotation
        rm, rm_processor = load_reward_model(cfg.reward_model)
        score_records(rm, rm_processor, records, str(Path(cfg.reward_model).resolve()), cfg.batch_size)
    if cfg.select:
        records = select_answers(records, cfg.select, cfg.budget, cfg.random_fraction, cfg.seed, cfg.select_by)
    if cfg.overwrite:  # the key's verdicts are for gold answers mixed among the answers being replaced
        stale_key = gold_key_path(cfg.out)
        if stale_key.is_file():
            logger.info("removing %s: it belongs to the answers %s replaces", stale_key, cfg.out)
            stale_key.unlink()
    write_answers(cfg.out, records)
    if empty:
        logger.info("dropped %d empty answers of %d samples", empty, len(predictions))
    return {
        "questions": len(questions),
        "samples": len(predictions),
        "pool_answers": pooled,
        "answers": len(records),
        "selected": {s: sum(r.get("selection") == s for r in records) for s in {r.get("selection") for r in records}}
        if cfg.select
        else None,
        "empty_dropped": empty,
        "answers_per_question": round(len(records) / max(len(questions), 1), 2),
        "out": cfg.out,
    }
