"""Benchmark scripts behind the README's measured tables (run by path; see each script's --help)."""
