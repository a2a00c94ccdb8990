"""The process twin's bookkeeping, without its services: `visrec cluster` finds the cluster from a shell
that sourced its cluster.env, `status` says which component stopped, and `down` ends every process of a
component, including the children of a leader that was killed. (The services themselves: make
cluster-test.)"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from visrec.app.cluster import ClusterError, LocalCluster, Ports, parse_env, port_free, port_open

pytestmark = pytest.mark.unit


def _visrec(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "visrec", *args], env=env, capture_output=True, text=True, timeout=120
    )


def _sourced(cluster: LocalCluster, home: Path) -> dict[str, str]:
    """The environment of a shell that ran `set -a; . cluster.env; set +a` (from another folder)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("VISREC_", "AIRFLOW"))}
    return {**base, "VISREC_HOME": str(home), **parse_env(cluster.env_file().read_text())}


@pytest.fixture
def twin(tmp_path):
    """A cluster folder whose "redis" is a shell with a child of its own (a stand-in process)."""
    cluster = LocalCluster(tmp_path / "home" / "cluster")
    cluster.root.mkdir(parents=True)
    cluster._write_env({"VISREC_TOP_K": "7"})  # noqa: SLF001 (what `up` writes)
    cluster._start("redis", ["sh", "-c", "sleep 300 & wait"])  # noqa: SLF001
    yield cluster
    cluster.down()


def test_the_env_file_round_trips_quoted_values(twin):
    env = parse_env(twin.env_file().read_text())
    assert env["VISREC_TOP_K"] == "7" and env["VISREC_CLUSTER_DIR"] == str(twin.root)
    assert env["AIRFLOW_CONN_VISREC_S3"].startswith('{"conn_type": "aws"')  # spaces and quotes survive
    assert (twin.env_file().stat().st_mode & 0o777) == 0o600  # it holds the secrets
    assert set(env) >= {"AIRFLOW__API__SECRET_KEY", "REDIS_PASSWORD", "POSTGRES_PASSWORD"}
    again = LocalCluster(twin.root)
    again._write_env({"VISREC_SEED": "3"})  # noqa: SLF001 (a later `up`: keeps secrets and settings)
    kept = parse_env(again.env_file().read_text())
    assert kept["AIRFLOW__API__SECRET_KEY"] == env["AIRFLOW__API__SECRET_KEY"]
    assert (kept["VISREC_TOP_K"], kept["VISREC_SEED"]) == ("7", "3")


def test_status_and_down_find_the_cluster_from_a_sourced_shell(twin, tmp_path):
    env = _sourced(twin, twin.root / "visrec")  # cluster.env moves VISREC_HOME under the cluster folder
    status = _visrec(env, "cluster", "status")
    assert status.returncode == 0, status.stderr
    assert "redis" in status.stdout and "running" in status.stdout and "never started" not in status.stdout
    down = _visrec(env, "cluster", "down")
    assert "stopped: redis" in down.stdout, down.stdout + down.stderr
    assert twin.processes() == []
    assert not (twin.root / "visrec" / "cluster").exists()


def test_down_ends_the_children_of_a_killed_leader(twin):
    time.sleep(0.5)
    leader = twin.pids["redis"]
    children = [p for p in twin.processes() if p != leader]
    assert children, "the stand-in has a child"
    os.kill(leader, signal.SIGKILL)
    time.sleep(0.3)
    assert not twin.alive("redis") and set(children) <= set(twin.processes())
    status = twin.status()
    assert status == {"redis": "stopped"}
    twin.down()
    assert twin.processes() == []


def test_a_service_that_dies_at_start_says_why_in_its_error(tmp_path):
    cluster = LocalCluster(tmp_path / "cluster")
    dies = ["sh", "-c", "echo starting; echo 'OSError: [Errno 98] Address already in use'; exit 1"]
    cluster._start("s3", dies)  # noqa: SLF001
    with pytest.raises(ClusterError) as failed:
        cluster._wait_port("s3", cluster.ports.s3, timeout=30)  # noqa: SLF001
    message = str(failed.value)
    assert f"s3 did not start on 127.0.0.1:{cluster.ports.s3}" in message
    assert "Address already in use" in message and "starting" in message  # the log's end, quoted


def test_the_default_ports_lie_below_linuxs_ephemeral_range():
    # An outgoing connection's local port comes from 32768-60999; a service must not need one of them.
    assert Ports().base + Ports.count <= 32768


def test_a_port_a_connection_holds_is_not_free_though_nothing_listens_there():
    listener = socket.create_server(("127.0.0.1", 0))
    with socket.socket() as client:
        client.bind(("127.0.0.1", 0))
        held = client.getsockname()[1]
        client.connect(listener.getsockname())
        assert not port_open(held) and not port_free(held)
    listener.close()
    with socket.socket() as probe:  # a port nobody holds is free
        probe.bind(("127.0.0.1", 0))
        unheld = probe.getsockname()[1]
    assert port_free(unheld)


def test_up_names_a_taken_port_before_it_starts_anything(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as held:
        port = held.getsockname()[1]
        cluster = LocalCluster(tmp_path / "cluster", Ports(port - 2))  # the S3 server's port is taken
        with pytest.raises(ClusterError, match="of 127.0.0.1 are in use.*--port-base") as refused:
            cluster.up({})
    assert str(port) in str(refused.value).split(" of ")[0]
    assert cluster.pids == {} and cluster.processes() == []
