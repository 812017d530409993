"""`vlm-rlhf pipeline`: run every stage, in order, each by name through the command table (as `vlm-rlhf <stage>`
would run it) and each handing over through files.

Synthesise the data, build the initial model, SFT it on the train split, evaluate the initial and the SFT model
side by side on the val split, collect correctness labels for the SFT model's sampled answers (`label round`:
simulated annotators, or Label Studio when the labeling config sets `label_studio: {url: ...}`), train the reward
model on them, optimise the SFT policy against it with PPO, GRPO or both (`rl`), evaluate SFT and the RL policies
side by side (VQA accuracy, reward score, KL, wall time), then instruction-tune the RL policy (PPO's when both ran)
and evaluate it with the chat metrics. Each step is skipped when its output is already complete, so an interrupted
pipeline resumes where it stopped (interrupted SFT, reward, PPO and GRPO runs resume from their last checkpoint;
labels already pulled stay in the append-only store).

Where each stage reads and writes is decided here and only here (`RunFolders`); the stage YAMLs hold settings only.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from vlm.cli.commands import run_command
from vlm.cli.evaluate import EvalConfig, evaluate
from vlm.config_parsing import parse_config, record_config
from vlm.data.vqa import load_vqa
from vlm.eval.metrics import vqa_accuracy
from vlm.io import atomic_write_json
from vlm.model.builder import check_checkpoint, is_vlm_checkpoint
from vlm.synthetic.dataset import SPLITS
from vlm.synthetic.instruct_mix import mix_file
from vlm.training.resume import SUMMARY, is_complete

logger = logging.getLogger(__name__)
RL_CHOICES = {"ppo": ("ppo",), "grpo": ("grpo",), "both": ("ppo", "grpo")}


@dataclass
class PipelineConfig:
    output_dir: str = field(default="runs/demo", metadata={"help": "Every stage writes under this folder."})
    data_config: str = field(default="configs/demo/data.yaml", metadata={"help": "`data synth` config."})
    model_config: str = field(default="configs/demo/model.yaml", metadata={"help": "`init-model` config."})
    sft_config: str = field(default="configs/demo/sft.yaml", metadata={"help": "`sft` config (stage 1)."})
    labeling_config: str = field(
        default="configs/demo/labeling.yaml", metadata={"help": "`label round` config (stage 2), used every round."}
    )
    label_rounds: int = field(
        default=1, metadata={"help": "Rounds of label -> train RM -> select the next answers with that RM."}
    )
    reward_config: str = field(default="configs/demo/reward.yaml", metadata={"help": "`reward train` config."})
    rl: str = field(
        default="ppo",
        metadata={
            "help": "Stage 4's algorithm: ppo (critic), grpo (group baseline) or both, side by side.",
            "choices": list(RL_CHOICES),
        },
    )
    ppo_config: str = field(default="configs/demo/ppo.yaml", metadata={"help": "`ppo` config (stage 4)."})
    grpo_config: str = field(default="configs/demo/grpo.yaml", metadata={"help": "`grpo` config (stage 4)."})
    rl_from_sft_checkpoint: str | None = field(
        default=None,
        metadata={
            "help": "Start PPO/GRPO from this checkpoint of the SFT run (e.g. checkpoint-500: an earlier, less "
            "certain policy); default: the final SFT model."
        },
    )
    instruct_data_config: str = field(
        default="configs/demo/instruct-data.yaml", metadata={"help": "`data instruct-mix` config (stage 5's data)."}
    )
    instruct_config: str = field(
        default="configs/demo/instruct.yaml", metadata={"help": "`instruct` config (stage 5)."}
    )
    eval_limit: int | None = field(default=None, metadata={"help": "Evaluate on the first N val questions only."})
    examples: int = field(default=8, metadata={"help": "Validation answers shown per model."})
    max_new_tokens: int = field(default=8, metadata={"help": "Answer length limit in evaluation."})

    def __post_init__(self):
        if self.rl not in RL_CHOICES:
            raise ValueError(f"rl must be one of {list(RL_CHOICES)}, got {self.rl!r}")


@dataclass(frozen=True)
class RunFolders:
    """Where every stage of one pipeline run reads and writes: the one stage -> folder mapping."""

    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def features(self) -> Path:  # the frozen tower's features, shared by every stage
        return self.root / "cache" / "vision_features"

    @property
    def labels(self) -> Path:
        return self.root / "labels"

    def model(self, stage: str) -> Path:
        return self.root / "models" / stage

    def reward(self, round_: int, last: bool) -> Path:
        # The last round's reward model is the one PPO uses; earlier ones only choose the next answers.
        return self.model("reward" if last else f"reward-round-{round_}")

    def eval(self, name: str) -> Path:
        return self.root / name


def _flags(**values) -> list[str]:
    return [item for key, value in values.items() for item in (f"--{key}", str(value))]


def _summary(folder: Path) -> dict:
    return json.loads((folder / SUMMARY).read_text())


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


def _labels_and_reward(cfg: PipelineConfig, run: RunFolders, policy: Path) -> tuple[dict, Path]:
    """Stages 2 and 3, `label_rounds` times: a labeling round on the policy's answers, then a reward model on every
    label so far (the next round's selector). Returns the last round's labels summary (with every round's figures
    under "rounds") and the last reward model."""
    rounds, reward_dir = [], None
    for round_ in range(1, cfg.label_rounds + 1):
        previous = _flags(reward_model=reward_dir) if reward_dir else []
        run_command(
            "label",
            ["round", "--config", cfg.labeling_config, *_flags(model=policy, data_dir=run.data)]
            + _flags(output_dir=run.labels, round=round_)
            + previous,
        )
        labels = _summary(run.labels / f"round-{round_}")
        reward_dir = run.reward(round_, last=round_ == cfg.label_rounds)
        if not is_complete(reward_dir):
            gold = ["--gold", *labels["gold"]] if labels["gold"] else []
            run_command(
                "reward",
                ["train", "--config", cfg.reward_config, *_flags(init_from=policy, label_store=labels["store"])]
                + _flags(output_dir=reward_dir, vision_feature_cache=run.features)
                + gold,
            )
        held_out = _summary(reward_dir)["held_out"]
        rounds.append(
            {
                "round": round_,
                "selection": labels["selection"],
                "reward_model": str(reward_dir),
                "labels": labels["stats"]["annotations"],
                "held_out": held_out,
            }
        )
    return labels | {"rounds": rounds}, reward_dir


def run_pipeline(cfg: PipelineConfig) -> dict:
    run = RunFolders(Path(cfg.output_dir))
    started = time.time()
    record_config(cfg, out=run.root)

    data_dir = run_command("data", ["synth", "--config", cfg.data_config, *_flags(out=run.data)])

    init_dir = run.model("init")
    if not is_vlm_checkpoint(init_dir):
        run_command("init-model", ["--config", cfg.model_config, *_flags(out=init_dir)])

    sft_dir = run.model("sft")
    if not is_complete(sft_dir):
        run_command(
            "sft",
            ["--config", cfg.sft_config, *_flags(init_from=init_dir, data_dir=data_dir, output_dir=sft_dir)]
            + _flags(vision_feature_cache=run.features),
        )
    sft_summary = _summary(sft_dir)
    eval_dir = run.eval("eval")
    report = _evaluation(cfg, {"init": init_dir, "sft": sft_dir}, data_dir, eval_dir)

    labels, reward_dir = _labels_and_reward(cfg, run, sft_dir)
    reward_summary = _summary(reward_dir)

    rl_start = sft_dir / cfg.rl_from_sft_checkpoint if cfg.rl_from_sft_checkpoint else sft_dir
    if cfg.rl_from_sft_checkpoint and not rl_start.is_dir():
        raise ValueError(
            f"rl_from_sft_checkpoint: {rl_start} is not a checkpoint of the SFT run (keep it with "
            "save_total_limit in the SFT config)"
        )
    check_checkpoint(rl_start, "policy", "rl_from_sft_checkpoint")
    rl_models = {"sft": sft_dir} | ({"rl-start": rl_start} if rl_start != sft_dir else {})
    rl_summaries = {}
    for algorithm in RL_CHOICES[cfg.rl]:
        out = run.model(algorithm)
        if not is_complete(out):
            config = cfg.ppo_config if algorithm == "ppo" else cfg.grpo_config
            run_command(
                algorithm,
                ["--config", config, *_flags(sft_model_path=rl_start, reward_model_path=reward_dir)]
                + _flags(data_dir=data_dir, output_dir=out, resume="true", vision_feature_cache=run.features),
            )
        rl_summaries[algorithm] = _summary(out) | {"start": str(rl_start), "output_dir": str(out)}
        rl_models[algorithm] = out
        best = rl_summaries[algorithm]["best"]
        if best and best["step"] != rl_summaries[algorithm]["updates"]:  # the held-out best is not the final policy
            rl_models[f"{algorithm}-best"] = Path(best["path"])
    rl_eval_dir = run.eval("eval-rl")
    rl_report = _evaluation(
        cfg, rl_models, data_dir, rl_eval_dir, reward_model=str(reward_dir), reference=str(rl_start)
    )
    rl_policy = run.model(RL_CHOICES[cfg.rl][0])
    instruct_dir, instruct_report = _instruct(cfg, run, data_dir, rl_policy)
    instruct_summary = _summary(instruct_dir)
    summary = {
        "data": str(data_dir),
        "models": {
            "init": str(init_dir),
            "sft": str(sft_dir),
            "reward": str(reward_dir),
            **{algorithm: str(run.model(algorithm)) for algorithm in rl_summaries},
            "instruct": str(instruct_dir),
        },
        "sft": {
            k: sft_summary.get(k)
            for k in ("steps", "first_loss", "final_loss", "train_runtime_s", "tokens_per_second", "vqa_curve")
        },
        "eval": {r["name"]: r["metrics"] for r in report["results"]},
        "report": str(eval_dir / "report.md"),
        "labels": labels,
        "reward": {k: reward_summary[k] for k in ("objective", "labels", "held_out", "steps", "train_runtime_s")},
        **{algorithm: {k: facts.get(k) for k in RL_FACTS} for algorithm, facts in rl_summaries.items()},
        "rl_eval": {r["name"]: r["metrics"] for r in rl_report["results"]},
        "rl_report": str(rl_eval_dir / "report.md"),
        "instruct": {k: instruct_summary[k] for k in INSTRUCT_FACTS} | {"start": str(rl_policy)},
        "instruct_eval": {r["name"]: {"vqa": r["metrics"], "chat": r["chat"]} for r in instruct_report["results"]},
        "instruct_report": str(run.eval("eval-instruct") / "report.md"),
        "examples": _examples(report, data_dir, eval_dir, cfg.examples),
        "seconds": round(time.time() - started, 1),
    }
    atomic_write_json(run.root / "pipeline.json", summary, indent=2)
    return summary


RL_FACTS = ("updates", "episodes", "held_out", "best", "kl_budget", "seconds", "start", "output_dir")


INSTRUCT_FACTS = ("steps", "epochs", "data", "start_perplexity", "final_perplexity", "seconds")


def _instruct(cfg: PipelineConfig, run: RunFolders, data_dir: Path, start: Path) -> tuple[Path, dict]:
    """Stage 5 from the RL policy: the instruction mix (written once), `instruct`, then start vs end with the
    chat metrics."""
    if not all(mix_file(data_dir, split).is_file() for split in SPLITS.values()):
        run_command("data", ["instruct-mix", "--config", cfg.instruct_data_config, *_flags(data_dir=data_dir)])
    out = run.model("instruct")
    if not is_complete(out):
        train, val = SPLITS["train"], SPLITS["val"]
        run_command(
            "instruct",
            ["--config", cfg.instruct_config, *_flags(init_from=start, output_dir=out)]
            + _flags(train_data=mix_file(data_dir, train), train_images=data_dir / train)
            + _flags(eval_data=mix_file(data_dir, val), eval_images=data_dir / val)
            + _flags(vision_feature_cache=run.features),
        )
    models = {"instruct-start": start, "instruct": out}
    return out, _evaluation(cfg, models, data_dir, run.eval("eval-instruct"), chat=True)


def main(argv=None) -> dict:
    (cfg,) = parse_config((PipelineConfig,), argv, prog="vlm-rlhf pipeline")
    return run_pipeline(cfg)
