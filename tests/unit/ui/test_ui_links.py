"""plugins/recsys_ui/links.py: the task links' URLs and targets, checked against the real DAGs."""

from __future__ import annotations

from datetime import date

from recsys_ui import links


def test_link_urls():
    assert links.validation_url(date(2010, 12, 2)) == "/recsys/validation/2010-12-02"
    assert links.validation_url(None, "/airflow") == "/airflow/recsys/validation"
    assert links.registry_url(date(2010, 12, 2), 7) == "/recsys/registry?date=2010-12-02&version=7#v-7"
    assert links.registry_url(date(2010, 12, 2), None) == "/recsys/registry?date=2010-12-02#d-2010-12-02"
    assert links.registry_url(None, None) == "/recsys/registry"


def test_version_from_a_task_return_value():
    assert links.version_from({"version": 3, "changed": True}) == 3
    assert links.version_from({"candidate_version": 4, "blessed": False}) == 4
    assert links.version_from({"version": 2, "previous": 5, "changed": True}) == 2  # rollback's return value
    assert links.version_from({"version": True}) is None
    assert links.version_from(True) is None and links.version_from(None) is None


def _target(dag_id, task_id, returned, run=None):
    """links.link_target over literal XCom values; records which tasks' values were read."""
    read = []

    def value(task):
        read.append(task)
        return returned.get(task)

    def run_info():
        read.append("<run>")
        return run

    return links.link_target(dag_id, task_id, value, run_info), read


def test_incremental_tasks_link_to_the_run_date_and_their_version():
    from datetime import datetime

    run = ({"partition_date": "2010-12-05"}, datetime(2026, 11, 28))
    xcom = {"fine_tune": {"version": 7, "trained_on": "2010-12-05"}, "deploy_if_blessed": True,
            "evaluate": {"candidate_version": 7, "date": "2010-12-05", "blessed": True},
            "deploy": {"version": 7, "changed": True, "previous": 6}}
    inc = "recsys_incremental_update"
    assert _target(inc, "fine_tune", xcom, run) == ((date(2010, 12, 5), 7), ["fine_tune", "<run>"])
    assert _target(inc, "deploy_if_blessed", xcom, run)[0] == (date(2010, 12, 5), 7)  # from evaluate
    assert _target(inc, "deploy", xcom, run)[0] == (date(2010, 12, 5), 7)
    assert _target(inc, "deploy", {}, (None, datetime(2010, 12, 6)))[0] == (date(2010, 12, 6), None)
    assert _target(inc, "build_features", xcom, run) == (None, [])


def test_full_retrain_tasks_link_to_the_retrained_version_at_its_end_date():
    from datetime import datetime

    run = ({"end_date": None, "window_days": None}, datetime(2026, 11, 29, 3))  # a weekly run: not a partition
    xcom = {"train_from_scratch": {"version": 9, "kind": "full_retrain", "trained_on": "2010-12-20"},
            "evaluate": {"candidate_version": 9, "date": "2010-12-20", "blessed": True}, "deploy_if_blessed": True,
            "deploy": {"version": 9, "changed": True, "previous": 7}}
    fr = "recsys_full_retrain"
    assert _target(fr, "train_from_scratch", xcom, run) == ((date(2010, 12, 20), 9), ["train_from_scratch"])
    assert _target(fr, "evaluate", xcom, run) == ((date(2010, 12, 20), 9), ["evaluate"])
    assert _target(fr, "deploy_if_blessed", xcom, run) == ((date(2010, 12, 20), 9), ["evaluate"])
    assert _target(fr, "deploy", xcom, run) == ((date(2010, 12, 20), 9), ["deploy", "evaluate"])
    # the training failed: no return value; the End date param if given, never the logical date
    assert _target(fr, "train_from_scratch", {}, ({"end_date": "2010-12-19"}, None))[0] == (date(2010, 12, 19), None)
    assert _target(fr, "train_from_scratch", {}, run)[0] == (None, None)
    assert _target(fr, "train", xcom, run) == (None, [])  # no such task


def test_rollback_links_to_the_version_rolled_back_to_without_a_date():
    xcom = {"rollback": {"version": 2, "index_catalog_date": "2010-12-20", "previous": 5, "changed": True}}
    assert _target("recsys_rollback", "rollback", xcom) == ((None, 2), ["rollback"])
    assert links.registry_url(None, 2) == "/recsys/registry?version=2#v-2"


