"""One trainer and its checkpoints for every model (evaluation: :mod:`semrec.eval`)."""
