"""Benchmark scripts behind the measured tables of README.md and docs/results.md (run by path; see each script's
--help)."""
