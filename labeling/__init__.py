"""Stage 2: human correctness labels through Label Studio."""
