"""Training: JDT loss, datasets, augmentation, the training loop, metrics and evaluation."""
