"""Model app for benchmarks/request_cost.py (tables made with migrate --run-syncdb)."""
