"""tune-run's benchmarks: `python -m benchmarks.run` (the driver), benchmarks/harness.py (what every
section shares), benchmarks/sections/ (the sections). See benchmarks/README.md."""
