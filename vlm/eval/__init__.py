"""Evaluation: the official VQA metric, held-out VQA answering, chat metrics, the exact answer KL, the report."""
