"""The project's Airflow, driven through its UI in a real headless Chromium (Debian's, by Playwright).

A real `airflow api-server`, `airflow scheduler` (LocalExecutor) and `airflow dag-processor` run with the
project's dags/ and plugins/ in an isolated Airflow home, on a store with two landed days. The test logs in,
sees every DAG of dags/ and no import error, reruns a date through the trigger form with the Partition date
parameter, waits for the run to succeed, then opens the plugin's model registry and validation pages from
the navigation bar and the tasks' extra links. Screenshots go to test-artifacts/airflow_*.png.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.browser import chromium_page
from tests.postgres import free_port

pytestmark = [pytest.mark.integration, pytest.mark.browser, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / "test-artifacts"
BIN = Path(sys.executable).parent
DAG_ID = "recsys_incremental_update"
DAY = "2010-12-01"
USER, PASSWORD = "ui-tester", "a-known-password-for-the-test"
START_TIMEOUT = 240  # the API server imports a lot; on 2 busy cores it has taken 50 s
RUN_TIMEOUT = 420  # a real run takes 1-2 min here


def _tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return f"(no {path.name})"
    return f"--- {path.name} ---\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


class Airflow:
    """The running servers: base URL, a REST client with a token, and the logs for failure messages."""

    def __init__(self, home: Path, base: str, procs: dict[str, subprocess.Popen]) -> None:
        self.home, self.base, self.procs = home, base, procs
        self._token: str | None = None

    def logs(self) -> str:
        return "\n".join(_tail(self.home / f"{name}.log") for name in self.procs)

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                pytest.fail(f"airflow {name} exited with {proc.returncode}\n{self.logs()}", pytrace=False)

    def api(self, path: str, method: str = "GET", body: dict | None = None) -> dict:
        if self._token is None:
            self._token = self._request("/auth/token", "POST", {"username": USER, "password": PASSWORD})["access_token"]
        return self._request(path, method, body, {"Authorization": f"Bearer {self._token}"})

    def _request(self, path: str, method: str, body: dict | None, headers: dict | None = None) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method,
                                         headers={"Content-Type": "application/json", **(headers or {})})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())


def _wait_until(what: str, check, timeout: float, airflow: Airflow, every: float = 2.0):
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        airflow.check_alive()
        try:
            last = check()
        except (urllib.error.URLError, ConnectionError, TimeoutError) as err:
            last = err
        else:
            if last:
                return last
        time.sleep(every)
    pytest.fail(f"{what}: not within {timeout:.0f} s (last: {last!r})\n{airflow.logs()}", pytrace=False)


@pytest.fixture(scope="module")
def airflow(tmp_path_factory):
    """api-server + scheduler + dag-processor on a fresh SQLite home and a store with two landed days."""
    home = tmp_path_factory.mktemp("airflow-ui-home")
    store = home / "store"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    (home / "passwords.json").write_text(json.dumps({USER: PASSWORD}))
    env = os.environ | {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "2",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        # only the runs the test triggers: unpaused DAGs would otherwise start today's scheduled run
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API__BASE_URL": base,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base}/execution/",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        "RECSYS_STORAGE_ROOT": str(store),
        "RECSYS_SENSOR_POKE_SECONDS": "5",
    }
    env.pop("AIRFLOW__CORE__UNIT_TEST_MODE", None)
    subprocess.run([str(BIN / "airflow"), "db", "migrate"], check=True, capture_output=True, env=env)
    subprocess.run([str(BIN / "recsys"), "land", "--from", DAY, "--days", "2"], check=True, capture_output=True,
                   env=env)
    procs: dict[str, subprocess.Popen] = {}
    try:
        for name, args in (("api-server", ["api-server", "--port", str(port)]), ("scheduler", ["scheduler"]),
                           ("dag-processor", ["dag-processor"])):
            with open(home / f"{name}.log", "wb") as log:
                procs[name] = subprocess.Popen([str(BIN / "airflow"), *args], env=env, cwd=home, stdout=log,
                                               stderr=subprocess.STDOUT, start_new_session=True)
        running = Airflow(home, base, procs)
        _wait_until("the API server answers", lambda: running._request("/api/v2/monitor/health", "GET", None),
                    START_TIMEOUT, running)
        yield running
    finally:
        for proc in procs.values():  # each in its own session: the group holds its workers and children
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 20
        for proc in procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # what did not stop in time, and stray children
            except ProcessLookupError:
                pass
            proc.wait(timeout=10)


@pytest.fixture
def page(tmp_path):
    # the UI is slow to answer while TensorFlow trains on 2 cores
    with chromium_page(tmp_path / "chromium-profile", timeout_ms=60_000) as page:
        yield page


def _expected_dag_ids() -> set[str]:
    """The DAG ids of every file in dags/ (parsed here, independently of the servers)."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO_ROOT / "dags"))
    assert bag.import_errors == {}, bag.import_errors
    return set(bag.dag_ids)


