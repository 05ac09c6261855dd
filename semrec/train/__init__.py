"""One trainer, one evaluator, metrics and checkpoints for every model."""
