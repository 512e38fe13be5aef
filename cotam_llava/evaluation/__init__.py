"""Measurements: codec benchmarks and BD-rate."""
