"""Stage 1 (answer-only VQA SFT) and stage 5 (LLaVA-style instruction tuning)."""
