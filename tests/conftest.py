"""Shared fixtures: temporary VISREC_HOME, and a real S3 server (moto) on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

import pytest

from visrec.settings import Settings
from visrec.store.lake import Lake

REPO = Path(__file__).resolve().parents[1]
HM_SAMPLE = Path(os.environ.get("VISREC_HM_SAMPLE", REPO.parent / "shared" / "data" / "hm-sample"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint():
    """A moto S3 server on 127.0.0.1 for the whole session; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


def make_bucket(endpoint: str) -> str:
    import boto3

    name = f"visrec-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=name)
    return name


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home")


@pytest.fixture(params=["file", "s3"])
def lake(request, tmp_path: Path) -> Lake:
    """The same lake tests run against a local folder and against S3 on 127.0.0.1."""
    if request.param == "file":
        return Lake((tmp_path / "lake").as_uri())
    endpoint = request.getfixturevalue("s3_endpoint")
    return Lake(f"s3://{make_bucket(endpoint)}/lake", s3_endpoint=endpoint)


@pytest.fixture
def hm_sample() -> Path:
    if not (HM_SAMPLE / "transactions.csv").exists():
        pytest.skip(f"hm-sample not found at {HM_SAMPLE} (set VISREC_HM_SAMPLE; a clone has no shared/)")
    return HM_SAMPLE


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    """One local[2] SparkSession for the whole test session."""
    from visrec.store.spark import get_spark

    session = get_spark(Settings(home=tmp_path_factory.mktemp("spark-home")), "visrec-tests")
    yield session
    session.stop()
