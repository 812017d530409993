"""Stage 3: reward model from human correctness labels."""