def test_model_tasks_name_real_tasks_of_the_real_dags(plugins_dir):
    from airflow.dag_processing.dagbag import DagBag

    dagbag = DagBag(dag_folder=str(plugins_dir.parent / "dags"))
    assert dagbag.import_errors == {}
    assert set(links.MODEL_TASKS) <= set(dagbag.dag_ids)
    for dag_id, tasks in links.MODEL_TASKS.items():
        task_ids = set(dagbag.dags[dag_id].task_ids)
        for task_id, sources in tasks.sources.items():
            assert {task_id, *sources} <= task_ids, (dag_id, task_id, sources)
        if tasks.date_param:
            assert tasks.date_param in dagbag.dags[dag_id].params
    assert set(links.MODEL_TASKS["recsys_full_retrain"].sources) == set(dagbag.dags["recsys_full_retrain"].task_ids)
    assert links.VALIDATION_TASKS <= set(dagbag.dags["recsys_incremental_update"].task_ids)


def test_partition_day_prefers_the_param_over_the_logical_date():
    from datetime import datetime

    logical = datetime(2026, 11, 28, 3, 49)
    assert links.partition_day({"partition_date": "2010-12-01"}, logical) == date(2010, 12, 1)
    assert links.partition_day({"partition_date": None}, logical) == date(2026, 11, 28)
    assert links.partition_day(None, None) is None
    assert links.partition_day({"partition_date": "not a date"}, logical) is None


def test_links_are_empty_for_tasks_outside_the_recsys_dags():
    from types import SimpleNamespace

    other = SimpleNamespace(dag_id="example_etl", task_id="validate", run_id="r", map_index=-1)
    unrelated = SimpleNamespace(dag_id="recsys_incremental_update", task_id="build_features", run_id="r", map_index=-1)
    for link in (links.ValidationReportLink(), links.ModelRegistryLink()):
        assert link.get_link(None, ti_key=other) == ""
        assert link.get_link(None, ti_key=unrelated) == ""


def test_an_event_driven_run_links_to_the_oldest_day_its_asset_events_announce():
    announced = [{"from_trigger": True, "payload": {"date": "2010-12-07"}}, {"payload": {"date": "2010-12-06"}},
                 {"from_trigger": True}]  # an event of another asset names no day
    assert links.partition_day(None, None, announced) == date(2010, 12, 6)
    assert links.partition_day({"partition_date": "2010-12-01"}, None, announced) == date(2010, 12, 1)
    assert links.partition_day(None, None, [{"payload": {"date": "not a date"}}]) is None
    assert links.partition_day(None, None, []) is None
    xcom = {"fine_tune": {"version": 7, "trained_on": "2010-12-06"}}
    assert _target("recsys_incremental_update", "fine_tune", xcom, (None, None, announced))[0] == (
        date(2010, 12, 6), 7)


def test_the_run_of_an_event_driven_link_is_read_with_the_asset_events_that_created_it(airflow_db):
    """On the real (SQLite) metadata database: an asset-triggered run has no logical date; its day is in the
    payload of the asset events it consumed, as its tasks read it."""
    from datetime import UTC, datetime

    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from airflow.utils.types import DagRunType

    with create_session() as session:
        asset = AssetModel(name="recsys_raw_events_links_test", uri="recsys://raw-events-links-test", group="asset")
        session.add(asset)
        session.flush()
        events = [AssetEvent(asset_id=asset.id, extra={"from_trigger": True, "payload": {"date": day}})
                  for day in ("2010-12-07", "2010-12-06")]
        session.add_all(events)
        run = DagRun(dag_id="recsys_incremental_update", run_id="asset_triggered__links_test", logical_date=None,
                     run_type=DagRunType.ASSET_TRIGGERED, state=DagRunState.SUCCESS, run_after=datetime.now(UTC))
        run.consumed_asset_events = events
        session.add(run)
    assert links._run_day("recsys_incremental_update", "asset_triggered__links_test") == date(2010, 12, 6)
    assert links._run_day("recsys_incremental_update", "no such run") is None
