"""Great Expectations runs inside a file-backed context whose results and Data Docs live in the store.

Every validation run downloads the validation results of earlier runs (``reports/validation/results``)
and the Data Docs site (``reports/validation/site``) from the store into a temporary GX project, runs
its suites there (GX stores each result), rebuilds the site (the new result pages and the index over
every partition's results), and publishes both back with ``publish_dir`` (atomic on the local store and
on HDFS). The store path is never written to directly, so the same code serves a local root and HDFS.

Stakeholders open ``reports/validation/site/index.html``.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from recsys.storage import PartitionStore, layout

log = logging.getLogger(__name__)

RESULTS_DIR = f"{layout.VALIDATION_REPORTS}/results"  # GX validation result JSONs of every run
SITE_DIR = f"{layout.VALIDATION_REPORTS}/site"  # the Data Docs site
SITE_INDEX = f"{SITE_DIR}/index.html"
SITE_NAME = "recsys_site"


@dataclass
class DocsRun:
    """One GX project for one partition's validation: run suites with :meth:`run`, then :meth:`publish`."""

    store: PartitionStore
    day: date
    root: Path
    context: Any
    run_time: datetime = field(default_factory=lambda: datetime.now(UTC))
    result_ids: list[Any] = field(default_factory=list)
    pages: dict[str, str] = field(default_factory=dict)  # suite name -> store path of its result page

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
        """Validate ``frame`` against ``suite`` (a dict as in ``expectations/``); the GX result."""
        import great_expectations as gx
        from great_expectations.core.run_identifier import RunIdentifier

        name = suite["name"]
        source = self.context.data_sources.add_or_update_pandas(f"{name}_source")
        asset = source.add_dataframe_asset(f"dt={self.day.isoformat()}")
        batch = asset.add_batch_definition_whole_dataframe("whole partition")
        gx_suite = self.context.suites.add_or_update(gx.ExpectationSuite(**suite))
        definition = self.context.validation_definitions.add_or_update(
            gx.ValidationDefinition(name=f"{name}-{self.day.isoformat()}", data=batch, suite=gx_suite)
        )
        run_id = RunIdentifier(run_name=f"dt={self.day.isoformat()}", run_time=self.run_time)
        result = definition.run(
            batch_parameters={"dataframe": frame},
            expectation_parameters=params,
            result_format="SUMMARY",
            run_id=run_id,
        )
        self.result_ids.extend(
            key for key in self.context.validation_results_store.list_keys()
            if key.expectation_suite_identifier.name == name and key.run_id == run_id
        )
        return result

    def publish(self) -> None:
        """Rebuild the site for this run's results (and the index over all of them); publish to the store."""
        self.context.build_data_docs(site_names=[SITE_NAME], resource_identifiers=self.result_ids)
        for key in self.result_ids:
            page = Path(*key.to_tuple()[:-1], f"{key.to_tuple()[-1]}.html")
            self.pages[key.expectation_suite_identifier.name] = f"{SITE_DIR}/validations/{page.as_posix()}"
        self.store.publish_dir(self._validations, RESULTS_DIR)
        self.store.publish_dir(self._site, SITE_DIR)
        log.info("Data Docs of %s published to %s", self.day, self.store.uri(SITE_INDEX))


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
        if store.exists(SITE_DIR):
            store.download_dir(SITE_DIR, site)
        yield run
