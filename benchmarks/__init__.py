"""Benchmarks of das: proxies on NAS-Bench-201, distillation on CIFAR-10, the search, pruning, the runtime.

Each is a script run from the repository root (``python -m benchmarks.NAME --help``) and an
importable module for the tests; what they share is in :mod:`benchmarks.common`. benchmarks/README.md
indexes them.
"""
