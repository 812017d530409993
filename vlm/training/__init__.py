"""What every training stage shares: resume and final save, freezing and LoRA, the frozen-vision feature bank,
device and precision defaults."""
