"""Every table's columns, defined once as pyarrow schemas.

Tables are Parquet, Hive-partitioned by ``ds`` (the partition column lives in the path, not in the
files). ``TABLES`` maps a table name to where it lives in the lake and what its rows must look like;
:func:`conform` checks a dataframe against it before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from visrec.errors import VisrecError

# A field carrying this metadata holds a float32 embedding of any fixed size (the model decides it).
_ANY_DIM = {b"visrec.embedding": b"fixed_size_list<float32>"}


def _embedding(name: str) -> pa.Field:
    return pa.field(name, pa.list_(pa.float32()), nullable=False, metadata=_ANY_DIM)


def _ts(name: str, nullable: bool = False) -> pa.Field:
    return pa.field(name, pa.timestamp("us", tz="UTC"), nullable=nullable)


_CATEGORY_SHARES = pa.list_(pa.struct([("category", pa.string()), ("share", pa.float32())]))
_CATEGORY_PROBS = pa.list_(pa.struct([("category", pa.string()), ("probability", pa.float32())]))

# --- raw contract (what a user brings; read from CSV / JSONL, never written by visrec) -------------
CATALOG = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("category", pa.string(), nullable=False),
        pa.field("price", pa.float64()),
        pa.field("added_date", pa.string()),
    ]
)
RAW_EVENT = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("event_type", pa.string(), nullable=False),
        pa.field("ts", pa.string(), nullable=False),  # ISO-8601
        pa.field("event_id", pa.string()),  # optional: tells two real repeats apart
        pa.field("price", pa.float64()),  # optional
    ]
)

# --- lake tables ------------------------------------------------------------------------------------
QUARANTINE = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),  # the raw file or object the row came from
        pa.field("record", pa.string(), nullable=False),  # the raw line, or the image key
        pa.field("reason", pa.string(), nullable=False),  # a short machine-readable code
        pa.field("detail", pa.string()),  # a human-readable explanation
    ]
)
EVENTS = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("event_type", pa.string(), nullable=False),
        _ts("ts"),
        pa.field("event_id", pa.string()),
        pa.field("price", pa.float64()),
        pa.field("category", pa.string(), nullable=False),
    ]
)
INTERACTIONS = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("confidence", pa.float32(), nullable=False),
        pa.field("n_view", pa.int32(), nullable=False),
        pa.field("n_click", pa.int32(), nullable=False),
        pa.field("n_add_to_cart", pa.int32(), nullable=False),
        pa.field("n_purchase", pa.int32(), nullable=False),
        _ts("first_ts"),
        _ts("last_ts"),
    ]
)
# Internal state of the incremental features: one row per user and UTC day with an event.
USER_DAYS = pa.schema(
    [pa.field("user_id", pa.string(), nullable=False), pa.field("day", pa.date32(), nullable=False)]
)
USER_PROFILES = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("segment", pa.string(), nullable=False),
        pa.field("n_view", pa.int32(), nullable=False),
        pa.field("n_click", pa.int32(), nullable=False),
        pa.field("n_add_to_cart", pa.int32(), nullable=False),
        pa.field("n_purchase", pa.int32(), nullable=False),
        _ts("first_ts"),
        _ts("last_ts"),
        pa.field("recency_days", pa.float32(), nullable=False),
        pa.field("active_days", pa.int32(), nullable=False),
        pa.field("events_per_active_day", pa.float32(), nullable=False),
        pa.field("view_to_click", pa.float32()),
        pa.field("click_to_cart", pa.float32()),
        pa.field("cart_to_purchase", pa.float32()),
        pa.field("top_categories", _CATEGORY_SHARES),
        pa.field("price_band", pa.string()),
    ]
)
ITEM_STATS = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("category", pa.string()),
        pa.field("n_view_7d", pa.int32(), nullable=False),
        pa.field("n_purchase_7d", pa.int32(), nullable=False),
        pa.field("n_view_30d", pa.int32(), nullable=False),
        pa.field("n_purchase_30d", pa.int32(), nullable=False),
        pa.field("n_users_30d", pa.int32(), nullable=False),
        pa.field("conversion_30d", pa.float32()),
    ]
)
STAGING_IMAGES = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("category", pa.string(), nullable=False),
        pa.field("image_png", pa.binary(), nullable=False),  # RGB, padded and resized to model size
        pa.field("width", pa.int32(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        pa.field("content_hash", pa.string(), nullable=False),  # sha256 of the raw file bytes
        pa.field("source_key", pa.string(), nullable=False),
    ]
)
RECOMMENDATIONS = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("rank", pa.int16(), nullable=False),
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("score", pa.float32(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        # Why this item: "model" (the factor champion's score; "model+photos" with the user's photos
        # blended in), the ranker's proposing generator (e.g. "item_cf", "visual_neighbours"),
        # "photos", "popular:<segment>", "generated_look:<rank of the look>".
        pa.field("reason", pa.string(), nullable=False),
        pa.field("model_version", pa.string(), nullable=False),
    ]
)
# The learned ranker's training set (one row per user and candidate of the validation window): its
# features by name (they depend on the generators), whether the user then took the item, and whether
# the row was in the early-stopping slice of users. What the ranker learned from, for inspection:
# ``SELECT features['item_cf_rank'], avg(label) FROM ranker_training GROUP BY 1``.
RANKER_TRAINING = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("label", pa.float32(), nullable=False),
        pa.field("held_out", pa.bool_(), nullable=False),
        pa.field("proposed_by", pa.string(), nullable=False),
        pa.field("features", pa.map_(pa.string(), pa.float32()), nullable=False),
    ]
)
SIMILAR_ITEMS = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("rank", pa.int16(), nullable=False),
        pa.field("similar_item_id", pa.string(), nullable=False),
        pa.field("score", pa.float32(), nullable=False),
    ]
)
GENERATED_LOOKS = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("rank", pa.int16(), nullable=False),
        pa.field("image_uri", pa.string(), nullable=False),
        pa.field("category", pa.string(), nullable=False),
        pa.field("preference_score", pa.float32(), nullable=False),
        pa.field("nearest_item_ids", pa.list_(pa.string()), nullable=False),
        pa.field("nearest_scores", pa.list_(pa.float32()), nullable=False),
    ]
)
USER_PHOTOS = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("photo_id", pa.string(), nullable=False),
        pa.field("top_categories", _CATEGORY_PROBS, nullable=False),
        _embedding("embedding"),
        pa.field("model_version", pa.string(), nullable=False),
        pa.field("image_key", pa.string(), nullable=False),  # the stored photo (metadata stripped)
    ]
)
PHOTO_RECOMMENDATIONS = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("photo_id", pa.string(), nullable=False),
        pa.field("rank", pa.int16(), nullable=False),
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("score", pa.float32(), nullable=False),
    ]
)
# User uploads after ingestion: decoded, metadata stripped, stored under private/ (personal data).
STAGING_USER_PHOTOS = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("photo_id", pa.string(), nullable=False),
        pa.field("image_key", pa.string(), nullable=False),
        pa.field("content_hash", pa.string(), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
    ]
)
ITEM_EMBEDDINGS = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        _embedding("embedding"),
        pa.field("model_version", pa.string(), nullable=False),
        # How many leading dimensions of ``embedding`` are the image classifier's (the rest: the
        # retrieval embedding); what the recommender learns looks from.
        pa.field("classifier_dims", pa.int16(), nullable=False),
    ]
)


@dataclass(frozen=True)
class TableSpec:
    """Where a table lives under the lake root, its schema and its key (besides ``ds``)."""

    name: str
    path: str
    schema: pa.Schema
    key: tuple[str, ...]


TABLES: dict[str, TableSpec] = {
    spec.name: spec
    for spec in [
        TableSpec("events", "features/events", EVENTS, ()),
        TableSpec("interactions", "features/interactions", INTERACTIONS, ("user_id", "item_id")),
        TableSpec("user_days", "features/user_days", USER_DAYS, ("user_id", "day")),
        TableSpec("user_profiles", "features/user_profiles", USER_PROFILES, ("user_id",)),
        TableSpec("item_stats", "features/item_stats", ITEM_STATS, ("item_id",)),
        TableSpec("staging_images", "staging/images", STAGING_IMAGES, ("item_id",)),
        TableSpec("ranker_training", "features/ranker_training", RANKER_TRAINING, ("user_id", "item_id")),
        TableSpec("item_embeddings", "features/item_embeddings", ITEM_EMBEDDINGS, ("item_id",)),
        TableSpec("recommendations", "published/recommendations", RECOMMENDATIONS, ("user_id", "rank")),
        TableSpec("similar_items", "published/similar_items", SIMILAR_ITEMS, ("item_id", "rank")),
        TableSpec("generated_looks", "published/generated_looks", GENERATED_LOOKS, ("user_id", "rank")),
        TableSpec("user_photos", "published/user_photos", USER_PHOTOS, ("user_id", "photo_id")),
        TableSpec(
            "staging_user_photos", "private/staging_user_photos", STAGING_USER_PHOTOS, ("user_id", "photo_id")
        ),
        TableSpec(
            "photo_recommendations",
            "published/photo_recommendations",
            PHOTO_RECOMMENDATIONS,
            ("user_id", "photo_id", "rank"),
        ),
    ]
}


def quarantine_spec(source_table: str) -> TableSpec:
    """The quarantine table for rows rejected on their way into ``source_table``."""
    return TableSpec(f"quarantine/{source_table}", f"quarantine/{source_table}", QUARANTINE, ())


def spec_for(name: str) -> TableSpec:
    """Look a table up by name (``quarantine/<table>`` names are accepted too)."""
    if name.startswith("quarantine/"):
        return quarantine_spec(name.split("/", 1)[1])
    try:
        return TABLES[name]
    except KeyError:
        raise KeyError(f"unknown table {name!r}; known: {', '.join(sorted(TABLES))}") from None


class SchemaError(VisrecError):
    """A dataframe does not match its table's schema."""


