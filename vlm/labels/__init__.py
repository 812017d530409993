"""Human feedback shared by labeling and reward: answer records, the append-only label store, annotator agreement,
gold answers and annotator quality."""
