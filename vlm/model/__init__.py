"""The model family: config, backbone + heads, projector, processor, chat template, building and loading
checkpoints, generation, and reward scoring of answer records."""
