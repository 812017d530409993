"""Test-only: pause a training run in the middle of writing a checkpoint, so a test can `kill -9` it there.

Put this folder on `PYTHONPATH` (Python imports `sitecustomize` at start-up) and set `VLM_TEST_PAUSE_AFTER` to the
end of a path, e.g. `checkpoint-4/optimizer.pt`: the `torch.save` writing that file finishes, then writes the path
into the file `VLM_TEST_PAUSED_MARKER` names and sleeps, leaving the checkpoint half written (weights and optimizer,
no scheduler, RNG or trainer state) until the test kills the process. Without the variable nothing is changed.
"""

import os

_TARGET = os.environ.get("VLM_TEST_PAUSE_AFTER")

if _TARGET:
    import time

    import torch

    _save = torch.save

    def _pausing_save(obj, f, *args, **kwargs):
        _save(obj, f, *args, **kwargs)
        if isinstance(f, str | os.PathLike) and os.fspath(f).endswith(_TARGET):
            with open(os.environ["VLM_TEST_PAUSED_MARKER"], "w") as marker:
                marker.write(os.fspath(f))
            time.sleep(3600)

    torch.save = _pausing_save
