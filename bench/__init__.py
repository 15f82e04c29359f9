"""Benchmark scripts (`python bench/NAME.py --help`); each writes bench/results/NAME.{json,md}
and `bench/run_all` regenerates them all and pastes the tables into the README.

May import anything in the project (zoo, train, analysis, app); nothing imports bench.
"""
