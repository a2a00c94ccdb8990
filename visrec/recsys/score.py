"""Batch scoring of every user into the ``recommendations`` table: the champion's scores, photo
evidence, generated looks' nearest items, popularity for users without history, business rules.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.sparse as sp

from visrec.errors import VisrecError
from visrec.recsys.baselines import Recommender
from visrec.recsys.data import TrainData, full_data, item_categories, purchased_matrix
from visrec.recsys.rules import cap_per_category
from visrec.recsys.train import MODEL_NAME, FactorScorer, MFConfig, champion_scorer, serving
from visrec.settings import Settings
from visrec.store.forgotten import forgotten_users
from visrec.store.lake import Lake
from visrec.store.schemas import RECOMMENDATIONS
from visrec.store.tables import item_embeddings, load_events, photo_profiles

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
    chunk: int = 2048,
    rows: range | None = None,
) -> pa.Table:
    """Top ``k`` for every user (or the users ``rows``, a range starting at a multiple of ``chunk``)
    in chunks of ``chunk`` users: already-bought and excluded items filtered, at most
    ``max_per_category`` items of one category per list (greedy over 3k candidates). A user's list
    does not depend on which range it was scored in."""
    item_index = {i: n for n, i in enumerate(data.item_ids)}
    filter_items = np.array([item_index[i] for i in (exclude or []) if i in item_index], dtype=np.int64)
    cats = np.array(categories)
    users_out, ranks, items_out, scores_out = [], [], [], []

    def pick(ids: np.ndarray, scores: np.ndarray) -> tuple[list[int], list[float]]:
        positions = cap_per_category(ids, cats, k, max_per_category)
        return [int(ids[p]) for p in positions], [float(scores[p]) for p in positions]

    rows = rows if rows is not None else range(data.n_users)
    for start in range(rows.start, rows.stop, chunk):
        users = np.arange(start, min(start + chunk, rows.stop))
        picked: dict[int, tuple[list[int], list[float]]] = {}
        todo, depth = users, k if max_per_category is None else min(3 * k, data.n_items)
        # The category cap can skip many candidates: users left short are asked again, deeper.
        while len(todo):
            ids, scores = model.recommend(
                todo, purchased, N=depth, filter_already_liked_items=True, filter_items=filter_items
            )
            short = []
            for row, user in enumerate(todo):
                picked[user] = pick(ids[row], scores[row])
                if len(picked[user][0]) < k and depth < data.n_items and ids[row, -1] >= 0:
                    short.append(user)
            todo, depth = np.array(short, dtype=np.int64), min(4 * depth, data.n_items)
        for user in users:
            chosen, chosen_scores = picked[user]
            users_out.extend([data.user_ids[user]] * len(chosen))
            ranks.extend(range(1, len(chosen) + 1))
            items_out.extend(data.item_ids[i] for i in chosen)
            scores_out.extend(chosen_scores)
    return pa.table(
        {
            "user_id": users_out,
            "rank": pa.array(ranks, pa.int16()),
            "item_id": items_out,
            "score": pa.array(scores_out, pa.float32()),
            "source": [source] * len(users_out),
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
        self.base, self.photo_vectors, self.has_photos = base, photo_vectors, has_photos
        self.item_features, self.weight = item_features, weight

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
            out[rows] = self._z(out[rows]) + self.weight * self._z(visual[rows])
        return out


@dataclass
class ScoreSummary:
    """What a scoring run wrote (from the rows, or summed over the parts Spark tasks wrote)."""

    rows: int = 0
    users: int = 0
    sources: dict[str, int] = field(default_factory=dict)
    model_versions: list[str] = field(default_factory=list)

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
        return out


@dataclass
class ScoredPart:
    """One file a Spark task wrote into the partition's version, with what it holds."""

    name: str
    rows: int
    summary: ScoreSummary


@dataclass
class ScoreGroup:
    """Scoring one group of users (one model, one ``source``), whole or one range of users at a time:
    what a Spark task receives (picklable) in distributed scoring. ``looks``: the generated looks of
    this group's users, when generated items may widen their lists."""

    model: Recommender
    data: TrainData
    purchased: sp.csr_matrix
    categories: list[str]
    k: int
    max_per_category: int | None
    exclude: list[str]
    version: str
    source: str
    looks: pa.Table | None = None
    looks_version: str = ""
    slots: int = 0

    CHUNK = 2048  # users per top-K batch; ranges of users start at multiples of it

    def run(self, rows: range | None = None) -> pa.Table:
        """The rows of ``recommendations`` for the users ``rows`` (all by default)."""
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
            chunk=self.CHUNK,
            rows=rows,
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


