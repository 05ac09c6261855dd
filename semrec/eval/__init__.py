"""Evaluation: the one ranking rule (``ranking``), metrics from ranks (``metrics``) and the full-ranking evaluator
(``evaluator``) every model, the server and the benchmarks share."""
