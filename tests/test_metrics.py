"""The official VQA accuracy against hand-computed values.

12 hand-computed cases of the leave-one-out metric (agreement, partial matches, normalisation of number words,
case, punctuation, articles, contractions and numbers), the answer normalisation itself, the majority answer
merging surface forms, and the refusal of a question without human answers.
"""

import pytest

from vlm.eval.metrics import majority_answer, normalize_answer, vqa_accuracy

TEN_RED = ["red"] * 10


@pytest.mark.parametrize(
    "prediction, humans, expected",
    [
        ("red", TEN_RED, 1.0),  # all agree
        ("blue", TEN_RED, 0.0),  # nobody said it
        # 3 of 10 said "2": leaving out one of them leaves 2 matches (2/3), else 3 (capped 1): (3*2/3 + 7*1) / 10
        ("2", ["2"] * 3 + ["3"] * 7, 0.9),
        # 2 of 10: (2 * 1/3 + 8 * 2/3) / 10
        ("2", ["2"] * 2 + ["3"] * 8, 0.6),
        # 1 of 10: leaving it out gives 0, else 1/3: 9 * (1/3) / 10
        ("cat", ["cat"] + ["dog"] * 9, 0.3),
        # 4 of 10: always at least 3 matches
        ("yes", ["yes"] * 4 + ["no"] * 6, 1.0),
        # normalisation: number words, case, punctuation, articles
        ("Two.", ["2"] * 10, 1.0),
        ("the Circle", ["circle"] * 2 + ["square"] * 8, 0.6),
        ("a red square!", ["red square"] * 10, 1.0),
        # contraction restored, comma in a number
        ("dont know", ["don't know"] * 10, 1.0),
        ("1,000", ["1000"] * 10, 1.0),
        # decimal point kept: "2.5" is not "25"
        ("2.5", ["25"] * 10, 0.0),
    ],
)
def test_vqa_accuracy_hand_computed(prediction, humans, expected):
    assert vqa_accuracy(prediction, humans) == pytest.approx(expected)


@pytest.mark.parametrize(
    "raw, normalised",
    [
        ("Yes!", "yes"),
        ("t-shirt", "t shirt"),
        ("  The  Red   Circle ", "red circle"),
        ("none", "0"),
        ("isnt", "isn't"),
        ("3.", "3"),
    ],
)
def test_normalize_answer(raw, normalised):
    assert normalize_answer(raw) == normalised


def test_majority_answer_merges_surface_forms():
    assert majority_answer(["two", "2", "Two.", "3", "3"]) == "2"


def test_vqa_accuracy_needs_answers():
    with pytest.raises(ValueError):
        vqa_accuracy("x", [])
