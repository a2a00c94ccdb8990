"""Shared fixtures (a temporary VISREC_HOME, a real S3 server on 127.0.0.1, one Spark session, one
trained image model) and the test tiers.

Tiers, by cost (``pytest -m <tier>``; registered in pyproject.toml):

- ``unit``: no Spark, no trained model, no DAG run; the edit-test loop (``make test-fast``).
- ``integration``: real components (Spark, S3, MLflow, spark-submit, small trainings).
- ``e2e``: whole DAG runs through Airflow and what reads their lake.
- ``backend``: what differs between Keras backends (train steps, save/load); ``make test-jax`` runs
  these again under JAX. A ``backend`` test is also in one of the tiers above.
- ``cluster``: cluster mode as deployed (``make cluster-test`` only).

A test without a tier mark gets the tier of the costliest fixture it uses (``FIXTURE_TIERS``: Spark,
the S3 server and the trained image model are ``integration``, the nightly DAG run is ``e2e``) or of
its parameters (``PARAM_TIERS``: a test run on the Spark engine or on the S3 lake), else ``unit``.

Under pytest-xdist (``make test`` runs three workers on two cores: the Python-bound phases, Airflow and
subprocess waits leave a core idle that a third worker fills; measured 425 s against 471 s with two),
each module is one unit of work, so a module's fixtures are built once, and the image-model modules
are one unit with the session's trained model (:func:`vision_shop`); units start costliest first
(``COSTLIEST_FIRST``), and a worker gets its next unit only when it is on its last test. The grouping is this file's own scheduler, not ``--dist loadgroup``: with
pytest 9.2, loadgroup silently distributes grouped tests one by one (pytest-dev/pytest-xdist#1386).
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Several workers on two cores: one thread each for TensorFlow and BLAS, so they do not oversubscribe
    # (set before either library starts its thread pools).
    for name in (
        "TF_NUM_INTRAOP_THREADS",
        "TF_NUM_INTEROP_THREADS",
        "OMP_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
    ):
        os.environ.setdefault(name, "1")

from visrec.settings import Settings
from visrec.store.lake import Lake

REPO = Path(__file__).resolve().parents[1]
HM_SAMPLE = Path(os.environ.get("VISREC_HM_SAMPLE", REPO.parent / "shared" / "data" / "hm-sample"))
TIERS = ("unit", "integration", "e2e")
PARAM_TIERS = {"spark": "integration", "s3": "integration"}
# Modules whose tests share the session's trained image model: one unit of work (one xdist worker).
VISION_MODULES = {"test_vision", "test_gan", "test_photos"}
# Units of work by their cost in a run on several workers (the rest follow in file order).
COSTLIEST_FIRST = [
    "test_pipeline",
    "vision",
    "test_ingest",
    "test_recommenders",
    "test_docs",
    "test_backends",
]
FIXTURE_TIERS = {
    "nightly": "e2e",
    "spark": "integration",
    "s3_endpoint": "integration",
    "vision_shop": "integration",
    "photo_shop": "integration",
    # Module fixtures that generate and ingest a shop, or train on one (test_recommenders, test_ingest).
    "shop": "integration",
    "dirty": "integration",
}


def pytest_itemcollected(item):
    """Each test's tier, unless marked: that of the costliest fixture or parameter it uses."""
    if not any(item.get_closest_marker(t) for t in (*TIERS, "cluster")):
        used = {FIXTURE_TIERS.get(f) for f in getattr(item, "fixturenames", ())}
        params = getattr(getattr(item, "callspec", None), "params", {})
        used |= {PARAM_TIERS.get(v) for v in params.values() if isinstance(v, str)}
        tier = next((t for t in reversed(TIERS) if t in used), "unit")
        item.add_marker(getattr(pytest.mark, tier))


def work_unit(nodeid: str) -> str:
    """The xdist unit of work of a test: its module, the image-model modules together."""
    module = nodeid.split("::", 1)[0].rsplit("/", 1)[-1].removesuffix(".py")
    return "vision" if module in VISION_MODULES else module


