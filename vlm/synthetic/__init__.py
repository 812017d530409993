"""The embedded default's world: rendered scenes, their VQA questions and instruction mix, the tiny model preset and
its tower pre-training. Everything here writes the public formats that `vlm.data` reads."""
