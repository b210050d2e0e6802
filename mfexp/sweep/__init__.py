"""Hyperparameter sweeps: search spaces (`mfexp.sweep.space`) and the Optuna study around them."""
