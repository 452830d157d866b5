"""Great Expectations runs inside a file-backed context whose results and Data Docs live in the store.

Every validation run downloads the validation results of earlier runs (``reports/validation/results``)
and the Data Docs site (``reports/validation/site``) from the store into a temporary GX project, runs
its suites there (GX stores each result), rebuilds the site (the new result pages and the index over
every partition's results), and publishes both back with ``publish_dir`` (atomic on the local store and
on HDFS). The store path is never written to directly, so the same code serves a local root and HDFS.

Stakeholders open ``reports/validation/site/index.html``.

Values from the data (unexpected values, observed values, file names in problems, exception messages) are
HTML-escaped in every stored result before GX renders it (:func:`escape_result`): GX writes many of them into
its pages as raw HTML, and the pages are served under the Airflow UI's origin. Results stored by an
earlier release (not escaped yet) are escaped and their pages rebuilt by the next run.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from html import escape
from pathlib import Path
from typing import Any

from recsys.storage import PartitionStore, layout

log = logging.getLogger(__name__)

RESULTS_DIR = f"{layout.VALIDATION_REPORTS}/results"  # GX validation result JSONs of every run
SITE_DIR = f"{layout.VALIDATION_REPORTS}/site"  # the Data Docs site
SITE_INDEX = f"{SITE_DIR}/index.html"  # GX's own index (its table needs JavaScript from public CDNs)
OVERVIEW = f"{SITE_DIR}/partitions.html"  # ours: every partition, plain HTML, works offline
OVERVIEW_FILE = "partitions.html"
SITE_NAME = "recsys_site"
# set in a stored result's meta once its values are escaped (escaping twice would show "&amp;lt;")
ESCAPED_MARK = "recsys_values_escaped"
# Spark evaluates a row-level expectation's condition again for every metric GX asks of it: on a day that
# passes, the unexpected examples of SUMMARY are scans that find nothing (about a fifth of validate at 1M
# events). Spark runs count first and asks for examples only where something was unexpected (add_examples).
COUNTS_FIRST = {"result_format": "SUMMARY", "partial_unexpected_count": 0}


@dataclass
class DocsRun:
    """One GX project for one partition's validation: run suites with :meth:`run`, then :meth:`publish`."""

    store: PartitionStore
    day: date
    root: Path
    context: Any
    run_time: datetime = field(default_factory=lambda: datetime.now(UTC))
    result_ids: list[Any] = field(default_factory=list)

    @property
    def pages(self) -> dict[str, str]:
        """Suite name -> store path of this run's result page in the site."""
        return {key.expectation_suite_identifier.name: f"{SITE_DIR}/{_page(key)}" for key in self.result_ids}

    @property
    def _project(self) -> Path:
        return self.root / "gx"

    @property
    def _validations(self) -> Path:
        return self._project / "uncommitted" / "validations"

    @property
    def _site(self) -> Path:
        return self._project / "uncommitted" / "data_docs" / "local_site"

    def run(
        self, suite: dict[str, Any], frame: Any, params: dict[str, Any]
    ) -> Any:
        """Validate ``frame`` (a pandas or a Spark DataFrame) against ``suite`` (a dict as in ``expectations/``);
        the GX result."""
        import great_expectations as gx
        from great_expectations.core.run_identifier import RunIdentifier

        name = suite["name"]
        sources = self.context.data_sources
        if type(frame).__module__.startswith("pyspark."):  # the Spark backend (recsys.spark)
            source = sources.add_or_update_spark(f"{name}_spark_source")
        else:
            source = sources.add_or_update_pandas(f"{name}_source")
        asset = source.add_dataframe_asset(f"dt={self.day.isoformat()}")
        batch = asset.add_batch_definition_whole_dataframe("whole partition")
        gx_suite = self.context.suites.add_or_update(gx.ExpectationSuite(**suite))
        definition = self.context.validation_definitions.add_or_update(
            gx.ValidationDefinition(name=f"{name}-{self.day.isoformat()}", data=batch, suite=gx_suite)
        )
        run_id = RunIdentifier(run_name=f"dt={self.day.isoformat()}", run_time=self.run_time)
        spark = type(frame).__module__.startswith("pyspark.")
        result = definition.run(
            batch_parameters={"dataframe": frame},
            expectation_parameters=params,
            result_format=COUNTS_FIRST if spark else "SUMMARY",
            run_id=run_id,
        )
        keys = [key for key in self.context.validation_results_store.list_keys()
                if key.expectation_suite_identifier.name == name and key.run_id == run_id]
        if spark:
            add_examples(result, gx_suite, lambda: batch.get_batch(batch_parameters={"dataframe": frame}), params)
            for key in keys:
                rewrite_stored(self._result_file(key), result)
        for key in keys:
            escape_stored_result(self._result_file(key))
        self.result_ids.extend(keys)
        return result

    def _result_file(self, key: Any) -> Path:
        """The JSON file of a stored GX validation result (the file store's layout: the key's parts)."""
        parts = key.to_tuple()
        return self._validations.joinpath(*parts[:-1], f"{parts[-1]}.json")

    def escape_earlier_results(self) -> None:
        """Escape the results stored before their values were escaped; their pages are rebuilt by :meth:`publish`."""
        for key in self.context.validation_results_store.list_keys():
            if escape_stored_result(self._result_file(key)) and key not in self.result_ids:
                self.result_ids.append(key)

    def publish(self, summaries: list[dict[str, Any]]) -> None:
        """Rebuild the site for this run's results, GX's index and our overview of ``summaries``; publish."""
        self.context.build_data_docs(site_names=[SITE_NAME], resource_identifiers=self.result_ids)
        (self._site / OVERVIEW_FILE).write_text(overview_html(summaries), encoding="utf-8")
        self.store.publish_dir(self._validations, RESULTS_DIR)
        self.store.publish_dir(self._site, SITE_DIR)
        log.info("Data Docs of %s published to %s", self.day, self.store.uri(SITE_INDEX))


