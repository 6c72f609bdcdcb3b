"""wdro-finetune: distributional robust fine-tuning and evaluation of robust image classifiers."""

__version__ = "0.1.0"
