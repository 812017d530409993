"""`vlm-rlhf pipeline`: run every stage that exists, in order, each handing over through files.

Today: synthesise the data, build the initial model, SFT it on the train split, evaluate the initial and the SFT
model side by side on the val split, collect correctness labels for the SFT model's sampled answers (simulated
annotators, or Label Studio when `label_studio: {url: ...}` is set), train the reward model on them, optimise the
SFT policy against it with PPO, and evaluate SFT and PPO side by side (VQA accuracy, reward score, KL). Each step
is skipped when its output is already complete, so an interrupted pipeline resumes where it stopped (interrupted
SFT and reward runs resume from their last checkpoint; labels already pulled stay in the append-only store).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from vlm.builder import is_vlm_checkpoint
from vlm.commands.evaluate import EvalConfig, evaluate
from vlm.commands.init_model import InitModelConfig, init_model
from vlm.config_parsing import parse_config
from vlm.data.synthetic import SPLITS, SynthConfig, write_synthetic_dataset
from vlm.data.synthetic_instruct import InstructMixConfig, mix_file, write_instruct_mix
from vlm.data.vqa import load_vqa
from vlm.io import atomic_write_json
from vlm.metrics import vqa_accuracy
from vlm.presets import TinyPreset

logger = logging.getLogger(__name__)


@dataclass
class PipelineConfig:
    output_dir: str = field(default="runs/demo", metadata={"help": "Every stage writes under this folder."})
    data_config: str = field(default="configs/demo/data.yaml", metadata={"help": "`data synth` config."})
    model_config: str = field(default="configs/demo/model.yaml", metadata={"help": "`init-model` config."})
    sft_config: str = field(default="configs/demo/sft.yaml", metadata={"help": "`sft` config (stage 1)."})
    reward_config: str = field(default="configs/demo/reward.yaml", metadata={"help": "`reward train` config."})
    ppo_config: str = field(default="configs/demo/ppo.yaml", metadata={"help": "`ppo` config (stage 4)."})
    ppo_from_sft_checkpoint: str | None = field(
        default=None,
        metadata={"help": "Start PPO from this checkpoint of the SFT run (e.g. checkpoint-500: an earlier, less "
                          "certain policy); default: the final SFT model."},
    )  # fmt: skip
    instruct_data_config: str = field(
        default="configs/demo/instruct-data.yaml", metadata={"help": "`data instruct-mix` config (stage 5's data)."}
    )
    instruct_config: str = field(
        default="configs/demo/instruct.yaml", metadata={"help": "`instruct` config (stage 5)."}
    )
    eval_limit: int | None = field(default=None, metadata={"help": "Evaluate on the first N val questions only."})
    examples: int = field(default=8, metadata={"help": "Validation answers shown per model."})
    max_new_tokens: int = field(default=8, metadata={"help": "Answer length limit in evaluation."})
    label_questions: int = field(default=200, metadata={"help": "Train questions the SFT model answers for labeling."})
    label_samples: int = field(default=4, metadata={"help": "Sampled answers per question (duplicates merged)."})
    label_temperature: float = field(default=1.0, metadata={"help": "Sampling temperature of those answers."})
    label_annotators: int = field(default=3, metadata={"help": "Simulated annotators."})
    label_per_answer: int = field(default=2, metadata={"help": "Simulated annotators per answer."})
    label_error_rate: float = field(default=0.1, metadata={"help": "Simulated annotators' error rate."})
    label_error_rates: str | None = field(
        default=None, metadata={"help": "One error rate per simulated annotator, comma-separated."}
    )
    label_rounds: int = field(
        default=1, metadata={"help": "Rounds of label -> train RM -> select the next answers with that RM."}
    )
    label_budget: int | None = field(
        default=None,
        metadata={"help": "Answers labelled per round, chosen from label_questions x label_samples (disagreement "
                          "in round 1, RM uncertainty after); none: label them all."},
    )  # fmt: skip
    label_random_fraction: float = field(default=0.1, metadata={"help": "Random slice on top of each budget."})
    label_gold_rate: float = field(default=0.0, metadata={"help": "Share of gold answers mixed into each round."})
    label_min_gold_accuracy: float | None = field(
        default=None, metadata={"help": "The RM drops annotators below this gold accuracy (needs gold answers)."}
    )
    label_studio: dict | str | None = field(
        default=None,
        metadata={"help": "Label with humans: {url, project, document_root, wait_seconds, poll_seconds, min_labeled}."},
    )

    def __post_init__(self):
        if isinstance(self.label_studio, str):
            self.label_studio = json.loads(self.label_studio)


def _stage_config(types, path: str, out: Path):
    return parse_config(types, ["--config", path, "--out", str(out)])


def _evaluation(cfg: PipelineConfig, models: dict[str, Path], data_dir: Path, out: Path, **judges) -> dict:
    """Evaluate the checkpoints side by side, reusing a finished report of the same checkpoints and settings."""
    done = out / "eval.json"
    if done.is_file():
        report = json.loads(done.read_text())
        same_models = [r["model"] for r in report["results"]] == [str(p) for p in models.values()]
        if same_models and report["limit"] == cfg.eval_limit and report.get("chat", False) == judges.get("chat", False):
            return report
    return evaluate(
        EvalConfig(
            model=[str(p) for p in models.values()],
            name=list(models),
            data=str(data_dir),
            split=SPLITS["val"],
            limit=cfg.eval_limit,
            out=str(out),
            max_new_tokens=cfg.max_new_tokens,
            **judges,
        )
    )


def _examples(report: dict, data_dir: Path, out: Path, n: int) -> list[dict]:
    questions = load_vqa(data_dir, SPLITS["val"], limit=n)
    answers = {
        r["name"]: {
            p["question_id"]: p["answer"] for p in json.loads((out / r["name"] / "predictions.json").read_text())
        }
        for r in report["results"]
    }
    rows = []
    for q in questions:
        row = {"question_id": q["question_id"], "question": q["question"], "human_answer": q["multiple_choice_answer"]}
        for name, by_id in answers.items():
            row[name] = by_id[q["question_id"]]
            row[f"{name}_vqa_accuracy"] = round(vqa_accuracy(by_id[q["question_id"]], q["answers"]), 3)
        rows.append(row)
    return rows


def run_pipeline(cfg: PipelineConfig) -> dict:
    from labeling.stage import LabelingPlan, run_labeling
    from ppo.train import is_complete as ppo_complete
    from ppo.train import main as ppo_main
    from reward.train import is_complete as reward_complete
    from reward.train import main as reward_main
    from sft.train import SUMMARY, is_complete
    from sft.train import main as sft_main

    root = Path(cfg.output_dir)
    started = time.time()

    (synth,) = _stage_config((SynthConfig,), cfg.data_config, root / "data")
    data_dir = write_synthetic_dataset(synth)

    init_dir = root / "models" / "init"
    if not is_vlm_checkpoint(init_dir):
        model_cfg, preset = _stage_config((InitModelConfig, TinyPreset), cfg.model_config, init_dir)
        init_model(model_cfg, preset)

    sft_dir = root / "models" / "sft"
    if not is_complete(sft_dir):
        sft_main(
            ["--config", cfg.sft_config, "--init_from", str(init_dir), "--data_dir", str(data_dir)]
            + ["--output_dir", str(sft_dir), "--vision_feature_cache", str(root / "cache" / "vision_features")]
        )
    sft_summary = json.loads((sft_dir / SUMMARY).read_text())

    eval_dir = root / "eval"
    report = _evaluation(cfg, {"init": init_dir, "sft": sft_dir}, data_dir, eval_dir)

    plan = LabelingPlan(
        cfg.label_questions,
        cfg.label_samples,
        cfg.label_temperature,
        cfg.max_new_tokens,
        cfg.label_annotators,
        cfg.label_per_answer,
        cfg.label_error_rate,
        budget=cfg.label_budget,
        random_fraction=cfg.label_random_fraction,
        gold_rate=cfg.label_gold_rate,
        error_rates=cfg.label_error_rates,
    )
    rounds, reward_dir = [], None
    for round_ in range(1, cfg.label_rounds + 1):
        labels = run_labeling(
            plan, sft_dir, data_dir, SPLITS["train"], root / "labels", cfg.label_studio, round_, reward_dir
        )
        # The last round's reward model is the one PPO uses; earlier ones only choose the next answers.
        reward_dir = root / "models" / ("reward" if round_ == cfg.label_rounds else f"reward-round-{round_}")
        if not reward_complete(reward_dir):
            gold = ["--gold", *labels["gold"]] if labels["gold"] else []
            if gold and cfg.label_min_gold_accuracy is not None:
                gold += ["--min_gold_accuracy", str(cfg.label_min_gold_accuracy)]
            reward_main(
                ["--config", cfg.reward_config, "--init_from", str(sft_dir), "--label_store", labels["store"]]
                + ["--output_dir", str(reward_dir), "--vision_feature_cache", str(root / "cache" / "vision_features")]
                + gold
            )
        held_out = json.loads((reward_dir / "summary.json").read_text())["held_out"]
        rounds.append({"round": round_, "selection": labels["selection"], "reward_model": str(reward_dir),
                       "labels": labels["stats"]["annotations"], "held_out": held_out})  # fmt: skip
    labels["rounds"] = rounds
    reward_summary = json.loads((reward_dir / "summary.json").read_text())

    ppo_dir = root / "models" / "ppo"
    ppo_start = sft_dir / cfg.ppo_from_sft_checkpoint if cfg.ppo_from_sft_checkpoint else sft_dir
    if not is_vlm_checkpoint(ppo_start):
        raise ValueError(f"ppo_from_sft_checkpoint: {ppo_start} is not a checkpoint of the SFT run (keep it with "
                         "save_total_limit in the SFT config)")  # fmt: skip
    if not ppo_complete(ppo_dir):
        ppo_main(
            ["--config", cfg.ppo_config, "--sft_model_path", str(ppo_start), "--reward_model_path", str(reward_dir)]
            + ["--data_dir", str(data_dir), "--output_dir", str(ppo_dir), "--resume", "true"]
            + ["--vision_feature_cache", str(root / "cache" / "vision_features")]
        )
    ppo_summary = json.loads((ppo_dir / "summary.json").read_text())
    rl_eval_dir = root / "eval-rl"
    rl_models = {"sft": sft_dir} | ({"ppo-start": ppo_start} if ppo_start != sft_dir else {}) | {"ppo": ppo_dir}
    best = ppo_summary["best"]
    if best and best["step"] != ppo_summary["updates"]:  # the held-out best is not the final policy: show both
        rl_models["ppo-best"] = Path(best["path"])
    rl_report = _evaluation(
        cfg, rl_models, data_dir, rl_eval_dir, reward_model=str(reward_dir), reference=str(ppo_start)
    )
    instruct_dir, instruct_report = _instruct(cfg, root, data_dir, ppo_dir)
    instruct_summary = json.loads((instruct_dir / "summary.json").read_text())
    summary = {
        "data": str(data_dir),
        "models": {
            "init": str(init_dir),
            "sft": str(sft_dir),
            "reward": str(reward_dir),
            "ppo": str(ppo_dir),
            "instruct": str(instruct_dir),
        },
        "sft": {
            k: sft_summary[k] for k in ("steps", "first_loss", "final_loss", "train_runtime_s", "tokens_per_second")
        },
        "eval": {r["name"]: r["metrics"] for r in report["results"]},
        "report": str(eval_dir / "report.md"),
        "labels": labels,
        "reward": {k: reward_summary[k] for k in ("objective", "labels", "held_out", "steps", "train_runtime_s")},
        "ppo": {k: ppo_summary[k] for k in ("updates", "episodes", "held_out", "best", "kl_budget", "seconds")}
        | {"start": str(ppo_start)},
        "rl_eval": {r["name"]: r["metrics"] for r in rl_report["results"]},
        "rl_report": str(rl_eval_dir / "report.md"),
        "instruct": {k: instruct_summary[k] for k in INSTRUCT_FACTS} | {"start": str(ppo_dir)},
        "instruct_eval": {r["name"]: {"vqa": r["metrics"], "chat": r["chat"]} for r in instruct_report["results"]},
        "instruct_report": str(root / "eval-instruct" / "report.md"),
        "examples": _examples(report, data_dir, eval_dir, cfg.examples),
        "seconds": round(time.time() - started, 1),
    }
    atomic_write_json(root / "pipeline.json", summary, indent=2)
    return summary


INSTRUCT_FACTS = ("steps", "epochs", "data", "start_perplexity", "final_perplexity", "seconds")


def _instruct(cfg: PipelineConfig, root: Path, data_dir: Path, start: Path) -> tuple[Path, dict]:
    """Stage 5 from the PPO policy: the instruction mix (written once), `instruct`, then start vs end with the
    chat metrics."""
    from sft.instruct import is_complete as instruct_complete
    from sft.instruct import main as instruct_main

    if not all(mix_file(data_dir, split).is_file() for split in SPLITS.values()):
        (mix_cfg,) = parse_config(
            (InstructMixConfig,), ["--config", cfg.instruct_data_config, "--data_dir", str(data_dir)]
        )
        write_instruct_mix(mix_cfg)
    out = root / "models" / "instruct"
    if not instruct_complete(out):
        train, val = SPLITS["train"], SPLITS["val"]
        instruct_main(
            ["--config", cfg.instruct_config, "--init_from", str(start), "--output_dir", str(out)]
            + ["--train_data", str(mix_file(data_dir, train)), "--train_images", str(data_dir / train)]
            + ["--eval_data", str(mix_file(data_dir, val)), "--eval_images", str(data_dir / val)]
            + ["--vision_feature_cache", str(root / "cache" / "vision_features")]
        )
    models = {"instruct-start": start, "instruct": out}
    return out, _evaluation(cfg, models, data_dir, root / "eval-instruct", chat=True)


def _table(header: tuple, rows: list[tuple]) -> str:
    table = [header] + rows
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    lines = [" | ".join(str(c).ljust(w) for c, w in zip(row, widths)) for row in table]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def _number(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)  # e.g. no loss logged in a very short run


def _labels_line(labels: dict) -> str:
    stats = labels["stats"]
    who = (
        f"{labels['annotators']} simulated annotators, {100 * labels['error_rate']:.0f} % error"
        if labels["source"] == "simulated"
        else "Label Studio"
    )
    verdicts = ", ".join(f"{v} {n}" for v, n in stats["aggregated_by_verdict"].items())
    agreement = stats["agreement"]["agreement"]
    return (
        f"labels ({who}): {stats['annotations']} on {stats['answers']} sampled SFT answers; majority {verdicts}"
        + (f"; annotators agree on {100 * agreement:.1f} %" if agreement is not None else "")
        + f"  (store: {labels['store']})"
    )


def _rounds_line(labels: dict) -> str:
    parts = []
    for r in labels.get("rounds", []):
        truth = r["held_out"].get("truth", r["held_out"]["labels"])
        parts.append(f"round {r['round']} ({r['selection'] or 'all answers'}, {r['labels']} labels so far): "
                     f"RM held-out agreement with the truth {100 * truth['accuracy']:.1f} %")  # fmt: skip
    return "; ".join(parts)


def _reward_line(reward: dict) -> str:
    held_out, labels = reward["held_out"]["labels"], reward["labels"]
    line = (
        f"reward model ({reward['objective']}, {labels['train_examples']} training examples, "
        f"{reward['train_runtime_s']:.0f} s): held-out accuracy {100 * held_out['accuracy']:.1f} % "
        f"(majority class {100 * held_out['majority_class_accuracy']:.1f} %), "
        f"ROC-AUC {_number(held_out['roc_auc'], '.3f')}, ECE {held_out['ece']:.3f} "
        f"on {held_out['examples']} answers to unseen images"
    )
    if "truth" in reward["held_out"]:
        line += f"; agrees with the true correctness {100 * reward['held_out']['truth']['accuracy']:.1f} %"
    return line


def _ppo_lines(summary: dict) -> str:
    ppo, rl = summary["ppo"], summary["rl_eval"]
    rows = [
        ("VQA accuracy (%)",) + tuple(f"{100 * rl[n]['accuracy']:.1f}" for n in rl),
        ("reward-model score",) + tuple(f"{rl[n]['reward_score']:.3f}" for n in rl),
        ("KL to PPO's start (nats/answer)",) + tuple(f"{rl[n]['kl_to_reference']:.3f}" for n in rl),
    ]
    best = ppo["best"]
    head = f"PPO from {ppo['start']}: {ppo['updates']} updates, {ppo['episodes']} rollouts, {ppo['seconds']:.0f} s"
    if best:
        head += f"; best held-out checkpoint at update {best['step']} ({best['path']})"
    if ppo["kl_budget"] is not None:
        head += f"; KL budget {ppo['kl_budget']}"
    return head + "\n" + _table(("val split, greedy",) + tuple(rl), rows) + f"\nreport: {summary['rl_report']}"


def _instruct_lines(summary: dict) -> str:
    facts, runs = summary["instruct"], summary["instruct_eval"]
    train = facts["data"]["train"]
    head = (
        f"instruct from {facts['start']}: {facts['steps']} steps on {train['rows']} answers of "
        f"{train['conversations']} conversations ({train['dropped_turns']} long turns dropped), "
        f"{facts['seconds']:.0f} s"
    )

    def pct(get):
        return tuple(f"{100 * get(r):.1f}" for r in runs.values())

    rows = [
        ("VQA accuracy, Q/A prompt (%)",) + pct(lambda r: r["vqa"]["accuracy"]),
        ("VQA accuracy, chat prompt (%)",) + pct(lambda r: r["chat"]["vqa_accuracy"]),
        ("held-out answer perplexity",) + tuple(_number(r["chat"]["perplexity"], ".2f") for r in runs.values()),
        ("EOS stop rate (%)",) + pct(lambda r: r["chat"]["eos_stop_rate"]),
        ("role leaks (%)",) + pct(lambda r: r["chat"]["role_leaks"]),
        ("short-answer compliance (%)",) + pct(lambda r: r["chat"]["short_answer_compliance"]),
        ("description length (words)",) + tuple(f"{r['chat']['description_words']:.1f}" for r in runs.values()),
        ("object recall / hallucinated (%)",)
        + tuple(
            f"{100 * r['chat']['object_recall']:.1f} / {100 * r['chat']['hallucinated_objects']:.1f}"
            for r in runs.values()
        ),
        ("POPE acc / F1 (%), yes-ratio",)
        + tuple(
            f"{100 * r['chat']['pope']['accuracy']:.1f} / {100 * r['chat']['pope']['f1']:.1f}, "
            f"{r['chat']['pope']['yes_ratio']:.2f}"
            for r in runs.values()
        ),
    ]
    return head + "\n" + _table(("val split, greedy",) + tuple(runs), rows) + f"\nreport: {summary['instruct_report']}"


def format_summary(summary: dict) -> str:
    names = list(summary["eval"])
    metrics = summary["eval"]
    types = sorted({t for m in metrics.values() for t in m["accuracy_by_question_type"]})
    rows = [("overall",) + tuple(f"{100 * metrics[n]['accuracy']:.1f}" for n in names)]
    rows += [(t,) + tuple(f"{100 * metrics[n]['accuracy_by_question_type'][t]:.1f}" for n in names) for t in types]
    examples = [
        (r["question"], r["human_answer"]) + tuple(f"{r[n]!r} ({r[f'{n}_vqa_accuracy']:.2f})" for n in names)
        for r in summary["examples"]
    ]
    sft = summary["sft"]
    return "\n".join(
        [
            f"SFT: {sft['steps']} steps, loss {_number(sft['first_loss'], '.3f')} -> "
            f"{_number(sft['final_loss'], '.3f')}, {_number(sft['train_runtime_s'], '.0f')} s "
            f"({_number(sft['tokens_per_second'], '.0f')} tokens/s)",
            "",
            "VQA accuracy (%) on the val split, official metric:",
            _table(("question type",) + tuple(names), rows),
            "",
            _table(("question", "human answer") + tuple(names), examples),
            "",
            _labels_line(summary["labels"]),
            _rounds_line(summary["labels"]),
            _reward_line(summary["reward"]),
            "",
            _ppo_lines(summary),
            "",
            _instruct_lines(summary),
            "",
            f"report: {summary['report']}  ({summary['seconds']} s in all)",
        ]
    )


def main(argv=None) -> dict:
    (cfg,) = parse_config((PipelineConfig,), argv, prog="vlm-rlhf pipeline")
    return run_pipeline(cfg)
