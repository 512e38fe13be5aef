"""Training: losses, data, argument dataclasses and the training loops (accelerate)."""