def pytest_collection_modifyitems(config, items):
    # Costliest units first, so that the workers end together (a stable sort: the order within a
    # module stays as written).
    rank = {unit: n for n, unit in enumerate(COSTLIEST_FIRST)}
    items.sort(key=lambda item: rank.get(work_unit(item.nodeid), len(rank)))


def pytest_xdist_make_scheduler(config, log):
    """Whole modules per worker (see the module docstring)."""
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

        def _reschedule(self, node) -> None:
            # The next unit goes to a worker on its last test (which it holds until more work or the
            # end arrives: the next test decides its fixtures' teardown), not to one with two left
            # (xdist's default): a unit queued behind a long test waited while other workers idled
            # (the docs tutorial behind the DAG's last tests: 3 minutes on the critical path).
            if not node.shutting_down and self.workqueue and self._pending_of(self.assigned_work[node]) > 1:
                return
            super()._reschedule(node)

    config.option.loadscopereorder = False  # keep COSTLIEST_FIRST's order
    return ModuleScheduling(config, log)


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


VISION_DAYS = ["2026-11-01", "2026-11-02", "2026-11-03"]


@dataclass
class VisionShop:
    """The session's shop with a trained image model (see :func:`vision_shop`)."""

    settings: Settings
    lake: Lake
    result: Any  # the CNNResult of the training
    model: Any  # the trained ImageClassifier (registered as visrec-cnn/1)


@pytest.fixture(scope="session")
def photo_shop(tmp_path_factory):
    """A 400-item shop of 300 users over 3 days with corrupt input (3%) and shoppers' uploads (20% of
    users upload, 15% only upload), every day ingested (events, features, the last day's images, each
    day's uploads); returns ``(settings, lake)``."""
    from visrec.devdata.synth import ShopConfig, generate_shop
    from visrec.ingest.day import ingest_days
    from visrec.ingest.user_photos import ingest_user_photos

    settings = Settings(home=tmp_path_factory.mktemp("photo-shop"), error_budget=0.2)
    lake = Lake.from_settings(settings)
    config = ShopConfig(
        users=300, items=400, days=3, seed=11, corrupt_rate=0.03, uploader_share=0.2, upload_only_share=0.15
    )
    generate_shop(config, lake)
    ingest_days(settings, VISION_DAYS, lake=lake)  # in one pass, the images for the last day
    for ds in VISION_DAYS:
        ingest_user_photos(settings, lake, ds)
    return settings, lake


@pytest.fixture(scope="session")
def vision_shop(photo_shop) -> VisionShop:
    """:func:`photo_shop` with the image model trained on its last day (visrec-cnn/1), the catalog
    embedded and its similar items built."""
    from visrec.vision.embed import build_similar_items, embed_items, load_cnn
    from visrec.vision.train import CNNConfig, train_cnn

    settings, lake = photo_shop
    ds = VISION_DAYS[-1]
    # Trained once for every test that needs a model that has learned: the nightly default's epochs on
    # 400 items (about 35 s here, one worker alone) reach 0.9+ held-out accuracy and find shoppers' photos.
    result = train_cnn(
        settings,
        ds,
        lake=lake,
        config=CNNConfig.from_settings(settings, epochs=30, patience=30, max_minutes=None),
    )
    model, version = load_cnn()
    embed_items(settings, ds, lake, model, version)
    build_similar_items(lake, ds, k=5)
    return VisionShop(settings, lake, result, model)


@pytest.fixture(autouse=True)
def _mlflow_of_the_vision_shop(request):
    """Point MLflow at the vision shop's registry for each test that uses it: other tests point it
    at their own."""
    if "vision_shop" in request.fixturenames:
        from visrec.mlops.tracking import use_tracking

        use_tracking(request.getfixturevalue("vision_shop").settings)
