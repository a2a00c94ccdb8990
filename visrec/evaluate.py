"""Deprecated: the ranking metrics moved to :mod:`visrec.recsys.metrics` (and :mod:`visrec.api`)."""

from visrec.deprecated import homes, moved

__getattr__ = moved(
    __name__,
    homes(
        "visrec.recsys.metrics",
        "hits_at_k",
        "recall_at_k",
        "ndcg_at_k",
        "map_at_k",
        "coverage",
        "intra_list_diversity",
        "novelty",
        "cold_recall_at_k",
        "evaluate",
    ),
)
