"""Benchmarks: `carousel bench serve` (the API under load) and `carousel bench batch` (the pipeline at
size). Each sets up what it needs by itself and writes the contract's JSON."""
