"""Gold answers, annotator quality and active selection of what to label (no server needed).

Uncertainty picks exactly the answers nearest 0.5 on a hand-made table plus a random slice drawn from the rest, no
duplicates, the same for a seed; disagreement picks the questions whose samples disagree most; by question, whole
questions are taken (the random slice too), never more than the budget, and a question with two unsure answers
comes before one with a single one; gold answers have the
known verdict (VQA accuracy >= 0.9 or 0), questions the answers do not cover and the same fields as the model's
answers; per-annotator gold accuracy, agreement and median lead time on a hand-made table, and a weighted vote that
breaks a tie; a simulated annotator at 30 % error is flagged by gold accuracy (0.5-0.9 against 1.0 for the others).
"""

from __future__ import annotations

import pytest

from labeling.gold_answers import gold_records, mix_in
from labeling.selection import select_answers
from labeling.simulate import SimulateConfig, simulate
from vlm.data.vqa import load_vqa
from vlm.eval.metrics import vqa_accuracy
from vlm.labels.answers import answer_id, read_answers, write_answers
from vlm.labels.gold import annotator_quality, gold_key_path, read_gold
from vlm.labels.store import LabelStore, aggregate_verdicts


def _record(i: int, question_id: int, p: float | None = None, count: int = 1) -> dict:
    r = {"answer_id": f"a{i}", "image": "x.jpg", "question_id": question_id, "question": "q", "answer": f"ans{i}"}
    r["count"] = count
    if p is not None:
        r["p_correct"] = p
    return r


def test_uncertainty_picks_the_answers_nearest_one_half_plus_a_random_slice():
    ps = [0.10, 0.45, 0.52, 0.90, 0.30, 0.70, 0.49, 0.05, 0.99, 0.61]
    records = [_record(i, i, p) for i, p in enumerate(ps)]
    picked = select_answers(records, "uncertainty", budget=3, random_fraction=0.34, seed=1)
    assert [r["answer_id"] for r in picked[:3]] == ["a6", "a2", "a1"]  # |p - 0.5| = 0.01, 0.02, 0.05
    assert [r["selection"] for r in picked] == ["uncertainty"] * 3 + ["random-slice"]
    assert len({r["answer_id"] for r in picked}) == 4  # exactly budget + slice, no duplicates
    assert select_answers(records, "uncertainty", 3, 0.34, seed=1) == picked  # deterministic for a seed
    slices = {select_answers(records, "uncertainty", 3, 0.34, seed=s)[3]["answer_id"] for s in range(20)}
    assert len(slices) > 1 and not slices & {"a6", "a2", "a1"}  # the slice is drawn from the rest
    with pytest.raises(ValueError, match="needs reward-model scores"):
        select_answers([_record(0, 0)], "uncertainty", 1)


def test_disagreement_picks_the_questions_whose_samples_disagree_most():
    # question 1: four different answers; question 2: 3 + 1; question 3: one answer sampled 4 times
    records = [_record(i, 1) for i in range(4)] + [_record(4, 2, count=3), _record(5, 2)] + [_record(6, 3, count=4)]
    picked = select_answers(records, "disagreement", budget=4, random_fraction=0.0)
    assert {r["answer_id"] for r in picked} == {"a0", "a1", "a2", "a3"}
    picked = select_answers(records, "disagreement", budget=6, random_fraction=0.0)
    assert {r["answer_id"] for r in picked} == {f"a{i}" for i in range(6)}  # question 3 (no disagreement) last
    assert len(select_answers(records, "random", budget=5, random_fraction=0.5, unit="answer")) == 7  # all 7


def test_selection_by_question_takes_whole_questions_where_the_reward_model_is_least_sure():
    # question 1: two answers the reward model is unsure of; question 2: one, as unsure; 3 and 4: sure
    records = [_record(0, 1, 0.5), _record(1, 1, 0.45), _record(2, 2, 0.5), _record(3, 3, 0.95), _record(4, 3, 0.9)]
    records += [_record(5, 4, 0.02)]
    picked = select_answers(records, "uncertainty", budget=3, random_fraction=0.0, seed=0)
    assert [r["answer_id"] for r in picked] == ["a0", "a1", "a2"]  # two unsure answers to one question first
    picked = select_answers(records, "uncertainty", budget=2, random_fraction=1.0, seed=0)
    assert [r["answer_id"] for r in picked[:2]] == ["a0", "a1"]
    chosen = {r["question_id"] for r in picked}
    for q in chosen:  # whole questions only, the random slice included
        assert {r["answer_id"] for r in picked if r["question_id"] == q} == {
            r["answer_id"] for r in records if r["question_id"] == q
        }
    assert len(picked) <= 4 and [r["selection"] for r in picked][2:] == ["random-slice"] * (len(picked) - 2)
    for seed in range(10):  # a random draw of questions never splits one, nor overshoots the budget
        drawn = select_answers(records, "random", budget=3, random_fraction=0.0, seed=seed)
        assert len(drawn) <= 3 and all(
            sum(r["question_id"] == q for r in drawn) == sum(r["question_id"] == q for r in records)
            for q in {r["question_id"] for r in drawn}
        )
    with pytest.raises(ValueError, match="select_by must be one of"):
        select_answers(records, "random", 3, unit="image")


