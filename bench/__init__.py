"""The issue-7 benchmark harness: see bench/README.md and `make bench`."""
