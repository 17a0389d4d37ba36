"""Load scenarios (Locust) against the real stack: `make load SCENARIO=normal`, see docs/benchmarks.md."""
