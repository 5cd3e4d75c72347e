"""Reviewing: what a study found (front, choices, export, verify, plots, report)."""
