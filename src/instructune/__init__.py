"""instructune: instruction fine-tuning, from dataset to evaluated, shippable model."""

__version__ = "0.1.0"
