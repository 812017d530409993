"""The side-by-side evaluation report: a Markdown table per metric and a bar chart of accuracy per answer type."""

from __future__ import annotations

from pathlib import Path

from vlm.io import atomic_write_bytes, atomic_write_text


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _judged_table(results: list[dict], names: list[str]) -> list[str]:
    """Reward-model score and KL to the reference per checkpoint, where `eval` was given them."""
    rows = []
    for key, label in (
        ("reward_score", "mean reward-model score (logit)"),
        ("kl_to_reference", "KL to the reference (nats/answer)"),
    ):
        if any(r["metrics"] and key in r["metrics"] for r in results):
            rows.append(
                [label] + [f"{r['metrics'][key]:.3f}" if r["metrics"] and key in r["metrics"] else "–" for r in results]
            )
    return ["## Reward and KL", "", _table([""] + names, rows), ""] if rows else []


CHAT_ROWS = (  # (label, key path in a result's "chat", format)
    ("held-out assistant-token perplexity", ("perplexity",), "{:.2f}"),
    ("EOS stop rate (%)", ("eos_stop_rate",), "pct"),
    ("role leaks (%)", ("role_leaks",), "pct"),
    ("short-answer compliance (%)", ("short_answer_compliance",), "pct"),
    ("VQA accuracy through the chat prompt (%)", ("vqa_accuracy",), "pct"),
    ("detailed description length (words)", ("description_words",), "{:.1f}"),
    ("object recall in descriptions (%)", ("object_recall",), "pct"),
    ("hallucinated objects (% of named)", ("hallucinated_objects",), "pct"),
    ("POPE accuracy, chat prompt (%)", ("pope", "accuracy"), "pct"),
    ("POPE F1, chat prompt (%)", ("pope", "f1"), "pct"),
    ("POPE yes-ratio, chat prompt", ("pope", "yes_ratio"), "{:.2f}"),
    ("POPE accuracy, Q/A prompt (%)", ("pope_qa_prompt", "accuracy"), "pct"),
    ("POPE yes-ratio, Q/A prompt", ("pope_qa_prompt", "yes_ratio"), "{:.2f}"),
)


def _chat_sections(results: list[dict], names: list[str]) -> list[str]:
    """Chat metrics side by side, then each checkpoint's sample dialogues, where `eval --chat` measured them."""
    chatted = [r for r in results if r.get("chat")]
    if not chatted:
        return []

    def cell(r, path, fmt):
        value = r.get("chat")
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if value is None:
            return "–"
        return _pct(value) if fmt == "pct" else fmt.format(value)

    rows = [[label] + [cell(r, path, fmt) for r in results] for label, path, fmt in CHAT_ROWS]
    parts = ["## Chat (greedy decoding)", "", _table([""] + names, rows), ""]
    parts += ["## Sample dialogues", ""]
    for r in chatted:
        parts.append(f"### {r['name']}")
        for d in r["dialogues"]:
            parts += ["", f"`{Path(d['image']).name}`", ""]
            parts.append("> " + "<br>".join(f"**USER:** {q}<br>**ASSISTANT:** {a or '(empty)'}" for q, a in d["turns"]))
        parts.append("")
    return parts


def markdown_report(results: list[dict], title: str) -> str:
    """`results`: one `{"name", "model", "metrics"}` per checkpoint (`metrics` None without annotations)."""
    names = [r["name"] for r in results]
    parts = [f"# {title}", "", "Checkpoints: " + ", ".join(f"`{r['name']}` = `{r['model']}`" for r in results), ""]
    parts += _judged_table(results, names)
    parts += _chat_sections(results, names)
    results = [dict(r, metrics=r["metrics"] if r["metrics"] and "accuracy" in r["metrics"] else None) for r in results]
    scored = [r for r in results if r["metrics"] is not None]
    if not scored:
        parts.append("No annotations for this split: predictions only (see each checkpoint's predictions.json).")
        return "\n".join(parts) + "\n"

    def row(label, get):
        return [label] + [_pct(get(r["metrics"])) if r["metrics"] else "–" for r in results]

    answer_types = sorted({t for r in scored for t in r["metrics"]["accuracy_by_answer_type"]})
    question_types = sorted({t for r in scored for t in r["metrics"]["accuracy_by_question_type"]})
    summary = [row("**overall**", lambda m: m["accuracy"])]
    summary += [row(t, lambda m, t=t: m["accuracy_by_answer_type"].get(t)) for t in answer_types]
    parts += ["## VQA accuracy (%), official metric", "", _table(["answer type"] + names, summary), ""]
    per_question = [row(t, lambda m, t=t: m["accuracy_by_question_type"].get(t)) for t in question_types]
    parts += ["## VQA accuracy (%) per question type", "", _table(["question type"] + names, per_question), ""]
    shape = [
        ["questions"] + [str(r["metrics"]["questions"]) if r["metrics"] else "–" for r in results],
        ["empty answers"] + [str(r["metrics"]["empty_answers"]) if r["metrics"] else "–" for r in results],
        ["over-long answers"] + [str(r["metrics"]["overlong_answers"]) if r["metrics"] else "–" for r in results],
        ["mean answer length (words)"]
        + [f"{r['metrics']['mean_answer_words']:.2f}" if r["metrics"] else "–" for r in results],
    ]
    parts += [
        "## Answers",
        "",
        _table([""] + names, shape),
        "",
        "![accuracy per answer type](accuracy_by_answer_type.png)",
    ]
    return "\n".join(parts) + "\n"


def accuracy_chart(results: list[dict], path: str | Path) -> Path | None:
    """Grouped bars: accuracy per answer type (and overall), one colour per checkpoint."""
    scored = [r for r in results if r["metrics"] and "accuracy" in r["metrics"]]
    if not scored:
        return None
    import io

    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    groups = ["overall"] + sorted({t for r in scored for t in r["metrics"]["accuracy_by_answer_type"]})
    width = 0.8 / len(scored)
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(groups), 3.6))
    for i, r in enumerate(scored):
        m = r["metrics"]
        values = [100 * (m["accuracy"] if g == "overall" else m["accuracy_by_answer_type"].get(g, 0.0)) for g in groups]
        ax.bar([k + i * width for k in range(len(groups))], values, width, label=r["name"])
    ax.set_xticks([k + width * (len(scored) - 1) / 2 for k in range(len(groups))], groups)
    ax.set_ylabel("VQA accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize="small")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def write_report(results: list[dict], out_dir: str | Path, title: str = "VQA evaluation") -> Path:
    out_dir = Path(out_dir)
    accuracy_chart(results, out_dir / "accuracy_by_answer_type.png")
    return atomic_write_text(out_dir / "report.md", markdown_report(results, title))
