"""Validation of raw partitions with Great Expectations: reports, and quarantine on failure."""

from recsys.validation.partition import ValidationFailed, ValidationReport, validate_partition

__all__ = ["ValidationFailed", "ValidationReport", "validate_partition"]
