"""PPO checkpoints on disk: writing, listing, pruning and loading them, and the record of the best evaluation.

A checkpoint is `<output_dir>/checkpoint-<update>/`: accelerate's state (policy + value wrapper as safetensors;
optimizer and RNG, which accelerate loads with `torch.load(weights_only=True)`) and `ppo_state.json`, the loop's own
state (update, episode, log history, best evaluation, starting answer length, world size). It is written to
`.tmp-checkpoint-<update>/` and renamed when whole, and only folders holding `ppo_state.json` count, so a run killed
while saving keeps (and resumes from) its previous checkpoint. The learning-rate scheduler is not saved: it is a
function of the update, rebuilt on resume, so nothing in a checkpoint is unpickled with arbitrary code. A policy
saved alone (`best/`, the final policy) is HF format (`vlm.training.resume.save_policy`, shared with GRPO).

Every function here is called on every rank; the file system is touched by rank 0 only.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from accelerate.utils import gather_object

STATE = "ppo_state.json"
BEST = "best"


def complete_checkpoints(output_dir: str | Path) -> list[Path]:
    """The complete checkpoints under `output_dir` (those holding the loop state), oldest update first."""
    found = [p for p in Path(output_dir).glob("checkpoint-*") if (p / STATE).is_file()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def save_checkpoint(accelerator, output_dir: str | Path, step: int, state: dict, keep: int | None) -> Path:
    """Accelerate's state and the loop's `state` as `checkpoint-<step>`, through a temporary folder renamed when
    whole; then only the newest `keep` complete checkpoints stay (all of them when `keep` is falsy)."""
    final = Path(output_dir) / f"checkpoint-{step}"
    tmp = final.with_name(f".tmp-checkpoint-{step}")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    if accelerator.is_main_process:
        (tmp / STATE).write_text(json.dumps(state, indent=1))
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        if keep:
            for old in complete_checkpoints(output_dir)[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_latest_checkpoint(accelerator, output_dir: str | Path) -> tuple[Path, dict] | None:
    """Load the newest complete checkpoint into `accelerator`'s objects; returns its folder and the loop state
    saved with it, or None when there is none. A checkpoint written by another number of processes is refused:
    the rollout order depends on the world size."""
    found = complete_checkpoints(output_dir)
    if not found:
        return None
    last = found[-1]
    state = json.loads((last / STATE).read_text())
    if state["world_size"] != accelerator.num_processes:
        raise ValueError(
            f"{last} was written by {state['world_size']} process(es); resume it with as many "
            f"(got {accelerator.num_processes}), or the data order would change"
        )
    accelerator.load_state(str(last))
    return last, state


def update_best(accelerator, best: dict | None, metrics: dict, metric: str, step: int) -> dict:
    """The best evaluation so far, `{"step", "metrics"}`, after the evaluation `metrics` of update `step` (higher
    `metric` is better; a tie keeps the earlier one). Rank 0 decides, every rank gets the same answer."""
    if accelerator.is_main_process and (best is None or metrics[metric] > best["metrics"][metric]):
        best = {"step": step, "metrics": metrics}
    return gather_object([best])[0]
