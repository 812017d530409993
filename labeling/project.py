"""What annotators see in Label Studio, and the translation between our records and Label Studio's.

The labeling config shows the image, the question and the model's answer, asks for one required verdict
(correct / incorrect / unsure, hotkeys 1 / 2 / 3) and offers an optional "correct answer" text box.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from vlm.data.errors import DataError
from vlm.labels.store import VERDICTS, check_verdict

VERDICT_CONTROL = "verdict"
CORRECTION_CONTROL = "corrected_answer"
ANSWER_OBJECT = "answer"

LABEL_CONFIG = f"""<View>
  <Image name="image" value="$image" maxWidth="448px"/>
  <Header value="$question"/>
  <Text name="{ANSWER_OBJECT}" value="$answer"/>
  <Choices name="{VERDICT_CONTROL}" toName="{ANSWER_OBJECT}" choice="single" required="true" showInline="true">
    <Choice value="correct" hotkey="1"/>
    <Choice value="incorrect" hotkey="2"/>
    <Choice value="unsure" hotkey="3"/>
  </Choices>
  <TextArea name="{CORRECTION_CONTROL}" toName="{ANSWER_OBJECT}" placeholder="correct answer (optional)"
            maxSubmissions="1" editable="true"/>
</View>"""

INSTRUCTIONS = """<h3>Is the model's answer to the question about this image correct?</h3>
<p>Look at the image, read the question, then judge the answer shown under it.</p>
<ul>
  <li><b>1 &mdash; correct</b>: a person looking at the image would accept this answer. Judge the meaning, not
  the wording: "2" and "two", "yes" and "yes, it is", "grey" and "gray" are the same answer.</li>
  <li><b>2 &mdash; incorrect</b>: the answer is wrong, does not answer the question, or is not about this image.
  If you know the right answer, type it (a word or a short phrase) in the box.</li>
  <li><b>3 &mdash; unsure</b>: you cannot tell from the image (too small, hidden, ambiguous question).
  Do not guess.</li>
</ul>
<p>Examples: <i>How many circles are there?</i> (three circles) &rarr; "3": correct. <i>What color is the square?</i>
(a red square) &rarr; "blue": incorrect, type "red". <i>Is the triangle left of the circle?</i> (they overlap)
&rarr; unsure.</p>"""

# Task data fields shown or used by the config, plus what identifies the answer when labels come back.
TASK_FIELDS = ("answer_id", "image", "question", "answer", "question_id", "image_id", "model")


def config_problems(label_config: str) -> list[str]:
    """Why a project's labeling config is not one whose annotations we can read (empty: it is ours, or
    compatible: same control names, same verdict values, the answer fields it shows)."""
    try:
        root = ET.fromstring(label_config)
    except ET.ParseError as e:
        return [f"its labeling config is not valid XML ({e})"]
    problems = []
    choices = [c for c in root.iter("Choices") if c.get("name") == VERDICT_CONTROL]
    if not choices:
        problems.append(f'it has no <Choices name="{VERDICT_CONTROL}">')
    else:
        values = sorted(c.get("value") for c in choices[0].iter("Choice"))
        if values != sorted(VERDICTS):
            problems.append(f"its '{VERDICT_CONTROL}' choices are {values}, not {list(VERDICTS)}")
    shown = {el.get("value") for el in root.iter() if el.get("value", "").startswith("$")}
    missing = [f"${f}" for f in ("image", "question", "answer") if f"${f}" not in shown]
    if missing:
        problems.append(f"it does not show {', '.join(missing)}")
    return problems


def task_from_answer(record: dict, image_url: str) -> dict:
    """Label Studio task data for one answer record (the image given as a URL Label Studio can serve)."""
    data = {k: record[k] for k in TASK_FIELDS if k in record}
    data["image"] = image_url
    data["image_path"] = str(record["image"])
    return data


def prediction_from_answer(record: dict, model_version: str | None) -> dict | None:
    """The reward model's guess as a pre-annotation, where scoring added `p_correct` to the record."""
    if record.get("p_correct") is None:
        return None
    p = float(record["p_correct"])
    verdict = "correct" if p >= 0.5 else "incorrect"
    return {
        "model_version": str(model_version or record.get("reward_model") or "reward-model"),
        "score": max(p, 1 - p),
        "result": [
            {
                "from_name": VERDICT_CONTROL,
                "to_name": ANSWER_OBJECT,
                "type": "choices",
                "value": {"choices": [verdict]},
            }
        ],
    }


def read_annotation(result: list, where: str) -> tuple[str, str | None]:
    """(verdict, corrected answer) from an annotation's result; an unknown or missing verdict is a `DataError`."""
    verdict, corrected = None, None
    for item in result or []:
        value = item.get("value") or {}
        if item.get("from_name") == VERDICT_CONTROL:
            picked = value.get("choices") or []
            if len(picked) != 1:
                raise DataError(f"{where}: expected one verdict, got {picked}")
            verdict = picked[0]
        elif item.get("from_name") == CORRECTION_CONTROL:
            texts = [t.strip() for t in value.get("text") or [] if t and t.strip()]
            corrected = texts[-1] if texts else None
    if verdict is None:
        raise DataError(f"{where}: has no verdict")
    return check_verdict(verdict, where), corrected
