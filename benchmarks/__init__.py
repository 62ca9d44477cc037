"""Benchmarks of tap-kustomer against the local sandbox API (``python -m benchmarks.run``)."""
