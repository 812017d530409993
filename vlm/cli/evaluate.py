"""`vlm-rlhf eval --model CKPT [--model CKPT2 ...] --data DIR --split val2014 [--limit N]`.

Per checkpoint `<out>/<name>/predictions.json` in the official VQA results format (`[{"question_id", "answer"}]`);
for all of them `eval.json` (settings + metrics), `report.md` (side by side) and `accuracy_by_answer_type.png`.
A split without annotations gets predictions only.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from vlm.config_parsing import parse_config, record_config
from vlm.data.images import load_image
from vlm.data.vqa import load_vqa
from vlm.eval.answer_kl import answer_kl
from vlm.eval.chat import ChatEvalSettings, chat_metrics
from vlm.eval.report import write_report
from vlm.eval.vqa import GenerationSettings, predict, score_predictions
from vlm.io import atomic_write_json
from vlm.model.builder import check_checkpoint, load_vlm
from vlm.model.reward_scoring import load_reward_model, score_answers
from vlm.training.precision import bf16_available

logger = logging.getLogger(__name__)


@dataclass
class EvalConfig(GenerationSettings, ChatEvalSettings):
    model: list[str] = field(default_factory=list, metadata={"help": "Checkpoint(s) to evaluate (repeatable)."})
    data: str | None = field(default=None, metadata={"help": "VQA v2 folder (questions, annotations, images)."})
    split: str = field(default="val2014", metadata={"help": "VQA split, e.g. val2014."})
    image_dir: str | None = field(default=None, metadata={"help": "Image folder (default: <data>/<split>)."})
    limit: int | None = field(default=None, metadata={"help": "Evaluate the first N questions only."})
    out: str = field(default="runs/eval", metadata={"help": "Where predictions and the report are written."})
    name: list[str] = field(default_factory=list, metadata={"help": "Report names, one per --model."})
    seed: int = field(default=0, metadata={"help": "Seed for sampled decoding."})
    reward_model: str | None = field(
        default=None, metadata={"help": "Also report the mean score of this reward model on each model's answers."}
    )
    reference: str | None = field(
        default=None, metadata={"help": "Also report each model's KL to this checkpoint on its own answers."}
    )


def _names(models: list[str]) -> list[str]:
    """Short, distinct names: the folder name, or more of the path where two folders share a name."""
    paths = [Path(m).resolve() for m in models]
    depth = 1
    while depth < 8:
        names = ["/".join(p.parts[-depth:]) for p in paths]
        if len(set(names)) == len(names):
            return names
        depth += 1
    return [f"{i}:{n}" for i, n in enumerate(names)]


def evaluate(cfg: EvalConfig) -> dict:
    if not cfg.model or not cfg.data:
        raise ValueError("eval needs --model CHECKPOINT (one or more) and --data VQA_FOLDER")
    for m in cfg.model:  # all checked before any model is loaded
        check_checkpoint(m, "policy", "--model")
    if cfg.reward_model:
        check_checkpoint(cfg.reward_model, "reward model", "--reward_model")
    if cfg.reference:
        check_checkpoint(cfg.reference, "policy", "--reference")
    if cfg.name and len(cfg.name) != len(cfg.model):
        raise ValueError(f"got {len(cfg.name)} --name for {len(cfg.model)} --model")
    names = cfg.name or _names(cfg.model)
    questions = load_vqa(cfg.data, cfg.split, cfg.image_dir, cfg.limit)
    annotated = "answers" in questions.column_names
    if not annotated:
        logger.warning("%s has no annotations for %s: writing predictions only", cfg.data, cfg.split)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if bf16_available() else None
    judges = _load_judges(cfg, device)
    out = Path(cfg.out)
    results = []
    for name, path in zip(names, cfg.model):
        started = time.time()
        torch.manual_seed(cfg.seed)
        model, processor = load_vlm(path, dtype=dtype)
        model.to(device).eval()
        predictions = predict(model, processor, questions, cfg, desc=f"eval {name}")
        official = [{"question_id": p["question_id"], "answer": p["answer"]} for p in predictions]
        atomic_write_json(out / name / "predictions.json", official)
        metrics = score_predictions(predictions, questions) if annotated else None
        if judges:
            metrics = (metrics or {}) | _judged(model, processor, questions, predictions, judges, cfg.batch_size)
        result = {"name": name, "model": str(path), "metrics": metrics}
        if cfg.chat:
            if not annotated:
                raise ValueError(f"--chat needs annotations for {cfg.split} (VQA accuracy through the chat prompt)")
            chat, dialogues, chat_predictions = chat_metrics(
                model, processor, cfg.data, cfg.split, cfg.image_dir, questions, cfg, cfg.batch_size
            )
            chat["vqa_accuracy"] = score_predictions(chat_predictions, questions)["accuracy"]
            result |= {"chat": chat, "dialogues": dialogues}
            atomic_write_json(out / name / "chat_predictions.json", chat_predictions)
        results.append(result | {"seconds": round(time.time() - started, 1)})
        if metrics:
            logger.info("%s: VQA accuracy %.3f on %d questions", name, metrics["accuracy"], metrics["questions"])
        del model

    settings = {k: v for k, v in asdict(cfg).items() if k in GenerationSettings.__dataclass_fields__}
    report = {"data": cfg.data, "split": cfg.split, "limit": cfg.limit, "chat": cfg.chat, "generation": settings}
    report["results"] = results
    atomic_write_json(out / "eval.json", report, indent=2)
    write_report(results, out, title=f"VQA evaluation: {cfg.split} ({len(questions)} questions)")
    return report


def _load_judges(cfg: EvalConfig, device: str) -> dict:
    """The reward model (with its own processor: it re-reads the answers' text) and the reference policy."""
    judges = {}
    if cfg.reward_model:
        judges["reward"] = load_reward_model(cfg.reward_model)
    if cfg.reference:
        reference, processor = load_vlm(cfg.reference, dtype=torch.bfloat16 if bf16_available() else None)
        judges["reference"] = (reference.to(device).eval(), processor)
    return judges


def _judged(model, processor, questions, predictions, judges: dict, batch_size: int) -> dict:
    """Mean reward-model score and mean KL to the reference (nats per answer) of one model's answers."""
    if "reference" in judges and judges["reference"][1].tokenizer.get_vocab() != processor.tokenizer.get_vocab():
        raise ValueError("the reference has another tokenizer than the evaluated model: their KL means nothing")
    rewards, kls = [], []
    for start in range(0, len(questions), batch_size):
        rows = questions[start : start + batch_size]
        images = [load_image(p, f"question_id {q}") for p, q in zip(rows["image_path"], rows["question_id"])]
        answers = [p["answer"] for p in predictions[start : start + batch_size]]
        if "reward" in judges:
            rm, rm_processor = judges["reward"]
            rewards += score_answers(rm, rm_processor, images, rows["question"], answers, batch_size).tolist()
        if "reference" in judges:
            reference = judges["reference"][0]
            kls += answer_kl(model, reference, processor, images, rows["question"], answers, batch_size).tolist()
    out = {}
    if rewards:
        out["reward_score"] = sum(rewards) / len(rewards)
    if kls:
        out["kl_to_reference"] = sum(kls) / len(kls)
    return out


def _merge_repeated(argv: list[str], flag: str) -> list[str]:
    """`--model A --model B` and `--model A B` both mean two models."""
    values, rest, i = [], [], 0
    while i < len(argv):
        if argv[i] == flag:
            i += 1
            while i < len(argv) and not argv[i].startswith("--"):
                values.append(argv[i])
                i += 1
        else:
            rest.append(argv[i])
            i += 1
    return rest + ([flag, *values] if values else [])


def format_results(report: dict) -> str:
    lines = []
    for r in report["results"]:
        m = r["metrics"]
        if m is None or "accuracy" not in m:
            line = f"{r['name']}: predictions only ({r['model']})"
        else:
            types = ", ".join(f"{t} {100 * a:.1f}" for t, a in m["accuracy_by_answer_type"].items())
            line = f"{r['name']}: VQA accuracy {100 * m['accuracy']:.1f}% ({types}) on {m['questions']} questions"
        m = m or {}
        if "reward_score" in m:
            line += f", reward-model score {m['reward_score']:.3f}"
        if "kl_to_reference" in m:
            line += f", KL to the reference {m['kl_to_reference']:.3f}"
        lines.append(line)
    return "\n".join(lines)


def main(argv=None) -> dict:
    argv = _merge_repeated(_merge_repeated(list(argv or []), "--model"), "--name")
    (cfg,) = parse_config((EvalConfig,), argv, prog="vlm-rlhf eval")
    report = evaluate(cfg)
    record_config(cfg, out=cfg.out)
    logger.info("wrote %s", Path(cfg.out) / "report.md")
    return report
