"""bps-vit: explainable Vision Transformers for NASA BPS space-radiation microscopy."""

__version__ = "0.1.0"
