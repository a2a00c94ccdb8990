"""Deprecated: the recommenders moved to :mod:`visrec.recsys.baselines` (and :mod:`visrec.api`)."""

from visrec.deprecated import homes, moved

__getattr__ = moved(
    __name__,
    {
        **homes(
            "visrec.recsys.baselines",
            "Recommender",
            "FactorRecommender",
            "VisualProfile",
            "Popularity",
            "SegmentPopularity",
            "ItemCF",
            "SparkItemCF",
            "SparkALS",
        ),
        **homes("visrec.recsys.data", "TrainData"),
        **homes("visrec.recsys.vbpr", "VBPRRecommender"),
    },
)