def _answers(synthetic_data, n: int) -> list[dict]:
    """Answer records like `label generate` writes: the first n train questions, answered '2'."""
    rows = load_vqa(synthetic_data, "train2014", limit=n)
    return [
        {
            "answer_id": answer_id(q["image_path"], q["question"], "2", "m"),
            "image": q["image_path"],
            "image_id": q["image_id"],
            "question_id": q["question_id"],
            "question": q["question"],
            "answer": "2",
            "count": 1,
            "samples": 4,
            "finished": True,
            "model": "m",
            "data_dir": str(synthetic_data),
            "split": "train2014",
            "sampling": {"seed": 0},
        }
        for q in rows
    ]


def test_gold_answers_have_known_verdicts_and_look_like_the_others(synthetic_data):
    records = _answers(synthetic_data, 20)
    gold, key = gold_records(records, rate=0.5, seed=3)
    assert len(gold) == len(key) == 10
    assert set(key.values()) == {"correct", "incorrect"}
    truth = {q["question_id"]: q for q in load_vqa(synthetic_data, "train2014")}
    for g in gold:
        assert g["question_id"] not in {r["question_id"] for r in records}  # questions the answers do not cover
        accuracy = vqa_accuracy(g["answer"], truth[g["question_id"]]["answers"])
        assert accuracy >= 0.9 if key[g["answer_id"]] == "correct" else accuracy == 0.0
        assert set(g) == set(records[0]) and g["model"] == "m"  # nothing tells a gold answer apart
    assert gold_records(records, rate=0.5, seed=3) == (gold, key)  # the same draw every time
    mixed = mix_in(records, gold, seed=3)
    assert len(mixed) == 30 and mixed[-1] in records + gold and mixed[:10] != records[:10]


def test_annotator_quality_on_a_hand_made_table():
    def row(a, who, verdict, lead=None):
        return {"answer_id": a, "annotator": who, "verdict": verdict, "lead_time": lead}

    rows = [
        row("g1", "ann", "correct", 4.0),
        row("g1", "bob", "incorrect", 10.0),
        row("g2", "ann", "incorrect", 6.0),
        row("g2", "bob", "incorrect", 8.0),
        row("x1", "ann", "unsure", 20.0),
        row("x1", "bob", "correct"),
        row("x1", "cy", "correct"),
    ]
    quality = annotator_quality(rows, {"g1": "correct", "g2": "incorrect"})
    assert quality["ann"]["gold_accuracy"] == 1.0 and quality["bob"]["gold_accuracy"] == 0.5
    assert quality["cy"]["gold_accuracy"] is None and quality["cy"]["gold_labels"] == 0
    # ann's pairs: g1 (disagree), g2 (agree), x1 with bob and with cy (both disagree) -> 1 of 4
    assert quality["ann"]["agreement"] == pytest.approx(0.25)
    assert quality["bob"]["agreement"] == pytest.approx(2 / 4) and quality["cy"]["agreement"] == 0.5
    assert quality["ann"]["median_lead_time"] == 6.0 and quality["bob"]["median_lead_time"] == 9.0
    assert quality["cy"]["median_lead_time"] is None
    # Down-weighting bob to his gold accuracy makes ann's vote win g1; dropping nobody, it is a tie (unsure).
    assert aggregate_verdicts(rows)["g1"]["verdict"] == "unsure"
    assert aggregate_verdicts(rows, {"bob": 0.5})["g1"]["verdict"] == "correct"


def test_simulated_annotator_with_30_percent_error_is_flagged_by_gold(synthetic_data, tmp_path):
    answers = tmp_path / "answers.jsonl"
    write_answers(answers, _answers(synthetic_data, 40))
    cfg = SimulateConfig(
        answers=str(answers),
        store=str(tmp_path / "store"),
        annotators=3,
        per_answer=3,
        error_rates="0.0,0.0,0.3",
        gold_rate=0.6,
        seed=0,
    )
    summary = simulate(cfg)
    assert summary["gold_answers"] == 24 and summary["labels"] == 3 * (40 + 24)
    key = read_gold(gold_key_path(answers))
    assert len(key) == 24 and len(read_answers(answers)) == 40  # the answers file itself is unchanged
    quality = annotator_quality(LabelStore(tmp_path / "store").latest(), key)
    assert quality["simulated-1"]["gold_accuracy"] == quality["simulated-2"]["gold_accuracy"] == 1.0
    assert 0.5 <= quality["simulated-3"]["gold_accuracy"] <= 0.9
    assert simulate(cfg)["stored"] == 0  # the same gold answers and verdicts again: nothing new
    with pytest.raises(ValueError, match="3 values for 2 annotators"):
        simulate(
            SimulateConfig(answers=str(answers), store=str(tmp_path / "s2"), annotators=2, error_rates="0.1,0.1,0.3")
        )
