"""Tuning: a study of many trainings (recipe, space, objective, pruning, study, worker loop,
storages)."""
