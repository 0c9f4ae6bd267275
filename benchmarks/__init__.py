"""Side-by-side benchmarks of faceserve: `python -m benchmarks [--quick]` (see benchmarks/README.md)."""
