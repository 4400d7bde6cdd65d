"""Benchmarks: `python -m bench` measures a whole fleet on this machine."""
