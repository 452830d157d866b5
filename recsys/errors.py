"""The one base class of every domain exception (a leaf: imports nothing from recsys).

Callers that report domain errors (CLI, DAG tasks) catch :data:`DOMAIN_ERRORS`; programming errors
(``KeyError``, ``TypeError``, ...) are not domain errors and keep their tracebacks.
"""

from __future__ import annotations


class RecsysError(Exception):
    """Base of every exception a recsys module raises on purpose (bad input, missing data, failed check)."""


DOMAIN_ERRORS = RecsysError