def score_in_shards(
    spark, lake: Lake, ds: str, version: str, groups: list[ScoreGroup], shards: int
) -> list[ScoredPart]:
    """Distributed scoring: each group's users cut into ``shards`` ranges (whole chunks), one Spark
    task per range; each task scores its users and writes its part of the ``recommendations``
    partition's ``version`` straight into the lake, returning only the part's name and row count (the
    rows never pass through the driver). Returns the parts, for :meth:`Lake.commit`."""
    import json
    import pickle

    from pyspark.sql import types as T

    uri, endpoint, region = lake.uri, lake.s3_endpoint, lake.s3_region
    jobs = spark.sparkContext.broadcast(pickle.dumps(groups))
    tasks = []
    for g, group in enumerate(groups):
        per_shard = -(-group.data.n_users // max(1, shards))
        step = max(ScoreGroup.CHUNK, -(-per_shard // ScoreGroup.CHUNK) * ScoreGroup.CHUNK)
        tasks += [(g, lo, min(lo + step, group.data.n_users)) for lo in range(0, group.data.n_users, step)]

    def run(batches):
        here = Lake(uri, s3_endpoint=endpoint, s3_region=region)
        todo = pickle.loads(jobs.value)
        for batch in batches:
            for g, lo, hi in zip(*(batch.column(n).to_pylist() for n in ("group", "lo", "hi")), strict=True):
                part = todo[g].run(range(lo, hi))
                name = here.write_part("recommendations", ds, version, f"part-{g}-{lo:09d}", part)
                summary = json.dumps(asdict(ScoreSummary.of(part)))
                yield pa.record_batch([pa.array([name]), pa.array([summary])], ["name", "summary"])

    frame = spark.createDataFrame(tasks, "group int, lo long, hi long").repartition(max(1, len(tasks)))
    schema = T.StructType([T.StructField("name", T.StringType()), T.StructField("summary", T.StringType())])
    rows = frame.mapInArrow(run, schema).collect()
    jobs.unpersist()
    parts = [ScoredPart(r["name"], 0, ScoreSummary(**json.loads(r["summary"]))) for r in rows]
    for part in parts:
        part.rows = part.summary.rows
    return sorted(parts, key=lambda p: p.name)


def score_users(
    settings: Settings,
    ds: str,
    *,
    lake: Lake | None = None,
    config: MFConfig | None = None,
    scorer: FactorScorer | None = None,
    exclude: list[str] | None = None,
    looks_version: str = "visrec-gan",
    features_ds: str | None = None,
    spark=None,
    shards: int = 8,
) -> ScoreSummary:
    """Recommendations for every user as of ``ds`` -> ``recommendations``; returns what was written.
    With ``spark``, the users are scored in ``shards`` ranges per group by Spark tasks that write
    their parts of the partition themselves (:func:`score_in_shards`): the same rows.

    Users the champion recommender knows: its scores, blended with their photos' visual evidence when
    they uploaded any (``source='mf'``); when the day has generated looks for them, real items nearest
    those looks take the last places (``source='generated'``, see ``add_generated_candidates``).
    Users whose only signal is uploads: ranked by how close items look to their photos
    (``source='photo'``). Everyone else: what is popular lately among users of their segment, or
    overall for users without one (``source='popular'``). Forgotten users get nothing."""
    from visrec.recsys.baselines import SegmentPopularity

    config = config or MFConfig()
    lake = lake or Lake.from_settings(settings)
    if scorer is None:
        serve, why = serving(settings)
        scorer = champion_scorer(settings) if serve == "model" else None
        if scorer is None:
            log.warning(
                "scoring %s with popularity-by-segment lists for everyone: %s", ds, why or "no champion"
            )
    events = load_events(lake, ds)
    data = full_data(settings, lake, ds, events)
    photo_users, photo_vectors, photo_version = photo_profiles(lake, ds)
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
    rows = np.array([u not in forgotten for u in user_ids])
    empty = sp.csr_matrix((len(extra), data.n_items), dtype=np.float32)
    everyone = TrainData(
        sp.vstack([data.user_items, empty]).tocsr()[rows],
        data.item_features,
        sp.vstack([data.recent_user_items, empty]).tocsr()[rows],
        [u for u, keep in zip(user_ids, rows, strict=True) if keep],
        data.item_ids,
    )
    purchased = sp.vstack([purchased_matrix(events, data), empty]).tocsr()[rows]
    vectors = np.zeros((everyone.n_users, data.item_features.shape[1]), np.float32)
    has_photos = np.zeros(everyone.n_users, bool)
    if photo_users:
        position = {u: k for k, u in enumerate(everyone.user_ids)}
        for u, vector in zip(photo_users, photo_vectors, strict=True):
            if u in position:
                vectors[position[u]], has_photos[position[u]] = vector, True
    categories = item_categories(lake, ds, data.item_ids)
    # Segments come from the day's profiles; without them every unknown user gets the global list.
    features_ds = features_ds or ds
    profiles = (
        lake.read_table("user_profiles", features_ds).select(["user_id", "segment"]).to_pylist()
        if lake.manifest("user_profiles", features_ds) is not None
        else []
    )
    segment_of = {p["user_id"]: p["segment"] for p in profiles}
    segments = [segment_of.get(u) for u in everyone.user_ids]
    popular = SegmentPopularity(segments).fit(everyone)
    aligned = scorer.aligned(everyone.user_ids, everyone.item_ids) if scorer is not None else None
    known = aligned.known_users if aligned is not None else np.zeros(everyone.n_users, bool)
    model_version = scorer.version if scorer is not None else "none"
    weight = settings.photo_weight
    groups = (
        (known, PhotoBlend(aligned, vectors, has_photos, data.item_features, weight), "mf", model_version),
        (
            ~known & has_photos,
            PhotoBlend(None, vectors, has_photos, data.item_features, weight),
            "photo",
            f"{model_version}+{photo_version}",
        ),
        (~known & ~has_photos, popular, "popular", "popularity-by-segment"),
    )
    looks = (
        lake.read_table("generated_looks", ds) if lake.manifest("generated_looks", ds) is not None else None
    )
    # Generated looks reach a user through the recommender's visual taste: none without a champion.
    widen = looks is not None and looks.num_rows > 0 and settings.generated_slots > 0 and scorer is not None
    jobs = []
    for mask, model, source, version in groups:
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
        if isinstance(model, PhotoBlend):
            base = model.base.aligned(sub.user_ids, sub.item_ids) if model.base is not None else None
            model = PhotoBlend(base, vectors[index], has_photos[index], data.item_features, weight)
        elif isinstance(model, SegmentPopularity):
            model = model.for_users([segments[i] for i in index])
        jobs.append(
            ScoreGroup(
                model,
                sub,
                purchased[index],
                categories,
                k=settings.top_k,
                max_per_category=config.max_per_category,
                exclude=list(exclude or []),
                version=version,
                source=source,
                looks=looks if widen and source == "mf" else None,
                looks_version=looks_version,
                slots=settings.generated_slots,
            )
        )
    if spark is None:
        table = pa.concat_tables([job.run() for job in jobs]) if jobs else RECOMMENDATIONS.empty_table()
        lake.write_table("recommendations", ds, table)
        summary = ScoreSummary.of(table)
    else:
        version = lake.new_version()
        parts = score_in_shards(spark, lake, ds, version, jobs, shards=shards)
        lake.commit("recommendations", ds, version, [(p.name, p.rows) for p in parts])
        summary = ScoreSummary.total(parts)
    log.info(
        "scored %d users for %s (%d with photos, %d upload-only%s): %d rows",
        everyone.n_users,
        ds,
        int(has_photos.sum()),
        int((~known & has_photos).sum()),
        f", {shards} shards on Spark" if spark is not None else "",
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
    for row in sorted(looks.to_pylist(), key=lambda r: (r["user_id"], r["rank"])):
        nearest.setdefault(row["user_id"], []).append(list(row["nearest_item_ids"]))
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
        picks: list[tuple[str, float]] = []
        depth = max(map(len, nearest[user]))
        for item in (lst[d] for d in range(depth) for lst in nearest[user] if d < len(lst)):
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
            picks.append((item, float(scores[pos])))
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
                "item_id": [i for i, _ in picks],
                "score": np.array([s for _, s in picks], np.float32),
                "source": "generated",
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
