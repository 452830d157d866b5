"""Adapters from public data to the canonical schema, and the landing simulator."""
