"""docker/: the compose file is accepted by Docker Compose itself, and wires the stack the README describes.

``docker compose config`` (the Compose v2 plugin) or, where only Debian's package is installed,
``docker-compose config`` (Compose 1.29, which validates the same Compose Specification file) parses,
interpolates and validates the file without a Docker daemon. scripts/test.sh installs Debian's
``docker-compose`` when neither is present. The images themselves are not built here (no registry
access for the base images in CI).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
AIRFLOW_SERVICES = {
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
    "airflow-init",
}


def compose_env() -> dict[str, str]:
    """Where to find Docker and its plugins, and nothing the compose file interpolates (its defaults apply)."""
    keep = ("PATH", "HOME", "DOCKER_CONFIG", "DOCKER_HOST")
    return {k: v for k, v in os.environ.items() if k in keep}


def compose_command() -> list[str]:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    if legacy:
        return [legacy]
    pytest.fail(
        "neither `docker compose` nor `docker-compose` is installed: "
        "apt-get install --no-install-recommends docker-compose (scripts/test.sh does this)"
    )


@pytest.fixture(scope="module")
def rendered() -> dict:
    """The file as Docker Compose resolves it (anchors merged, variables interpolated with their defaults)."""
    proc = subprocess.run(
        [*compose_command(), "-f", str(COMPOSE), "config"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=compose_env(),
    )
    assert proc.returncode == 0, f"docker compose config rejected {COMPOSE}:\n{proc.stderr}"
    return yaml.safe_load(proc.stdout)


def test_compose_accepts_the_file_and_has_every_service(rendered):
    services = set(rendered["services"])
    assert {"namenode", "datanode", "hdfs-init", "postgres", "redis", "recsys-serve"} | AIRFLOW_SERVICES <= services


def test_compose_rejects_a_broken_file(tmp_path):
    """The check above can fail: a service depending on one that does not exist is refused."""
    broken = yaml.safe_load(COMPOSE.read_text())
    broken["services"]["airflow-worker"]["depends_on"]["no-such-service"] = {"condition": "service_healthy"}
    path = tmp_path / "compose.yaml"
    path.write_text(yaml.safe_dump(broken))
    proc = subprocess.run(
        [*compose_command(), "-f", str(path), "config"],
        capture_output=True,
        text=True,
        env=compose_env(),
    )
    assert proc.returncode != 0
    assert "no-such-service" in proc.stderr


def test_airflow_runs_celery_on_postgres_and_redis_with_one_shared_configuration(rendered):
    services = rendered["services"]
    envs = [services[name]["environment"] for name in AIRFLOW_SERVICES]
    for env in envs:
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://redis:")
        assert env["RECSYS_STORAGE_BACKEND"] == "webhdfs"
        assert env["RECSYS_WEBHDFS_URL"] == "http://namenode:9870"
    # tokens signed by the scheduler must verify in the api-server: one secret for all
    assert len({env["AIRFLOW__API_AUTH__JWT_SECRET"] for env in envs}) == 1
    assert len({services[name]["image"] for name in AIRFLOW_SERVICES}) == 1
    commands = {name: " ".join(services[name]["command"]) for name in AIRFLOW_SERVICES}
    assert commands["airflow-worker"] == "airflow celery worker"
    assert commands["airflow-dag-processor"] == "airflow dag-processor"
    assert commands["airflow-apiserver"] == "airflow api-server"
    for name in AIRFLOW_SERVICES - {"airflow-init"}:
        assert services[name]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"


def test_the_network_has_the_name_the_docker_operator_joins(rendered):
    assert rendered["networks"]["default"]["name"] == "recsys_default"


def test_hdfs_namenode_and_datanode_agree_on_the_file_system(rendered):
    services = rendered["services"]
    for name in ("namenode", "datanode", "hdfs-init"):
        env = services[name]["environment"]
        assert env["CORE-SITE.XML_fs.defaultFS"] == "hdfs://namenode:8020"
    assert services["namenode"]["command"] == ["hdfs", "namenode"]
    assert services["datanode"]["command"] == ["hdfs", "datanode"]
    assert services["recsys-serve"]["environment"]["RECSYS_STORAGE_ROOT"] == "/data/recsys"
    assert "/data/recsys" in " ".join(services["hdfs-init"]["command"])


def test_dockerfiles_copy_files_that_exist_and_install_pinned_versions():
    for name in ("Dockerfile.airflow", "Dockerfile.trainer"):
        text = (DOCKER / name).read_text()
        for line in re.findall(r"^COPY (.+)$", text, flags=re.M):
            for source in line.split()[:-1]:
                assert (ROOT / source.rstrip("/")).exists(), f"{name} copies {source}, which does not exist"
        assert "-c constraints.txt" in text
        # the build context is the repository root: an ignore file next to the Dockerfile keeps .venv out
        ignore = (DOCKER / f"{name}.dockerignore").read_text().splitlines()
        assert "*" in ignore and "!recsys/" in ignore and ".venv" not in {i.lstrip("!") for i in ignore}
    pins = {
        line.split("==")[0].lower()
        for line in (DOCKER / "constraints-providers.txt").read_text().splitlines()
        if "==" in line
    }
    constraints = {
        line.split("==")[0].lower() for line in (ROOT / "constraints.txt").read_text().splitlines() if "==" in line
    }
    for req in ("providers.in", "trainer.in"):
        for line in (DOCKER / req).read_text().splitlines():
            package = line.split("#")[0].strip().lower()
            if package:
                assert package in pins | constraints, f"docker/{req}: {package} has no pinned version"
