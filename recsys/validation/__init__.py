"""Validation of raw partitions with Great Expectations: reports, and quarantine on failure."""

from recsys.validation.partition import validate_partition
from recsys.validation.results import ValidationFailed, ValidationReport

__all__ = ["ValidationFailed", "ValidationReport", "validate_partition"]
