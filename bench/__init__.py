"""Benchmarks (not tests): ``make bench`` runs ``bench/run_all.py``; results land in ``bench/results/``."""
