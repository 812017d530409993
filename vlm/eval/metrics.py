"""The official VQA accuracy (Antol et al. 2015; VQA v2 evaluation protocol).

An answer is scored against the 10 human answers of a question: for each of the 10 leave-one-out subsets of 9
humans, accuracy is min(#humans in the subset who gave that answer / 3, 1); the result is the mean over the 10
subsets. Before matching, every answer (prediction and human) is normalised as the official evaluation does:
lower case, punctuation, number words to digits, articles dropped, common contractions restored.

One deliberate difference: the official script skips normalisation when all 10 humans gave the same string. We
always normalise, so "Two." scores like "2" in every question; for normalised predictions the results are identical.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_NUMBER_WORDS = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
_ARTICLES = {"a", "an", "the"}
# Contractions people type without the apostrophe, mapped to the official spelling.
_CONTRACTIONS = {
    "aint": "ain't",
    "arent": "aren't",
    "cant": "can't",
    "couldnt": "couldn't",
    "couldve": "could've",
    "didnt": "didn't",
    "doesnt": "doesn't",
    "dont": "don't",
    "hadnt": "hadn't",
    "hasnt": "hasn't",
    "havent": "haven't",
    "hed": "he'd",
    "hes": "he's",
    "howd": "how'd",
    "howll": "how'll",
    "hows": "how's",
    "Id": "I'd",
    "Im": "I'm",
    "Ive": "I've",
    "isnt": "isn't",
    "itd": "it'd",
    "itll": "it'll",
    "lets": "let's",
    "mightnt": "mightn't",
    "mightve": "might've",
    "mustnt": "mustn't",
    "mustve": "must've",
    "neednt": "needn't",
    "notve": "not've",
    "shant": "shan't",
    "shes": "she's",
    "shouldnt": "shouldn't",
    "shouldve": "should've",
    "thats": "that's",
    "thered": "there'd",
    "theres": "there's",
    "theyd": "they'd",
    "theyll": "they'll",
    "theyre": "they're",
    "theyve": "they've",
    "wasnt": "wasn't",
    "wed": "we'd",
    "weve": "we've",
    "werent": "weren't",
    "whats": "what's",
    "whens": "when's",
    "whered": "where'd",
    "wheres": "where's",
    "whos": "who's",
    "whove": "who've",
    "whyll": "why'll",
    "whyre": "why're",
    "whys": "why's",
    "wont": "won't",
    "wouldnt": "wouldn't",
    "wouldve": "would've",
    "yall": "y'all",
    "youd": "you'd",
    "youll": "you'll",
    "youre": "you're",
    "youve": "you've",
}
_PUNCTUATION = set(';/[]"{}()=+\\_-><@`,?!')  # the official list; apostrophes stay (contractions)
_DIGIT_COMMA = re.compile(r"(\d),(\d)")
_PERIOD_NOT_DECIMAL = re.compile(r"\.(?!\d)")


def _strip_punctuation(text: str) -> str:
    text = _DIGIT_COMMA.sub(r"\1\2", text)  # "1,000" -> "1000"
    out = []
    for i, ch in enumerate(text):
        if ch not in _PUNCTUATION:
            out.append(ch)
            continue
        # Punctuation touching a space (or the ends) disappears ("yes!" -> "yes"); inside a word it separates
        # ("t-shirt" -> "t shirt"), as in the official evaluation.
        before = text[i - 1] if i > 0 else " "
        after = text[i + 1] if i + 1 < len(text) else " "
        out.append("" if before == " " or after == " " else " ")
    text = "".join(out)
    return _PERIOD_NOT_DECIMAL.sub("", text)  # "2.5" keeps its point, "yes." loses it


def normalize_answer(answer: str) -> str:
    """Normalise an answer string the way the VQA evaluation does before matching."""
    text = answer.replace("\n", " ").replace("\t", " ").strip().lower()
    text = _strip_punctuation(text)
    words = []
    for word in text.split():
        word = _NUMBER_WORDS.get(word, word)
        if word in _ARTICLES:
            continue
        words.append(_CONTRACTIONS.get(word, word))
    return " ".join(words)


def vqa_accuracy(prediction: str, human_answers: Sequence[str]) -> float:
    """Official VQA accuracy of one predicted answer against the human answers (normally 10).

    Mean over the leave-one-out subsets of min(#matches / 3, 1), as the official evaluation computes it.
    """
    if not human_answers:
        raise ValueError("vqa_accuracy needs at least one human answer")
    pred = normalize_answer(prediction)
    gts = [normalize_answer(a) for a in human_answers]
    if len(gts) == 1:
        return float(pred == gts[0])
    total = 0.0
    for i in range(len(gts)):
        matches = sum(1 for j, gt in enumerate(gts) if j != i and gt == pred)
        total += min(matches / 3.0, 1.0)
    return total / len(gts)


def majority_answer(human_answers: Sequence[str]) -> str:
    """The most frequent normalised answer (ties broken by first occurrence): VQA's `multiple_choice_answer`."""
    counts: dict[str, int] = {}
    for a in human_answers:
        n = normalize_answer(a)
        counts[n] = counts.get(n, 0) + 1
    return max(counts, key=counts.get)
