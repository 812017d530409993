"""The printed summary of `vlm-rlhf pipeline`: stage by stage, the measured figures from `pipeline.json`."""

from __future__ import annotations


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
        parts.append(
            f"round {r['round']} ({r['selection'] or 'all answers'}, {r['labels']} labels so far): "
            f"RM held-out agreement with the truth {100 * truth['accuracy']:.1f} %"
        )
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


RL_ALGORITHMS = {"ppo": "PPO", "grpo": "GRPO"}


def _rl_lines(summary: dict) -> str:
    """Each RL run's facts, then its policies beside SFT's on the val split: VQA accuracy overall and per question
    type, reward-model score, KL to the RL start and the run's wall time."""
    rl = summary["rl_eval"]
    heads, seconds = [], {}
    for algorithm, label in RL_ALGORITHMS.items():
        run = summary.get(algorithm)
        if run is None:
            continue
        seconds[algorithm] = run["seconds"]
        head = (
            f"{label} from {run['start']}: {run['updates']} updates, {run['episodes']} answers, {run['seconds']:.0f} s"
        )
        if run["best"]:
            head += f"; best held-out checkpoint at update {run['best']['step']} ({run['best']['path']})"
        if run["kl_budget"] is not None:
            head += f"; KL budget {run['kl_budget']}"
        heads.append(head)
    types = sorted({t for m in rl.values() for t in m["accuracy_by_question_type"]})
    rows = [("VQA accuracy (%)",) + tuple(f"{100 * rl[n]['accuracy']:.1f}" for n in rl)]
    rows += [(f"  {t}",) + tuple(f"{100 * rl[n]['accuracy_by_question_type'][t]:.1f}" for n in rl) for t in types]
    rows += [
        ("reward-model score",) + tuple(f"{rl[n]['reward_score']:.3f}" for n in rl),
        ("KL to the RL start (nats/answer)",) + tuple(f"{rl[n]['kl_to_reference']:.3f}" for n in rl),
        ("wall time (s)",) + tuple(_number(seconds.get(n), ".0f") for n in rl),
    ]
    table = _table(("val split, greedy",) + tuple(rl), rows)
    return "\n".join([*heads, table, f"report: {summary['rl_report']}"])


def _instruct_lines(summary: dict) -> str:
    facts, runs = summary["instruct"], summary["instruct_eval"]
    train = facts["data"]["train"]
    head = (
        f"instruct from {facts['start']}: {facts['steps']} steps on {train['answers']} answers in "
        f"{train['rows']} conversations ({train['dropped_turns']} answers past max_length dropped), "
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


def _curve_lines(curve: list[dict] | None) -> list[str]:
    """SFT's held-out learning curve, a row per evaluation (empty without evaluations)."""
    if not curve:
        return []
    types = [k for k in curve[0] if k not in ("step", "vqa_accuracy")]
    rows = [(p["step"], f"{100 * p['vqa_accuracy']:.1f}") + tuple(f"{100 * p[t]:.1f}" for t in types) for p in curve]
    return ["", "SFT learning curve, held-out VQA accuracy (%):", _table(("step", "overall", *types), rows)]


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
            *_curve_lines(sft.get("vqa_curve")),
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
            _rl_lines(summary),
            "",
            _instruct_lines(summary),
            "",
            f"report: {summary['report']}  ({summary['seconds']} s in all)",
        ]
    )
