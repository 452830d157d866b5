"""The WebHDFS store on a Kerberized HDFS: SPNEGO with a ticket, and refusal without one.

The Kerberized cluster (scripts/hdfs-minicluster.sh start kerberos: Hadoop's MiniKdc, Kerberos RPC,
SPNEGO on WebHDFS, block access tokens, SASL data transfer) also runs the whole store contract
(tests/integration/test_store_contract.py, backend ``webhdfs-kerberos``). These tests fail, never skip,
when it cannot start.
"""

from __future__ import annotations

from datetime import date

import pytest
import requests

from recsys.config import Settings
from recsys.storage import StorageError, open_store
from recsys.storage.webhdfs import WebHDFSStore

pytestmark = [pytest.mark.integration, pytest.mark.hdfs]


def test_the_store_from_the_settings_reads_and_writes_through_spnego(kerberos_ticket, tmp_path):
    settings = Settings.from_env({
        "RECSYS_STORAGE_BACKEND": "webhdfs", "RECSYS_STORAGE_ROOT": "/recsys-test/kerberos-settings",
        "RECSYS_WEBHDFS_URL": kerberos_ticket.webhdfs_url, "RECSYS_WEBHDFS_AUTH": "kerberos",
    })
    store = open_store(settings)
    store.write_bytes("raw/events/dt=2011-01-04/part-0.parquet", b"\x00data")
    store.mark_success("raw/events/dt=2011-01-04")
    assert store.partitions("raw/events") == [date(2011, 1, 4)]
    assert store.read_bytes("raw/events/dt=2011-01-04/part-0.parquet") == b"\x00data"
    local = tmp_path / "v"
    local.mkdir()
    (local / "tables.npz").write_bytes(b"t" * (1024 * 1024 + 3))  # two blocks: block tokens and SASL on
    store.publish_dir(local, "models/two_tower/versions/1")
    store.download_dir("models/two_tower/versions/1", tmp_path / "back")
    assert (tmp_path / "back" / "tables.npz").read_bytes() == b"t" * (1024 * 1024 + 3)


def test_a_client_without_kerberos_is_refused(kerberos_ticket):
    # the ticket exists, but simple authentication does not use it: the NameNode answers 401
    store = WebHDFSStore(kerberos_ticket.webhdfs_url, "/recsys-test/refused", user=kerberos_ticket.user)
    with pytest.raises(StorageError, match="Authentication failure") as info:
        store.exists("raw")
    assert "RECSYS_WEBHDFS_AUTH=kerberos" in str(info.value)
    with pytest.raises(StorageError, match="Authentication failure"):
        store.write_bytes("raw/x", b"x")
    # and no anonymous access through the REST API either
    answer = requests.get(f"{kerberos_ticket.webhdfs_url}/webhdfs/v1/?op=LISTSTATUS&user.name=hdfs", timeout=30)
    assert answer.status_code == 401


def test_a_kerberos_client_without_a_ticket_is_refused_and_told_to_kinit(hdfs_kerberos_cluster, tmp_path, monkeypatch):
    monkeypatch.setenv("KRB5_CONFIG", str(hdfs_kerberos_cluster.krb5_conf))
    monkeypatch.setenv("KRB5CCNAME", f"FILE:{tmp_path / 'empty-cache'}")
    store = WebHDFSStore(hdfs_kerberos_cluster.webhdfs_url, "/recsys-test/no-ticket", auth="kerberos")
    with pytest.raises(StorageError, match="Authentication failure") as info:
        store.list_dir("")
    assert "kinit" in str(info.value)