def add_examples(result: Any, suite: Any, batch: Callable[[], Any], params: dict[str, Any]) -> None:
    """Complete a :data:`COUNTS_FIRST` ``result`` of ``suite`` into the one a ``"SUMMARY"`` run gives (in place;
    the caller rewrites the stored copy). ``batch``: gives the batch that was validated (called only if needed).

    The map expectations that found something unexpected are validated again with ``"SUMMARY"`` (their
    examples and counts of examples replace their results); the others gain the empty list of example counts
    a ``"SUMMARY"`` run reports for them.
    """
    import great_expectations as gx

    redo = [n for n, entry in enumerate(result.results) if (entry.result or {}).get("unexpected_count")]
    empty = [n for n, entry in enumerate(result.results)
             if n not in redo and "partial_unexpected_list" in (entry.result or {})]
    for n in empty:
        result.results[n].result.setdefault("partial_unexpected_counts", [])
    if not redo:
        return
    by_id = {expectation.id: expectation for expectation in suite.expectations}
    chosen = [by_id[result.results[n].expectation_config.id].configuration for n in redo]
    again = batch().validate(gx.ExpectationSuite(name=f"{suite.name}-examples", expectations=chosen),
                           result_format="SUMMARY", expectation_parameters=params)
    for n, fresh in zip(redo, again.results, strict=True):
        entry = result.results[n]
        if (fresh.expectation_config.type, fresh.expectation_config.kwargs.get("column")) != (
                entry.expectation_config.type, entry.expectation_config.kwargs.get("column")):
            raise RuntimeError(f"GX returned the examples of {fresh.expectation_config.type} in another order")
        entry.result, entry.success, entry.exception_info = fresh.result, fresh.success, fresh.exception_info


def escape_result(value: Any) -> Any:
    """``value`` (JSON: dicts, lists, strings, numbers) with every string, mapping keys too, HTML-escaped."""
    if isinstance(value, str):
        return escape(value, quote=True)
    if isinstance(value, list):
        return [escape_result(v) for v in value]
    if isinstance(value, dict):
        return {escape(str(k), quote=True): escape_result(v) for k, v in value.items()}
    return value


def escape_stored_result(path: Path) -> bool:
    """Escape the stored GX result at ``path`` in place; False if it was escaped already.

    Everything is escaped but each expectation's configuration (the suite as written in ``expectations/``
    with our parameters; GX escapes those itself where it renders them).
    """
    if not path.is_file():
        raise FileNotFoundError(f"GX stored no validation result at {path}")
    stored = json.loads(path.read_text(encoding="utf-8"))
    if (stored.get("meta") or {}).get(ESCAPED_MARK) is True:
        return False
    escaped = {key: escape_result(value) for key, value in stored.items() if key != "results"}
    escaped["results"] = [
        {key: value if key == "expectation_config" else escape_result(value) for key, value in result.items()}
        for result in stored.get("results", [])
    ]
    escaped.setdefault("meta", {})[ESCAPED_MARK] = True
    path.write_text(json.dumps(escaped, indent=2), encoding="utf-8")
    return True


def rewrite_stored(path: Path, merged: Any) -> None:
    """Replace the stored GX result at ``path`` by ``merged`` (the merged chunks, or the counts with their
    examples added), escaped as :func:`escape_stored_result` escapes (every value but the expectation
    configurations)."""
    stored = json.loads(path.read_text(encoding="utf-8"))
    fresh = merged.to_json_dict()
    stored["success"] = fresh["success"]
    stored["statistics"] = escape_result(fresh["statistics"])
    for entry, result in zip(stored.get("results", []), fresh["results"], strict=True):
        for key in ("success", "result", "exception_info"):
            entry[key] = escape_result(result.get(key))
    stored.setdefault("meta", {})[ESCAPED_MARK] = True
    path.write_text(json.dumps(stored, indent=2), encoding="utf-8")


