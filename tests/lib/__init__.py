"""Shared helpers for api-proxy's Python integration tests (see harness.py)."""
