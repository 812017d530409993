"""Write a synthetic VQA dataset in the official VQA v2 layout plus LLaVA-Instruct JSON for the same scenes.

    <out>/v2_OpenEnded_mscoco_{train2014,val2014}_questions.json
    <out>/v2_mscoco_{train2014,val2014}_annotations.json
    <out>/{train2014,val2014}/COCO_<split>_<12-digit id>.jpg
    <out>/llava_instruct_{train2014,val2014}.json       (image paths relative to <out>/<split>/)
    <out>/scenes_{train2014,val2014}.json               (each image's objects: the ground truth of chat metrics)
    <out>/synth.json                                     (the parameters; marks a finished dataset)

and, when asked for, two more splits in the same layout: `feedback2014` (other training scenes whose answers SFT
never sees: the pool that labels are collected on and PPO's prompts come from, as new images are in real use) and
`dev2014` (held-out scenes to choose settings on, so that val2014 is reported, never tuned on).

Deterministic for a seed: each split draws from its own random stream, so the val split does not change when the
train size does, and no split changes when another is added. The whole folder is written under a temporary name
and renamed when complete.
"""

from __future__ import annotations

import io
import json
import logging
import random
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from vlm.data import vqa
from vlm.io import atomic_write_json
from vlm.synthetic.questions import conversation, human_answers, multiple_choice_answer, sample_questions
from vlm.synthetic.scenes import render_scene, sample_scene, scene_record, scenes_file

logger = logging.getLogger(__name__)
SPLITS = {"train": "train2014", "val": "val2014"}
EXTRA_SPLITS = {"feedback": "feedback2014", "dev": "dev2014"}  # written when their size is > 0
# COCO ids are unique across splits; so are ours.
IMAGE_ID_OFFSET = {"train2014": 1_000_000, "val2014": 2_000_000, "feedback2014": 3_000_000, "dev2014": 4_000_000}
MANIFEST = "synth.json"


@dataclass
class SynthConfig:
    out: str = field(
        default="runs/demo/data",
        metadata={"help": "Folder to write the dataset to, in the VQA v2 layout (questions, annotations, images)."},
    )
    train: int = field(default=2000, metadata={"help": "Images in the train split (train2014)."})
    val: int = field(default=200, metadata={"help": "Images in the val split (val2014)."})
    feedback: int = field(
        default=0,
        metadata={
            "help": "Images in the feedback split (feedback2014): training scenes SFT never sees, where labels are "
            "collected and PPO's prompts come from; 0: none."
        },
    )
    dev: int = field(default=0, metadata={"help": "Images in the dev split (dev2014), to choose settings on; 0: none."})
    seed: int = field(default=0, metadata={"help": "Seed of the scenes, questions and simulated human answers."})
    image_size: int = field(default=64, metadata={"help": "Side of the square rendered images, in pixels."})
    questions_per_image: int = field(default=5, metadata={"help": "Questions asked about each image."})
    human_error_rate: float = field(
        default=0.1,
        metadata={"help": "Chance (0-1) that each of the 10 simulated human answers of a question is wrong."},
    )
    jpeg_quality: int = field(default=92, metadata={"help": "JPEG quality of the written images (PIL scale, 1-95)."})


def _write_split(root: Path, split: str, n_images: int, cfg: SynthConfig) -> None:
    rng = random.Random(f"{cfg.seed}-{split}")
    image_dir = root / split
    image_dir.mkdir(parents=True)
    questions, annotations, conversations, scenes = [], [], [], []
    for i in tqdm(range(n_images), desc=f"synth {split}", unit="img", leave=False):
        image_id = IMAGE_ID_OFFSET[split] + i
        scene = sample_scene(rng, cfg.image_size)
        image_path = vqa.image_file(image_dir, split, image_id)
        buf = io.BytesIO()
        render_scene(scene).save(buf, format="JPEG", quality=cfg.jpeg_quality)
        image_path.write_bytes(buf.getvalue())
        scenes.append(scene_record(scene, image_id, image_path.name))
        qs = sample_questions(scene, rng, cfg.questions_per_image)
        for k, q in enumerate(qs):
            qid = image_id * 1000 + k  # VQA v2's scheme: image id x 1000 + index
            answers = human_answers(q, rng, error_rate=cfg.human_error_rate)
            questions.append({"image_id": image_id, "question": q.question, "question_id": qid})
            annotations.append(
                {
                    "question_type": q.question_type,
                    "multiple_choice_answer": multiple_choice_answer(answers),
                    "answers": answers,
                    "image_id": image_id,
                    "answer_type": q.answer_type,
                    "question_id": qid,
                }
            )
        conversations.append(
            {"id": f"{image_id:012d}", "image": image_path.name, "conversations": conversation(scene, qs, rng)}
        )
    info = {"description": "vlm-rlhf synthetic shapes VQA", "version": "2.0", "year": 2014}
    license_ = {"name": "CC BY 4.0", "url": "https://creativecommons.org/licenses/by/4.0/"}
    common = {"info": info, "license": license_, "data_subtype": split}
    with open(vqa.questions_file(root, split), "w") as f:
        json.dump({**common, "task_type": "Open-Ended", "data_type": "mscoco", "questions": questions}, f)
    with open(vqa.annotations_file(root, split), "w") as f:
        json.dump({**common, "data_type": "mscoco", "annotations": annotations}, f)
    with open(root / f"llava_instruct_{split}.json", "w") as f:
        json.dump(conversations, f)
    with open(scenes_file(root, split), "w") as f:
        json.dump(scenes, f)
    logger.info("%s: %d images, %d questions", split, n_images, len(questions))


def write_synthetic_dataset(cfg: SynthConfig) -> Path:
    """Write the dataset to `cfg.out`. An existing finished dataset with the same parameters is kept as is;
    one with other parameters is an error (never overwritten)."""
    out = Path(cfg.out)
    manifest = out / MANIFEST
    if manifest.exists():
        existing = {"feedback": 0, "dev": 0} | json.loads(manifest.read_text())  # written before those splits
        if existing == asdict(cfg) | {"out": existing.get("out")}:
            logger.info("synthetic data already in %s", out)
            return out
        raise FileExistsError(f"{out} holds synthetic data made with other parameters ({manifest}); use another --out")
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not a finished synthetic dataset; remove it or use another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        for name, n in (("train", cfg.train), ("val", cfg.val), ("feedback", cfg.feedback), ("dev", cfg.dev)):
            if name in SPLITS or n > 0:
                _write_split(tmp, (SPLITS | EXTRA_SPLITS)[name], n, cfg)
        atomic_write_json(tmp / MANIFEST, asdict(cfg), indent=2)
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