def _page(key: Any) -> str:
    """The site-relative page of a GX validation result identifier."""
    parts = key.to_tuple()
    return Path("validations", *parts[:-1], f"{parts[-1]}.html").as_posix()


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; width: 100%; }
th, td { border: 1px solid #ccc; padding: 6px 8px; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
.passed { color: #176b2c; font-weight: bold; } .failed { color: #b00020; font-weight: bold; }
.accepted { color: #9a5b00; font-weight: bold; } ul { margin: 0; padding-left: 1.2em; } code { font-size: 90%; }
"""


def overview_html(summaries: list[dict[str, Any]]) -> str:
    """A self-contained page (no scripts, no external files): one row per partition, newest first."""
    from html import escape

    rows = []
    for s in sorted(summaries, key=lambda x: x["date"], reverse=True):
        day = escape(s["date"])
        if s.get("accepted"):
            status = ('<span class="accepted">ACCEPTED by on-call</span><br>'
                      f'{escape(str(s["accepted"].get("reason", "")))}')
        elif s["success"]:
            status = '<span class="passed">PASSED</span>'
        else:
            status = '<span class="failed">FAILED</span> (quarantined)'
        failed = []
        if s.get("problem"):
            failed.append(f"<li><b>partition problem</b>: {escape(s['problem'])}</li>")
        for c in s.get("checks", []):
            if c["success"] or c.get("suite") == "partition_integrity":
                continue
            seen = (f"{c['unexpected_count']} unexpected, e.g. {escape(', '.join(map(repr, c['unexpected_examples'])))}"
                    if c.get("unexpected_count") else f"observed {escape(repr(c.get('observed_value')))}")
            failed.append(f"<li><b>{escape(c.get('check', c['expectation']))}</b> "
                          f"(<code>{escape(c['expectation'])}</code>): {seen}</li>")
        links = [f'<a href="{escape(_relative(page))}">{escape(suite)} details</a>'
                 for suite, page in sorted((s.get("data_docs") or {}).get("pages", {}).items())]
        links.append(f'<a href="../dt={day}/summary.json">summary.json</a>')
        rows.append(
            f'<tr id="dt={day}"><td>{day}</td><td>{status}</td><td>{s["rows"]}</td>'
            f'<td>{"<ul>" + "".join(failed) + "</ul>" if failed else "none"}</td><td>{" | ".join(links)}</td></tr>'
        )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Data validation: every partition</title>
<style>{_STYLE}</style></head><body>
<h1>Data validation of the daily event partitions</h1>
<p>One row per partition date, newest first. <b>PASSED</b>: the day's events (and catalog) met every rule and
may train the model. <b>FAILED</b>: at least one rule broke; the partition was copied to
<code>quarantine/events/dt=DATE/</code> with a <code>reason.json</code>, the model was not touched, and later dates wait
until the upstream data is fixed or on-call accepts it. <b>ACCEPTED</b>: it failed, and on-call let it through
with the reason shown. The <i>details</i> links open the full Great Expectations report of the latest run: every
rule, what it expected and what it observed (use "Failed Only"). The rules are in <code>expectations/</code>.</p>
<table><thead><tr><th>date</th><th>result</th><th>rows</th><th>failed checks</th><th>reports</th></tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody></table>
<p><a href="index.html">Great Expectations index of every run</a> (needs internet access for its table)</p>
</body></html>
"""


def _relative(store_path: str) -> str:
    """A store path inside the site, relative to the site's root."""
    return store_path.removeprefix(f"{SITE_DIR}/")


@contextmanager
def docs_run(store: PartitionStore, day: date) -> Iterator[DocsRun]:
    """A temporary GX file project holding every earlier result and the current site of the store."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    with tempfile.TemporaryDirectory(prefix="recsys-gx-") as tmp:
        root = Path(tmp)
        context = gx.get_context(mode="file", project_root_dir=root)
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        context.variables.save()
        site = root / "gx" / "uncommitted" / "data_docs" / "local_site"
        if SITE_NAME not in context.list_data_docs_sites():
            context.add_data_docs_site(
                SITE_NAME,
                {  # type: ignore[typeddict-unknown-key]  # SiteBuilder takes it; the TypedDict lacks it
                    "class_name": "SiteBuilder",
                    "show_how_to_buttons": False,
                    "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(site)},
                    "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                },
            )
        run = DocsRun(store, day, root, context)
        if store.exists(RESULTS_DIR):
            store.download_dir(RESULTS_DIR, run._validations)
        for name in store.list_dir(SITE_DIR):
            # the result pages of earlier runs are kept; index.html, partitions.html and static/ (GX's
            # fonts, images and styles, 4 MB) are written again by every build
            if name != "static" and not name.endswith(".html"):
                store.download_dir(f"{SITE_DIR}/{name}", site / name)
        run.escape_earlier_results()
        yield run
