"""Hydra sweeper plugin: Optuna search in a persistent study (see optuna_journal_sweeper.py)."""
