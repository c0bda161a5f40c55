"""Running trained checkpoints: loading them for inference and computing logits."""
