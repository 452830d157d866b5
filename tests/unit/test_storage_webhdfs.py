"""recsys.storage.webhdfs without a cluster: URLs, settings, paths and errors.

The store's behaviour on a real HDFS is tested by tests/integration/test_store_contract.py.
"""

from __future__ import annotations

import pytest

from recsys.config import ConfigError, Settings
from recsys.storage import StorageError, open_store
from recsys.storage.webhdfs import WebHDFSStore, namenode_url


@pytest.mark.parametrize(
    ("args", "url"),
    [
        (("nn", 9870), "http://nn:9870"),
        (("nn1, nn2", 9870), "http://nn1:9870;http://nn2:9870"),
        (("nn", 9871, None, True), "https://nn:9871"),
        (("nn", 8443, "/gateway/default/", True), "https://nn:8443/gateway/default"),
        (("nn", None), "http://nn"),
        (("nn", 9870, ""), "http://nn:9870"),
    ],
)
def test_namenode_url_from_connection_fields(args, url):
    assert namenode_url(*args) == url


@pytest.mark.parametrize("hosts", ["", " , "])
def test_namenode_url_needs_a_host(hosts):
    with pytest.raises(StorageError, match="no host"):
        namenode_url(hosts, 9870)


def test_webhdfs_settings_defaults_and_parsing():
    s = Settings.from_env({})
    assert (s.webhdfs_url, s.webhdfs_user, s.webhdfs_conn_id, s.sensor_poke_seconds, s.sensor_timeout_seconds) == (
        None, None, "webhdfs_default", 60, 43200,
    )
    s = Settings.from_env({
        "RECSYS_STORAGE_BACKEND": "webhdfs", "RECSYS_STORAGE_ROOT": "/data/recsys",
        "RECSYS_WEBHDFS_URL": "http://nn1:9870;http://nn2:9870", "RECSYS_WEBHDFS_USER": "etl",
        "RECSYS_WEBHDFS_CONN_ID": "hdfs_prod", "RECSYS_SENSOR_POKE_SECONDS": "5",
        "RECSYS_SENSOR_TIMEOUT_SECONDS": "600",
    })
    assert (s.webhdfs_url, s.webhdfs_user, s.webhdfs_conn_id, s.sensor_poke_seconds, s.sensor_timeout_seconds) == (
        "http://nn1:9870;http://nn2:9870", "etl", "hdfs_prod", 5, 600,
    )
    assert Settings.from_env({"RECSYS_WEBHDFS_URL": "none"}).webhdfs_url is None


@pytest.mark.parametrize(
    ("var", "raw"),
    [
        ("RECSYS_WEBHDFS_URL", "namenode:9870"),
        ("RECSYS_WEBHDFS_URL", "hdfs://namenode:8020"),
        ("RECSYS_WEBHDFS_URL", "http://nn:9870;ftp://nn2"),
        ("RECSYS_WEBHDFS_USER", "two words"),
        ("RECSYS_WEBHDFS_AUTH", "negotiate"),
        ("RECSYS_WEBHDFS_CONN_ID", " "),
        ("RECSYS_SENSOR_POKE_SECONDS", "0"),
        ("RECSYS_SENSOR_TIMEOUT_SECONDS", "-1"),
    ],
)
def test_malformed_webhdfs_settings_name_the_variable(var, raw):
    with pytest.raises(ConfigError, match=var):
        Settings.from_env({var: raw})


def test_on_webhdfs_the_root_must_be_an_absolute_hdfs_path():
    with pytest.raises(ConfigError, match="RECSYS_STORAGE_ROOT"):
        Settings.from_env({"RECSYS_STORAGE_BACKEND": "webhdfs", "RECSYS_STORAGE_ROOT": "data/recsys"})


def test_open_store_builds_the_webhdfs_store_from_the_settings():
    store = open_store(Settings(
        storage_backend="webhdfs", storage_root="/data/recsys/", webhdfs_url="http://nn:9870", webhdfs_user="etl",
    ))
    assert isinstance(store, WebHDFSStore)
    assert (store.root, store.user, store.url) == ("/data/recsys", "etl", "http://nn:9870")


def test_kerberos_authentication_is_chosen_by_a_setting():
    from hdfs import InsecureClient
    from hdfs.ext.kerberos import KerberosClient

    assert Settings.from_env({}).webhdfs_auth == "simple"
    settings = Settings.from_env({
        "RECSYS_STORAGE_BACKEND": "webhdfs", "RECSYS_STORAGE_ROOT": "/data/recsys",
        "RECSYS_WEBHDFS_URL": "http://nn:9870", "RECSYS_WEBHDFS_AUTH": "kerberos",
    })
    store = open_store(settings)
    assert isinstance(store, WebHDFSStore) and store.auth == "kerberos"
    assert isinstance(store.client, KerberosClient)
    assert isinstance(open_store(settings.replace(webhdfs_auth="simple")).client, InsecureClient)


def test_the_store_refuses_an_unknown_authentication():
    with pytest.raises(StorageError, match="'simple' or 'kerberos'"):
        WebHDFSStore("http://nn:9870", "/data/recsys", auth="negotiate")


def test_open_store_without_a_namenode_says_what_to_set():
    with pytest.raises(StorageError, match="RECSYS_WEBHDFS_URL") as info:
        open_store(Settings(storage_backend="webhdfs", storage_root="/data/recsys"))
    assert "RECSYS_STORAGE_BACKEND=local" in str(info.value)


def test_uri_is_a_webhdfs_uri_of_the_first_namenode():
    store = WebHDFSStore("http://nn1:9870;http://nn2:9870", "/data/recsys")
    assert store.uri("raw/events/dt=2011-01-04") == "webhdfs://nn1:9870/data/recsys/raw/events/dt=2011-01-04"
    assert store.uri("") == "webhdfs://nn1:9870/data/recsys"


@pytest.mark.parametrize("path", ["../x", "a/../../x", "/etc/passwd", "..", "../recsys-other/x"])
def test_paths_escaping_the_root_are_refused_before_any_request(path):
    store = WebHDFSStore("http://127.0.0.1:1", "/data/recsys")  # nothing listens there
    for call in (lambda: store.exists(path), lambda: store.read_bytes(path), lambda: store.write_bytes(path, b"x")):
        with pytest.raises(StorageError, match="escapes the store root"):
            call()


@pytest.mark.parametrize(("url", "root"), [("namenode:9870", "/data"), ("http://nn:9870", "data")])
def test_the_store_refuses_a_bad_url_or_a_relative_root(url, root):
    with pytest.raises(StorageError):
        WebHDFSStore(url, root)


def test_an_unreachable_namenode_is_a_storage_error_naming_it_and_the_path():
    store = WebHDFSStore("http://127.0.0.1:1", "/data/recsys")  # connection refused at once
    with pytest.raises(StorageError, match="not reachable") as info:
        store.exists("registry/two_tower.json")
    assert "webhdfs://127.0.0.1:1/data/recsys/registry/two_tower.json" in str(info.value)
    assert "http://127.0.0.1:1" in str(info.value)
    with pytest.raises(StorageError, match="not reachable"):
        store.read_bytes("registry/two_tower.json")
