"""Serving side: scoring from stored versions, deploy (export + index + pointer switch), rollback."""
