"""Benchmarks of das's proxies on NAS-Bench-201: rank correlation, agreement with NASLib, speed.

Each is a script (``python benchmarks/NAME.py --help``) and an importable module for the tests.
"""
