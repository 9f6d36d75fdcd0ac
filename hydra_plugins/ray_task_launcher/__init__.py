"""Hydra launcher plugin: each sweep job is one Ray task (see ray_task_launcher.py)."""
