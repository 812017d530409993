"""Stage 4: image-conditioned PPO on TRL + accelerate."""