def _shot(page, name: str, **kwargs) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), **kwargs)


def test_rerun_a_date_from_the_trigger_form_then_read_the_registry_and_the_validation_report(airflow, page):
    from playwright.sync_api import expect

    expected = _expected_dag_ids()
    assert DAG_ID in expected

    # log in with the simple auth manager's form
    page.goto(airflow.base + "/")
    page.get_by_label("Username").fill(USER)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(airflow.base + "/")

    # every DAG of dags/ is listed (once the DAG processor has parsed them), and none failed to import
    _wait_until("the DAG processor has parsed every DAG",
                lambda: expected <= {d["dag_id"] for d in airflow.api("/api/v2/dags?limit=100")["dags"]},
                START_TIMEOUT, airflow)
    assert airflow.api("/api/v2/importErrors")["total_entries"] == 0
    page.goto(airflow.base + "/dags")
    for dag_id in sorted(expected):
        expect(page.get_by_role("link", name=dag_id, exact=True)).to_be_visible()
    expect(page.get_by_text(f"{len(expected)} Dag")).to_be_visible()
    expect(page.get_by_text(re.compile("import error", re.I))).to_have_count(0)
    _shot(page, "airflow_dags.png")

    # rerun a date through the trigger form with the Partition date parameter
    page.goto(f"{airflow.base}/dags/{DAG_ID}")
    page.get_by_role("button", name="Trigger").first.click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_text("Partition date", exact=True)).to_be_visible()
    dialog.locator("#element_partition_date").fill(DAY)
    _shot(page, "airflow_trigger_form.png")
    dialog.get_by_role("button", name="Trigger").click()
    page.wait_for_url(re.compile(rf"/dags/{DAG_ID}/runs/[^/]+$"))
    run_id = page.url.rsplit("/runs/", 1)[1]
    from urllib.parse import quote, unquote

    run_id = unquote(run_id)
    run = airflow.api(f"/api/v2/dags/{DAG_ID}/dagRuns/{quote(run_id)}")
    assert run["conf"]["partition_date"] == DAY and run["run_type"] == "manual"

    def finished():
        state = airflow.api(f"/api/v2/dags/{DAG_ID}/dagRuns/{quote(run_id)}")["state"]
        return state if state in ("success", "failed") else None

    state = _wait_until(f"run {run_id} finishes", finished, RUN_TIMEOUT, airflow, every=3)
    tis = airflow.api(f"/api/v2/dags/{DAG_ID}/dagRuns/{quote(run_id)}/taskInstances")["task_instances"]
    states = {ti["task_id"]: ti["state"] for ti in tis}
    assert state == "success", f"run {run_id} {state}: {states}\n{airflow.logs()}"
    assert states["deploy"] == "success"  # the first day's candidate becomes the first champion
    page.reload()
    expect(page.get_by_text("Success").first).to_be_visible()
    _shot(page, "airflow_run_success.png")

    # the model registry from the navigation bar: shown inside the Airflow UI
    page.get_by_role("link", name="Registry", exact=True).click()
    registry = page.frame_locator("iframe[title='Registry']")
    expect(registry.get_by_role("heading", name="Model registry")).to_be_visible(timeout=60_000)
    # Airflow 3.3 mirrors a nav view's frame address into its own once the frame has loaded
    # (/plugin/<url_route>/<frame path>), so the view can be bookmarked and reloaded
    expect(page).to_have_url(re.compile(r"/plugin/recsys-registry/recsys/registry$"), timeout=60_000)
    page.reload()
    expect(registry.get_by_role("heading", name="Model registry")).to_be_visible(timeout=60_000)
    expect(registry.locator("#champion")).to_contain_text("Champion: version 1")
    expect(registry.locator("#metric-plot circle.candidate.DEPLOY")).to_have_count(1)
    expect(registry.locator(f"#d-{DAY}")).to_contain_text("DEPLOY")
    expect(registry.locator("#v-1")).to_contain_text("champion")
    _shot(page, "airflow_registry.png", full_page=True)

    # the validation reports from the navigation bar: the run's date passed, the next one is not validated yet
    page.get_by_role("link", name="Validation", exact=True).click()
    reports = page.frame_locator("iframe[title='Validation']")
    expect(reports.get_by_role("heading", name="Validation reports")).to_be_visible(timeout=60_000)
    expect(page).to_have_url(re.compile(r"/plugin/recsys-validation/recsys/validation$"), timeout=60_000)
    expect(reports.locator(f"#dt-{DAY}")).to_contain_text("PASSED")
    expect(reports.locator("#dt-2010-12-02")).to_contain_text("NOT VALIDATED")
    _shot(page, "airflow_validation_list.png")

    # the validate task's extra link opens that date's report; from there, its Data Docs
    page.goto(f"{airflow.base}/dags/{DAG_ID}/runs/{quote(run_id)}/tasks/validate")
    page.get_by_role("link", name="Details", exact=True).click()
    link = page.get_by_role("link", name="Validation report", exact=True)
    expect(link).to_have_attribute("href", f"/recsys/validation/{DAY}")
    link.click()
    page.wait_for_url(f"{airflow.base}/recsys/validation/{DAY}")
    expect(page.locator("#verdict")).to_contain_text(f"Partition {DAY}: PASSED")
    expect(page.get_by_role("heading", name=re.compile(r"Checks \(\d+, 0 failed"))).to_be_visible()
    _shot(page, "airflow_validation_report.png", full_page=True)
    page.locator("#verdict").get_by_role("link", name="raw_events Data Docs").click()
    page.wait_for_url(re.compile(r"/recsys/reports/site/validations/raw_events/.+\.html$"))
    assert re.search(r"Status:\s*Succeeded", page.inner_text("body")), page.inner_text("body")[:2000]
    # served sandboxed (issue 18 #1): the page runs in an opaque origin, not the Airflow UI's
    assert page.evaluate("() => window.origin") == "null"
    _shot(page, "airflow_data_docs.png")

    # the fine_tune task's extra link opens the registry at the version it trained
    page.goto(f"{airflow.base}/dags/{DAG_ID}/runs/{quote(run_id)}/tasks/fine_tune")
    page.get_by_role("link", name="Details", exact=True).click()
    link = page.get_by_role("link", name="Model registry", exact=True)
    expect(link).to_have_attribute("href", f"/recsys/registry?date={DAY}&version=1#v-1")
    link.click()
    expect(page.locator("#focus")).to_contain_text(f"Partition {DAY}")
    expect(page.locator("#focus")).to_contain_text("Version 1")
    expect(page.locator("#v-1")).to_have_class("focus")
    _shot(page, "airflow_registry_version_link.png")
    for name in ("airflow_dags.png", "airflow_registry.png", "airflow_validation_report.png"):
        assert (ARTIFACTS / name).stat().st_size > 10_000
