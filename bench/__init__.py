"""The benchmark harness: see bench/README.md and `make bench`; the latest results are in docs/benchmarks.md."""
