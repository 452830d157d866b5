"""plugins/recsys_plugin.py as Airflow loads it: what it registers and that its app needs an Airflow login."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def plugin_module(plugins_dir):
    import importlib.util

    spec = importlib.util.spec_from_file_location("recsys_plugin_under_test", plugins_dir / "recsys_plugin.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_plugin_registers_the_app_nav_views_and_links(plugin_module):
    from airflow.api_fastapi.app import RESERVED_URL_PREFIXES

    plugin = plugin_module.RecsysPlugin
    (app,) = plugin.fastapi_apps
    assert app["url_prefix"] == "/recsys" and not app["url_prefix"].startswith(tuple(RESERVED_URL_PREFIXES))
    routes = {route.path for route in app["app"].routes}
    views = {v["url_route"]: v for v in plugin.external_views}
    assert set(views) == {"recsys-registry", "recsys-validation"}
    for view in views.values():
        assert not view["href"].startswith("/")  # relative to the UI's base URL, as Airflow requires
        assert view["href"].removeprefix("recsys") in routes
        assert view["destination"] == "nav"
    assert {type(link).__name__ for link in plugin.global_operator_extra_links} == {
        "ValidationReportLink", "ModelRegistryLink"}


def test_the_plugin_app_needs_an_airflow_login(plugin_module):
    from fastapi.testclient import TestClient

    client = TestClient(plugin_module.app)
    for path in ("/registry", "/validation", "/reports/site/partitions.html", "/api/registry"):
        response = client.get(path)
        assert response.status_code == 401, path
    assert "Log in to Airflow first" in client.get("/registry", headers={"accept": "text/html"}).text
