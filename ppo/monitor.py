"""Over-optimisation watch: what the reward model says of the sampled answers beside how often they are really right.

PPO climbs the reward model's score; where the prompts have known answers (simulated or gold data) the VQA accuracy
of the same sampled answers is the truth. A reward model being exploited shows as its score rising while that
accuracy stalls or falls; the held-out accuracy (the best-checkpoint rule's default) is the third line.
"""

from __future__ import annotations

import io
from pathlib import Path

from vlm.io import atomic_write_bytes

PLOT = "reward_vs_truth.png"


def reward_and_truth(log_history: list[dict]) -> dict:
    """Per update: the reward model's mean score and the sampled answers' VQA accuracy; per evaluation: the held-out
    VQA accuracy. Lists of (update, value)."""
    series = {"reward_model_score": [], "sampled_vqa_accuracy": [], "held_out_vqa_accuracy": []}
    for entry in log_history:
        step = entry.get("step", entry.get("episode"))
        for key, name in (
            ("objective/reward_model_score", "reward_model_score"),
            ("objective/vqa_accuracy", "sampled_vqa_accuracy"),
            ("eval/vqa_accuracy", "held_out_vqa_accuracy"),
        ):
            if key in entry:
                series[name].append((step, float(entry[key])))
    return series


def plot_reward_and_truth(log_history: list[dict], path: str | Path, title: str) -> Path | None:
    """Two panels sharing the update axis: the reward model's score (left axis) and the accuracies (right); None
    when the run logged neither a reward model score nor an accuracy."""
    series = reward_and_truth(log_history)
    if not series["reward_model_score"] and not series["sampled_vqa_accuracy"]:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, reward_axis = plt.subplots(figsize=(6, 3.5))
    lines = []
    if series["reward_model_score"]:
        x, y = zip(*series["reward_model_score"])
        lines += reward_axis.plot(x, y, color="tab:purple", label="reward model score (sampled answers)")
    reward_axis.set_xlabel("update")
    reward_axis.set_ylabel("reward model score")
    accuracy_axis = reward_axis.twinx()
    for name, style, label in (
        ("sampled_vqa_accuracy", "-", "VQA accuracy of the sampled answers"),
        ("held_out_vqa_accuracy", "o--", "held-out VQA accuracy (greedy)"),
    ):
        if series[name]:
            x, y = zip(*series[name])
            lines += accuracy_axis.plot(x, y, style, label=label)
    accuracy_axis.set_ylabel("VQA accuracy")
    reward_axis.legend(lines, [line.get_label() for line in lines], fontsize=7, loc="lower right")
    reward_axis.set_title(title, fontsize=9)
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())
