"""Benchmarks: one module per performance claim (bench_*.py), each measuring against a baseline
in the same run and writing JSON + a Markdown table into benchmarks/results/."""
