"""The model family meets TRL's SFTTrainer as it is: vision prompt-completion rows through our ProcessorMixin,
answer-only labels, and a default (chunked) loss that calls the backbone and so sees the image.

TRL's `SFTTrainer`, unpatched, with its default `chunked_nll` loss, trains on vision prompt-completion rows with
labels on the answer only, and its loss changes when the image does.
"""

import torch
from datasets import Dataset
from trl import SFTConfig, SFTTrainer

from vlm.data import load_image, load_vqa
from vlm.model.builder import load_vlm
from vlm.model.generation import vqa_prompt


def test_sft_trainer_trains_answer_tokens_with_the_image(tiny_checkpoint, synthetic_data, tmp_path):
    model, processor = load_vlm(tiny_checkpoint)
    eos = processor.tokenizer.eos_token
    rows = [
        {
            "images": [load_image(r["image_path"])],
            "prompt": vqa_prompt(r["question"]),
            "completion": f" {r['multiple_choice_answer']}{eos}",
        }
        for r in load_vqa(synthetic_data, "train2014")
    ]
    args = SFTConfig(
        output_dir=str(tmp_path),
        max_steps=12,
        per_device_train_batch_size=16,
        learning_rate=3e-3,
        report_to="none",
        logging_steps=1,
        save_strategy="no",
        max_length=None,
        use_cpu=True,
        seed=0,
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=processor)
    batch = next(iter(trainer.get_train_dataloader()))
    tokenizer = processor.tokenizer
    completions = {r["completion"] for r in rows}
    for labels in batch["labels"]:
        assert tokenizer.decode(labels[labels != -100]) in completions  # the answer and EOS, nothing else
    assert (batch["labels"][batch["input_ids"] == model.config.image_token_id] == -100).all()

    model.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(model, dict(batch))
        other = dict(batch, pixel_values=batch["pixel_values"].flip(0))  # each question gets another image
        assert abs(trainer.compute_loss(model, other).item() - loss.item()) > 1e-5

    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert sum(losses[-3:]) / 3 < 0.7 * sum(losses[:3]) / 3
