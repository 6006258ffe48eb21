"""Loopback benchmark suite for cliproxy: `python -m bench` (see docs/benchmarks.md).

Everything it starts binds 127.0.0.1, and every load loop is bounded in count and time.
"""
