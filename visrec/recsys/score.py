"""Batch scoring of every user into the ``recommendations`` table: the champion's scores, photo
evidence, generated looks' nearest items, popularity for users without history, business rules.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.sparse as sp

from visrec.errors import VisrecError
from visrec.ingest.features import interactions_current
from visrec.mlops import registry
from visrec.recsys.baselines import ItemCooccurrence, PopularityCounts, Recommender, SegmentPopularity
from visrec.recsys.data import TrainData, full_data, item_categories, purchased_matrix, snapshot_data
from visrec.recsys.ranker import CandidateRanker
from visrec.recsys.rules import cap_per_category
from visrec.recsys.train import MODEL_NAME, FactorScorer, MFConfig, champion_scorer, serving
from visrec.recsys.train_ranker import champion_ranker, ranker_on
from visrec.settings import Settings
from visrec.store.forgotten import forgotten_users
from visrec.store.lake import Lake
from visrec.store.schemas import RECOMMENDATIONS
from visrec.store.tables import in_shard, item_embeddings, load_events, photo_profiles

log = logging.getLogger(__name__)


def score_all_users(
    model: Recommender,
    data: TrainData,
    purchased: sp.csr_matrix,
    categories: list[str],
    *,
    k: int = 20,
    max_per_category: int | None = None,
    exclude: list[str] | None = None,
    model_version: str = "",
    source: str = "mf",
    reason: str | list[str] = "model",
    chunk: int = 2048,
) -> pa.Table:
    """Top ``k`` for every user in chunks of ``chunk`` users: already-bought and excluded items
    filtered, at most ``max_per_category`` items of one category per list (greedy over 3k
    candidates). A user's list depends on that user alone, not on the others scored with it.
    ``reason``: each row's ``reason`` (one for all, or one per user of ``data``); a model that gives
    its own per item (``recommend_with_reasons``: the ranker's proposing generator) overrides it."""
    item_index = {i: n for n, i in enumerate(data.item_ids)}
    filter_items = np.array([item_index[i] for i in (exclude or []) if i in item_index], dtype=np.int64)
    cats = np.array(categories)
    users_out, ranks, items_out, scores_out, reasons_out = [], [], [], [], []
    per_user = [reason] * data.n_users if isinstance(reason, str) else list(reason)
    explains = hasattr(model, "recommend_with_reasons")

    def pick(
        ids: np.ndarray, scores: np.ndarray, why: np.ndarray
    ) -> tuple[list[int], list[float], list[str]]:
        positions = cap_per_category(ids, cats, k, max_per_category)
        return (
            [int(ids[p]) for p in positions],
            [float(scores[p]) for p in positions],
            [str(why[p]) for p in positions],
        )

    for start in range(0, data.n_users, chunk):
        users = np.arange(start, min(start + chunk, data.n_users))
        picked: dict[int, tuple[list[int], list[float], list[str]]] = {}
        todo, depth = users, k if max_per_category is None else min(3 * k, data.n_items)
        # The category cap can skip many candidates: users left short are asked again, deeper.
        while len(todo):
            asked = model.recommend_with_reasons if explains else model.recommend
            answer = asked(
                todo, purchased, N=depth, filter_already_liked_items=True, filter_items=filter_items
            )
            ids, scores = answer[0], answer[1]
            short = []
            for row, user in enumerate(todo):
                why = answer[2][row] if explains else np.full(depth, per_user[user], object)
                picked[user] = pick(ids[row], scores[row], why)
                if len(picked[user][0]) < k and depth < data.n_items and ids[row, -1] >= 0:
                    short.append(user)
            todo, depth = np.array(short, dtype=np.int64), min(4 * depth, data.n_items)
        for user in users:
            chosen, chosen_scores, chosen_reasons = picked[user]
            users_out.extend([data.user_ids[user]] * len(chosen))
            ranks.extend(range(1, len(chosen) + 1))
            items_out.extend(data.item_ids[i] for i in chosen)
            scores_out.extend(chosen_scores)
            reasons_out.extend(chosen_reasons)
    return pa.table(
        {
            "user_id": users_out,
            "rank": pa.array(ranks, pa.int16()),
            "item_id": items_out,
            "score": pa.array(scores_out, pa.float32()),
            "source": [source] * len(users_out),
            "reason": pa.array(reasons_out, pa.string()),
            "model_version": [model_version] * len(users_out),
        }
    )


class PhotoBlend(Recommender):
    """Photo evidence beside behaviour: per user, ``z(base) + weight * z(photo similarity)``, each score
    standardised over the user's catalog; users without photos keep the base scores unchanged, and
    without a base (``None``: users whose only signal is uploads) the photo similarity alone ranks."""

    def __init__(
        self,
        base: Recommender | None,
        photo_vectors: np.ndarray,
        has_photos: np.ndarray,
        item_features: np.ndarray,
        weight: float,
    ):
        # Float64: standardising amplifies rounding where an item's similarities are close (an image
        # model early in training), and float32 sums in another order (a Spark task's BLAS runs on one
        # thread) then differ from one deployment to another in their fifth digit.
        self.base, self.has_photos, self.weight = base, has_photos, weight
        self.photo_vectors = photo_vectors.astype(np.float64)
        self.item_features = item_features.astype(np.float64)

    def fit(self, data: TrainData) -> PhotoBlend:
        return self

    @staticmethod
    def _z(x: np.ndarray) -> np.ndarray:
        finite = np.isfinite(x)
        safe = np.where(finite, x, np.nan)
        mean, std = np.nanmean(safe, axis=1, keepdims=True), np.nanstd(safe, axis=1, keepdims=True)
        return np.where(finite, (x - mean) / (std + 1e-9), -np.inf)

    def score(self, userids: np.ndarray) -> np.ndarray:
        visual = self.photo_vectors[userids] @ self.item_features.T
        if self.base is None:
            return visual
        out = self.base.score(userids).astype(np.float32)
        rows = self.has_photos[userids]
        if rows.any():
            blend = self._z(out[rows].astype(np.float64)) + self.weight * self._z(visual[rows])
            out[rows] = blend.astype(np.float32)
        return out


@dataclass
class ScoreSummary:
    """What a scoring run wrote (from the rows, or summed over the parts Spark tasks wrote)."""

    rows: int = 0
    users: int = 0
    sources: dict[str, int] = field(default_factory=dict)
    model_versions: list[str] = field(default_factory=list)
    # Bytes the Spark tasks sent back to the driver (counts, part names, summaries); 0 in one process.
    collected_bytes: int = field(default=0, compare=False)

    @classmethod
    def of(cls, table: pa.Table) -> ScoreSummary:
        from collections import Counter

        return cls(
            rows=table.num_rows,
            users=len(set(table.column("user_id").to_pylist())),
            sources=dict(Counter(table.column("source").to_pylist())),
            model_versions=sorted(set(table.column("model_version").to_pylist())),
        )

    @classmethod
    def total(cls, parts: list[ScoredPart]) -> ScoreSummary:
        """Each user is in exactly one part, so users add up."""
        out = cls()
        for part in parts:
            out.rows += part.summary.rows
            out.users += part.summary.users
            for source, n in part.summary.sources.items():
                out.sources[source] = out.sources.get(source, 0) + n
            out.model_versions = sorted(set(out.model_versions) | set(part.summary.model_versions))
            out.collected_bytes += part.summary.collected_bytes
        return out


@dataclass
class ScoredPart:
    """One file a Spark task wrote into the partition's version, with what it holds."""

    name: str
    rows: int
    summary: ScoreSummary


class _RankerRows(Recommender):
    """The served ranker for one group of users: the group's rows are rows ``index`` of the data its
    generators were fitted on, and ``purchased`` (that data's) is what it filters."""

    def __init__(self, ranker: CandidateRanker, index: np.ndarray, purchased: sp.csr_matrix):
        self.ranker, self.index, self.purchased = ranker, index, purchased

    def recommend_with_reasons(
        self, userids, user_items, N=10, filter_already_liked_items=True, filter_items=None
    ):
        rows = self.index[np.asarray(userids, np.int64)]
        return self.ranker.recommend_with_reasons(
            rows, self.purchased, N, filter_already_liked_items, filter_items
        )

    def score(self, userids: np.ndarray) -> np.ndarray:
        return self.ranker.score(self.index[np.asarray(userids, np.int64)])

    def recommend(self, userids, user_items, N=10, filter_already_liked_items=True, filter_items=None):
        ids, scores, _ = self.recommend_with_reasons(
            userids, user_items, N, filter_already_liked_items, filter_items
        )
        return ids, scores


@dataclass
class ScoreGroup:
    """Scoring one group of users (one model, one ``source``) of one shard. ``looks``: the generated
    looks of this group's users, when generated items may widen their lists."""

    model: Recommender
    data: TrainData
    purchased: sp.csr_matrix
    categories: list[str]
    k: int
    max_per_category: int | None
    exclude: list[str]
    version: str
    source: str
    reason: str | list[str] = "model"  # per row of ``recommendations``: see score_all_users
    looks: pa.Table | None = None
    looks_version: str = ""
    slots: int = 0

    CHUNK = 2048  # users per top-K batch

    def run(self) -> pa.Table:
        """The rows of ``recommendations`` for the group's users."""
        table = score_all_users(
            self.model,
            self.data,
            self.purchased,
            self.categories,
            k=self.k,
            max_per_category=self.max_per_category,
            exclude=self.exclude,
            model_version=self.version,
            source=self.source,
            reason=self.reason,
            chunk=self.CHUNK,
        )
        if self.looks is not None and self.looks.num_rows and table.num_rows:
            table = add_generated_candidates(
                table,
                self.looks,
                self.model,
                self.data,
                self.purchased,
                self.categories,
                slots=self.slots,
                max_per_category=self.max_per_category,
                exclude=set(self.exclude),
                version=f"{self.version}+{self.looks_version}",
            )
        return table


@dataclass(frozen=True)
class ScorerRef:
    """Where Spark tasks load the recommender from, so that the driver never holds it: a registered
    ``visrec-mf`` version, or a saved ``factors.npz`` (``path``; ``version`` then only names it)."""

    version: str | None = None
    path: str | None = None

    def load(self, settings: Settings) -> FactorScorer | None:
        if self.path:
            return FactorScorer.load(self.path, version=self.version or "")
        return champion_scorer(settings, version=self.version)


@dataclass
class ShardCounts:
    """What one shard's users add to every shard's lists, summed over the shards on the driver: the
    popularity counts, and where a ranker serves, the item co-occurrence its generators and catalog
    features are fitted from (items x items: a catalog within EASE's limit keeps it small)."""

    popularity: PopularityCounts
    cooccurrence: ItemCooccurrence | None = None

    def __add__(self, other: ShardCounts) -> ShardCounts:
        both = self.cooccurrence is not None and other.cooccurrence is not None
        return ShardCounts(
            self.popularity + other.popularity, self.cooccurrence + other.cooccurrence if both else None
        )


@dataclass
class _Scoring:
    """What every shard's scoring needs (small and picklable: a Spark task's whole input)."""

    settings: Settings
    ds: str
    scorer: FactorScorer | ScorerRef | None
    exclude: list[str]
    looks_version: str
    features_ds: str
    max_per_category: int | None
    # Read the users' (user, item) pairs from the day's ``interactions`` snapshot (current: see
    # ``interactions_current``), not their whole event history.
    from_snapshot: bool = False
    # The champion ranker (generators unfitted: small) and its version, when it serves users with
    # history instead of the factor model; each job fits its generators on the job's data, or on every
    # shard's summed statistics (``ShardCounts.cooccurrence``) when it scores one shard.
    ranker: CandidateRanker | None = None
    ranker_version: str = ""

    def jobs(
        self,
        lake: Lake,
        shard: tuple[int, int],
        totals: ShardCounts | None = None,
        counts_only: bool = False,
    ) -> tuple[list[ScoreGroup], ShardCounts]:
        """The scoring groups of the users of ``shard`` (``(s, n)``), everything read from the lake for
        those users only; popularity lists (and the ranker's generators) from ``totals`` (every shard's
        counts summed), or from this shard's own data when None (one shard: everyone). Also returns
        this shard's counts (only them, and no groups, with ``counts_only``: the first of two jobs)."""
        settings, ds = self.settings, self.ds
        if self.from_snapshot:
            data, bought = snapshot_data(lake, ds, shard)
        else:
            events = load_events(lake, ds, shard)
            data = full_data(settings, lake, ds, events)
            bought = purchased_matrix(events, data)
            del events
        photo_users, photo_vectors, photo_version = photo_profiles(lake, ds, shard)
        _, _, embedding_version = item_embeddings(lake, ds)
        if photo_users and photo_version not in embedding_version.split(","):
            log.warning(
                "user photos of %s were embedded with %s, the catalog with %s: photos not used",
                ds,
                photo_version,
                embedding_version,
            )
            photo_users = []
        forgotten = forgotten_users(lake)
        # Every user with events or photos, minus the forgotten; upload-only users get empty history rows.
        extra = sorted(set(photo_users) - set(data.user_ids))
        user_ids = data.user_ids + extra
        rows = np.array([u not in forgotten for u in user_ids], bool)
        empty = sp.csr_matrix((len(extra), data.n_items), dtype=np.float32)
        everyone = TrainData(
            sp.vstack([data.user_items, empty]).tocsr()[rows],
            data.item_features,
            sp.vstack([data.recent_user_items, empty]).tocsr()[rows],
            [u for u, keep in zip(user_ids, rows, strict=True) if keep],
            data.item_ids,
        )
        purchased = sp.vstack([bought, empty]).tocsr()[rows]
        vectors = np.zeros((everyone.n_users, data.item_features.shape[1]), np.float32)
        has_photos = np.zeros(everyone.n_users, bool)
        if photo_users:
            position = {u: k for k, u in enumerate(everyone.user_ids)}
            for u, vector in zip(photo_users, photo_vectors, strict=True):
                if u in position:
                    vectors[position[u]], has_photos[position[u]] = vector, True
        categories = item_categories(lake, ds, data.item_ids)
        # Segments come from the day's profiles; without them every unknown user gets the global list.
        profiles = (
            in_shard(lake.read_table("user_profiles", self.features_ds).select(["user_id", "segment"]), shard)
            if lake.manifest("user_profiles", self.features_ds) is not None
            else None
        )
        segment_of = (
            dict(
                zip(
                    profiles.column("user_id").to_pylist(),
                    profiles.column("segment").to_pylist(),
                    strict=True,
                )
            )
            if profiles is not None
            else {}
        )
        segments = [segment_of.get(u) for u in everyone.user_ids]
        counts = ShardCounts(
            PopularityCounts.of(everyone, segments),
            ItemCooccurrence.of(everyone) if counts_only and self.ranker is not None else None,
        )
        if counts_only:
            return [], counts
        scorer = self.scorer.load(settings) if isinstance(self.scorer, ScorerRef) else self.scorer
        popular = SegmentPopularity(segments).fit_counts((totals or counts).popularity)
        aligned = scorer.aligned(everyone.user_ids, everyone.item_ids) if scorer is not None else None
        known = aligned.known_users if aligned is not None else np.zeros(everyone.n_users, bool)
        model_version = scorer.version if scorer is not None else "none"
        weight = settings.photo_weight
        looks = None
        if lake.manifest("generated_looks", ds) is not None:
            looks = in_shard(lake.read_table("generated_looks", ds), shard)
        # Generated looks reach a user through the recommender's visual taste: none without a champion.
        widen = (
            looks is not None
            and looks.num_rows > 0
            and settings.generated_slots > 0
            and (scorer is not None or self.ranker is not None)
        )
        ranked, list_version = None, model_version
        if self.ranker is not None:  # it ranks everyone with history (photos do not enter its lists)
            shared = totals.cooccurrence if totals is not None else None
            ranked = ranker_on(copy.deepcopy(self.ranker), everyone, lake, ds, categories, shared)
            known = np.diff(everyone.user_items.indptr) > 0
            list_version = self.ranker_version
        groups = (
            (known, aligned, "mf", list_version),
            (~known & has_photos, None, "photo", f"{model_version}+{photo_version}"),
            (~known & ~has_photos, popular, "popular", "popularity-by-segment"),
        )
        jobs = []
        for mask, base, source, version in groups:
            if not mask.any():
                continue
            index = np.flatnonzero(mask)
            sub = TrainData(
                everyone.user_items[index],
                data.item_features,
                None,
                [everyone.user_ids[i] for i in index],
                data.item_ids,
            )
            if source == "popular":
                model = popular.for_users([segments[i] for i in index])
                reason = [f"popular:{segments[i]}" if segments[i] else "popular" for i in index]
            elif source == "mf" and ranked is not None:
                model, reason = _RankerRows(ranked, index, purchased), "ranker"
            else:
                reason = (
                    "photos"
                    if source == "photo"
                    else ["model+photos" if has_photos[i] else "model" for i in index]
                )
                base = base.aligned(sub.user_ids, sub.item_ids) if base is not None else None
                model = PhotoBlend(base, vectors[index], has_photos[index], data.item_features, weight)
            jobs.append(
                ScoreGroup(
                    model,
                    sub,
                    purchased[index],
                    categories,
                    k=settings.top_k,
                    max_per_category=self.max_per_category,
                    exclude=self.exclude,
                    version=version,
                    source=source,
                    reason=reason,
                    looks=looks if widen and source == "mf" else None,
                    looks_version=self.looks_version,
                    slots=settings.generated_slots,
                )
            )
        return jobs, counts


def score_in_shards(spark, lake: Lake, version: str, scoring: _Scoring, shards: int) -> list[ScoredPart]:
    """Distributed scoring in two Spark jobs of ``shards`` tasks, one per shard of the users (by a hash
    of their ids). Each task reads its users' rows of every input itself and loads the recommender
    itself (a :class:`ScorerRef`), so the driver holds neither. The first job returns each shard's
    popularity counts (items x segments numbers), which the driver sums; in the second each task
    builds its users' lists with those totals and writes its part of the ``recommendations``
    partition's ``version`` straight into the lake, returning only the part's name and a summary.
    Returns the parts, for :meth:`Lake.commit`."""
    import json
    import pickle

    from pyspark.sql import types as T

    uri, endpoint, region, ds = lake.uri, lake.s3_endpoint, lake.s3_region, scoring.ds
    frame = spark.createDataFrame([(s,) for s in range(shards)], "shard int").repartition(shards)

    def counts_of(batches):
        here = Lake(uri, s3_endpoint=endpoint, s3_region=region)
        for batch in batches:
            for shard in batch.column("shard").to_pylist():
                _, counts = scoring.jobs(here, (shard, shards), counts_only=True)
                yield pa.record_batch([pa.array([pickle.dumps(counts)], pa.binary())], ["counts"])

    schema = T.StructType([T.StructField("counts", T.BinaryType())])
    pickled = [r["counts"] for r in frame.mapInArrow(counts_of, schema).collect()]
    totals = [pickle.loads(p) for p in pickled]
    summed = sum(totals[1:], totals[0])

    def write_shard(batches):
        here = Lake(uri, s3_endpoint=endpoint, s3_region=region)
        for batch in batches:
            for shard in batch.column("shard").to_pylist():
                jobs, _ = scoring.jobs(here, (shard, shards), summed)
                if not jobs:
                    continue
                part = pa.concat_tables([job.run() for job in jobs])
                name = here.write_part("recommendations", ds, version, f"part-{shard:05d}", part)
                summary = json.dumps(asdict(ScoreSummary.of(part)))
                yield pa.record_batch([pa.array([name]), pa.array([summary])], ["name", "summary"])

    schema = T.StructType([T.StructField("name", T.StringType()), T.StructField("summary", T.StringType())])
    rows = frame.mapInArrow(write_shard, schema).collect()
    parts = [ScoredPart(r["name"], 0, ScoreSummary(**json.loads(r["summary"]))) for r in rows]
    for part in parts:
        part.rows = part.summary.rows
    if parts:  # what came back to the driver, counted once in the total
        parts[0].summary.collected_bytes = sum(map(len, pickled)) + sum(
            len(r["name"]) + len(r["summary"]) for r in rows
        )
    return sorted(parts, key=lambda p: p.name)


def score_users(
    settings: Settings,
    ds: str,
    *,
    lake: Lake | None = None,
    config: MFConfig | None = None,
    scorer: FactorScorer | ScorerRef | None = None,
    exclude: list[str] | None = None,
    looks_version: str = "visrec-gan",
    features_ds: str | None = None,
    spark=None,
    shards: int = 8,
    serve_ranker: bool = True,
) -> ScoreSummary:
    """Recommendations for every user as of ``ds`` -> ``recommendations``; returns what was written.
    With ``spark``, the users are scored in ``shards`` shards by Spark tasks that read their users'
    inputs and write their parts of the partition themselves (:func:`score_in_shards`): the same rows.
    ``scorer``: the recommender, or where tasks load it from (:class:`ScorerRef`, which keeps the
    model off the driver); the champion when None.

    Users the champion recommender knows: its scores, blended with their photos' visual evidence when
    they uploaded any (``source='mf'``); where ``visrec-ranker`` has a champion (and ``serve_ranker``;
    in Spark shards too, its generators fitted on every shard's summed statistics, unless one of them
    cannot be), every user with history gets the ranker's
    lists instead, each row's ``reason`` the generator that proposed the item; when the day has generated looks for them, real items nearest
    those looks take the last places (``source='generated'``, see ``add_generated_candidates``).
    Users whose only signal is uploads: ranked by how close items look to their photos
    (``source='photo'``). Everyone else: what is popular lately among users of their segment, or
    overall for users without one (``source='popular'``). Forgotten users get nothing."""
    config = config or MFConfig.from_settings(settings)
    lake = lake or Lake.from_settings(settings)
    if scorer is None:
        serve, why = serving(settings)
        champion = registry.champion(MODEL_NAME) if serve == "model" else None
        if champion is not None:
            scorer = ScorerRef(version=f"{MODEL_NAME}/{champion.version}")
        else:
            log.warning(
                "scoring %s with popularity-by-segment lists for everyone: %s", ds, why or "no champion"
            )
    if isinstance(scorer, ScorerRef) and spark is None:
        scorer = scorer.load(settings)
    ranker = champion_ranker(settings) if serve_ranker else None
    if ranker is not None and spark is not None and not ranker[0].fits_shared:
        log.warning(
            "ranker %s has a generator that Spark shards cannot fit from summed statistics: "
            "these shards serve the factor champion (score in one process to serve the ranker)",
            ranker[1],
        )
        ranker = None
    if ranker is not None:
        log.info("scoring %s: users with history get the lists of the ranker %s", ds, ranker[1])
    # The day's pairs are its events' pairs, one row each, unless a day was ingested again after them.
    snapshot = interactions_current(lake, ds)
    log.info("scoring %s from %s", ds, "its interactions snapshot" if snapshot else "the event history")
    scoring = _Scoring(
        settings,
        ds,
        scorer,
        list(exclude or []),
        looks_version,
        features_ds or ds,
        config.max_per_category,
        snapshot,
        *(ranker or (None, "")),
    )
    if spark is None:
        jobs, _ = scoring.jobs(lake, (0, 1))
        table = pa.concat_tables([job.run() for job in jobs]) if jobs else RECOMMENDATIONS.empty_table()
        lake.write_table("recommendations", ds, table)
        summary = ScoreSummary.of(table)
    else:
        version = lake.new_version()
        parts = score_in_shards(spark, lake, version, scoring, shards)
        lake.commit("recommendations", ds, version, [(p.name, p.rows) for p in parts])
        summary = ScoreSummary.total(parts)
    log.info(
        "scored %d users for %s (%s%s): %d rows",
        summary.users,
        ds,
        ", ".join(f"{n} rows {source}" for source, n in sorted(summary.sources.items())),
        f"; {shards} shards on Spark" if spark is not None else "",
        summary.rows,
    )
    return summary


def add_generated_candidates(
    recs: pa.Table,
    looks: pa.Table,
    model: Recommender,
    data: TrainData,
    purchased: sp.csr_matrix,
    categories: list[str],
    *,
    slots: int,
    max_per_category: int | None,
    exclude: set[str],
    version: str,
) -> pa.Table:
    """Widen the lists of users with generated looks (DVBPR's idea): the last ``slots`` places of a
    recommender-made list (``source='mf'``) go to the real items nearest the user's looks, taken round
    robin over the looks (each look's nearest first); items already listed, bought, excluded, unknown
    to ``data`` or over the category cap are skipped. Each is scored by ``model``, the model that made
    the rest of the list, and the list is re-sorted by score, so the table keeps its contract (K rows,
    ranks 1..K, scores non-increasing). Other users' rows are unchanged."""
    from collections import Counter

    frame = recs.to_pandas()
    user_pos = {u: k for k, u in enumerate(data.user_ids)}
    item_pos = {i: k for k, i in enumerate(data.item_ids)}
    nearest: dict[str, list[list[str]]] = {}
    look_rank: dict[str, list[int]] = {}
    for row in sorted(looks.to_pylist(), key=lambda r: (r["user_id"], r["rank"])):
        nearest.setdefault(row["user_id"], []).append(list(row["nearest_item_ids"]))
        look_rank.setdefault(row["user_id"], []).append(row["rank"])
    touched = frame["user_id"].isin(nearest.keys())
    parts, widened = [frame[~touched]], 0
    for user, rows in frame[touched].groupby("user_id", sort=False):
        rows = rows.sort_values("rank")
        if user not in user_pos or (rows["source"] != "mf").any():
            parts.append(rows)
            continue
        u = user_pos[user]
        listed, bought = set(rows["item_id"]), set(purchased[u].indices.tolist())
        per_category = Counter(categories[item_pos[i]] for i in rows["item_id"])
        tail = rows.iloc[max(len(rows) - slots, 0) :]  # the places a generated item may take, last first
        given_up = 0
        scores = model.score(np.array([u]))[0]
        picks: list[tuple[str, float, int]] = []
        depth = max(map(len, nearest[user]))
        candidates = (
            (lst[d], look)
            for d in range(depth)
            for lst, look in zip(nearest[user], look_rank[user], strict=True)
            if d < len(lst)
        )
        for item, look in candidates:
            if given_up == len(tail):
                break
            pos = item_pos.get(item)
            if (
                pos is None
                or item in listed
                or pos in bought
                or item in exclude
                or not np.isfinite(scores[pos])
            ):
                continue
            out_category = categories[item_pos[tail.iloc[len(tail) - 1 - given_up]["item_id"]]]
            if (
                max_per_category is not None
                and categories[pos] != out_category
                and per_category[categories[pos]] >= max_per_category
            ):
                continue
            per_category[out_category] -= 1
            per_category[categories[pos]] += 1
            picks.append((item, float(scores[pos]), look))
            listed.add(item)
            given_up += 1
        if not picks:
            parts.append(rows)
            continue
        keep = rows.iloc[: len(rows) - len(picks)]
        added = pd.DataFrame(
            {
                "user_id": user,
                "rank": 0,
                "item_id": [i for i, _, _ in picks],
                "score": np.array([s for _, s, _ in picks], np.float32),
                "source": "generated",
                "reason": [f"generated_look:{look}" for _, _, look in picks],
                "model_version": version,
            }
        )
        merged = pd.concat([keep, added]).sort_values("score", ascending=False, kind="stable")
        merged["rank"] = np.arange(1, len(merged) + 1)
        parts.append(merged)
        widened += 1
    out = pd.concat(parts).sort_values(["user_id", "rank"], kind="stable")
    log.info("generated looks widened %d users' lists (%d places each at most)", widened, slots)
    return pa.Table.from_pandas(out, schema=recs.schema, preserve_index=False)


def rerank_for_user(settings: Settings, user: str, matches: list, k: int) -> tuple[list, str]:
    """The visually nearest ``matches`` of a photo (objects with ``item_id`` and ``score``) re-ranked
    for ``user`` with the same blend as scoring (:class:`PhotoBlend`): the champion recommender's
    standardised score plus ``VISREC_PHOTO_WEIGHT`` times the standardised visual similarity. Items
    the recommender does not know are dropped. Returns (the best ``k``, the recommender's version)."""
    scorer = champion_scorer(settings)
    if scorer is None:
        raise VisrecError(
            f"no champion recommender ({MODEL_NAME}) yet to re-rank by; run `visrec train mf` or drop --user"
        )
    if user not in set(scorer.user_ids):
        raise VisrecError(f"user {user!r} is unknown to {scorer.version}; drop --user for visual results")
    preference = scorer.aligned([user], [m.item_id for m in matches]).score(np.array([0]))
    visual = np.array([[m.score for m in matches]], np.float32)
    blended = (PhotoBlend._z(preference) + settings.photo_weight * PhotoBlend._z(visual))[0]
    order = [i for i in np.argsort(-blended, kind="stable") if np.isfinite(blended[i])][:k]
    return [matches[i] for i in order], scorer.version
