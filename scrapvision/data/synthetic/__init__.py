"""Deterministic synthetic data with known ground truth: the embedded default of every head."""