def _is_any_dim_embedding(field: pa.Field) -> bool:
    return bool(field.metadata) and b"visrec.embedding" in field.metadata


def empty_table(schema: pa.Schema, embedding_dim: int) -> pa.Table:
    """A table of ``schema`` with no rows, its embedding columns fixed at ``embedding_dim``: what a
    day with nothing to write writes (the lake takes embeddings of one fixed size per partition)."""
    fields = [
        pa.field(f.name, pa.list_(pa.float32(), embedding_dim), nullable=False, metadata=f.metadata)
        if _is_any_dim_embedding(f)
        else f
        for f in schema
    ]
    return pa.schema(fields).empty_table()


def conform(table: pa.Table, schema: pa.Schema, name: str = "table") -> pa.Table:
    """Return ``table`` with exactly ``schema``'s columns, in order and cast to their types.

    Raises :class:`SchemaError` naming the missing, extra or uncastable columns, or the nulls in a
    non-nullable column, so a bad writer fails before anything reaches the lake.
    """
    missing = [f.name for f in schema if f.name not in table.column_names]
    extra = [c for c in table.column_names if c not in schema.names]
    if missing or extra:
        raise SchemaError(f"{name}: missing columns {missing}, unexpected columns {extra}")
    columns, fields = [], []
    for field in schema:
        column = table.column(field.name)
        if _is_any_dim_embedding(field):
            if not (pa.types.is_fixed_size_list(column.type) and column.type.value_type == pa.float32()):
                raise SchemaError(
                    f"{name}.{field.name}: expected fixed_size_list<float32>, got {column.type}"
                )
            field = pa.field(field.name, column.type, nullable=False, metadata=field.metadata)
        else:
            try:
                column = column.cast(field.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise SchemaError(f"{name}.{field.name}: cannot cast to {field.type}: {exc}") from None
        if not field.nullable and column.null_count:
            raise SchemaError(f"{name}.{field.name}: {column.null_count} nulls in a required column")
        columns.append(column)
        fields.append(field)
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))
