"""The data contract's vocabularies, with no dependencies: settings, the schemas and the jobs share them,
and importing them loads nothing (the DAG file parses with settings, so no pyarrow at parse time)."""

from __future__ import annotations

EVENT_TYPES: tuple[str, ...] = ("view", "click", "add_to_cart", "purchase")
SOURCES: tuple[str, ...] = ("mf", "visual", "photo", "generated", "popular")


# The published contract: what `publish` makes visible to readers (each table an Airflow Asset of the
# nightly DAG), in the order the warehouse creates its views.
PUBLISHED_TABLES: tuple[str, ...] = (
    "recommendations",
    "similar_items",
    "generated_looks",
    "user_photos",
    "photo_recommendations",
    "user_profiles",
    "item_embeddings",
)
