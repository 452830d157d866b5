"""One Great Expectations result for a whole partition from the results of its chunks (bounded memory).

A partition validated in chunks (:mod:`recsys.validation.partition`, ``RECSYS_CHUNK_ROWS``) runs the events
suite once per chunk; :func:`merge_results` combines those runs into the result one run over the whole
partition gives, expectation by expectation:

- row-level (map) expectations: counts summed, the first unexpected values and row indexes (chunks carry the
  partition's row numbers) kept in row order, success from GX's own ``mostly`` rule and result formatter;
- partition-level expectations (row count, proportion of unique values, column means): the exact value of
  the whole partition, from :class:`PartitionAggregates` (counted over every chunk), checked against the
  same bounds GX checks;
- the others (a column exists, a column's dtype): the same in every chunk of a partition whose chunks share
  their dtypes; the first chunk that failed (else the first) stands for all.

:func:`recsys.validation.docs.rewrite_stored` replaces the stored result file (what the Data Docs render) with
the merged one.
These are pure functions of GX result objects and counts: the Spark path may feed them its own aggregates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ROW_COUNT = "expect_table_row_count_to_be_between"
UNIQUE_PROPORTION = "expect_column_proportion_of_unique_values_to_be_between"
MEAN = "expect_column_mean_to_be_between"


@dataclass(frozen=True)
class PartitionAggregates:
    """Exact whole-partition values of the partition-level expectations.

    ``rows``; ``distinct`` / ``nonnull``: per column, distinct non-null values and non-null rows (for the
    proportion of unique values); ``sums``: per column, the sum of its values (every row non-null: the
    derived 0/1 columns), for column means.
    """

    rows: int
    distinct: dict[str, int] = field(default_factory=dict)
    nonnull: dict[str, int] = field(default_factory=dict)
    sums: dict[str, float] = field(default_factory=dict)

    def observed(self, kind: str, column: str | None) -> Any:
        """What GX observes for ``kind`` on ``column`` over the whole partition (None: not known here)."""
        if kind == ROW_COUNT:
            return self.rows
        if column is None:
            return None
        if kind == UNIQUE_PROPORTION and column in self.distinct:
            nonnull = self.nonnull[column]
            return self.distinct[column] / nonnull if self.rows > 0 and nonnull > 0 else 0
        if kind == MEAN and column in self.sums and self.rows:
            return self.sums[column] / self.rows
        return None


def _between(value: Any, kwargs: dict[str, Any]) -> bool:
    low, high = kwargs.get("min_value"), kwargs.get("max_value")
    above = low is None or (value > low if kwargs.get("strict_min") else value >= low)
    below = high is None or (value < high if kwargs.get("strict_max") else value <= high)
    return bool(above and below)


def _raised(result: Any) -> bool:
    return bool((result.exception_info or {}).get("raised_exception"))


def _merge_map(results: list[Any], mostly: float) -> tuple[bool, dict[str, Any]]:
    """(success, result dict) of one map expectation over the chunks' results, as GX formats one run's."""
    from great_expectations.expectations.expectation import _format_map_output, _mostly_success, parse_result_format

    element = sum(int(r.result.get("element_count") or 0) for r in results)
    missing = sum(int(r.result.get("missing_count") or 0) for r in results)
    unexpected = sum(int(r.result.get("unexpected_count") or 0) for r in results)
    values: list[Any] = []
    indexes: list[Any] = []
    for r in results:
        values += list(r.result.get("partial_unexpected_list") or [])
        indexes += list(r.result.get("partial_unexpected_index_list") or [])
    nonnull: int | None
    if all("missing_count" in r.result for r in results):  # the rows GX considers: the non-null ones
        nonnull = element - missing
        success = True if element == 0 or nonnull == 0 else _mostly_success(nonnull, unexpected, mostly)
    else:  # expect_column_values_to_not_be_null considers every row and reports no missing count
        nonnull = None
        success = True if element == 0 else (element - unexpected) / element >= mostly
    has_values = any("partial_unexpected_list" in r.result for r in results)
    has_index = any("partial_unexpected_index_list" in r.result for r in results)
    result_format = parse_result_format("SUMMARY")
    partial = result_format["partial_unexpected_count"]  # one run's metrics return only the first ones
    out = _format_map_output(
        result_format=result_format, success=success, element_count=element,
        nonnull_count=nonnull, unexpected_count=unexpected, unexpected_list=values[:partial] if has_values else None,
        unexpected_index_list=indexes[:partial] if has_index else None,
    )
    return success, out["result"]


def merge_results(chunks: list[Any], aggregates: PartitionAggregates) -> Any:
    """The suite result of the whole partition from ``chunks`` (one GX suite result per chunk, in row order).

    Returns the first chunk's result object, changed in place: each expectation's ``success`` and ``result``
    (and the suite's ``success`` and ``statistics``) are those of the whole partition.
    """
    merged = chunks[0]
    if len(chunks) == 1:
        return merged
    for position, target in enumerate(merged.results):
        results = [chunk.results[position] for chunk in chunks]
        failed = next((r for r in results if _raised(r)), None)
        if failed is not None:  # could not be evaluated on some chunk: as for the whole partition
            target.success, target.result, target.exception_info = failed.success, failed.result, failed.exception_info
            continue
        cfg = target.expectation_config
        kwargs = dict(cfg.kwargs)
        observed = aggregates.observed(cfg.type, kwargs.get("column"))
        if cfg.type in (ROW_COUNT, UNIQUE_PROPORTION, MEAN) and observed is not None:
            target.result = {**(target.result or {}), "observed_value": observed}
            target.success = _between(observed, kwargs)
        elif all("unexpected_count" in (r.result or {}) for r in results):
            target.success, target.result = _merge_map(results, float(kwargs.get("mostly") or 1.0))
        else:
            stand = next((r for r in results if not r.success), results[0])
            target.success, target.result = stand.success, stand.result
    merged.success = all(r.success for r in merged.results)
    stats = merged.statistics
    evaluated = len(merged.results)
    passed = sum(1 for r in merged.results if r.success)
    stats.update({"evaluated_expectations": evaluated, "successful_expectations": passed,
                  "unsuccessful_expectations": evaluated - passed,
                  "success_percent": passed / evaluated * 100 if evaluated else None})
    return merged
