"""Stage 4: image-conditioned PPO on TRL's PPOTrainer and accelerate."""
