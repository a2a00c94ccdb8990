"""recsys: training data and splits (:mod:`.data`), recommenders (:mod:`.baselines`, :mod:`.vbpr`),
selection, metrics, training and scoring. The old ``visrec.recsys`` module's names still resolve
here, deprecated."""

from visrec.deprecated import homes, moved

__getattr__ = moved(
    __name__,
    {
        **homes(
            "visrec.recsys.data", "Split", "build_split", "full_data", "purchased_matrix", "confidence_matrix"
        ),
        **homes(
            "visrec.recsys.train",
            "evaluate_model",
            "MFConfig",
            "MFResult",
            "train_mf",
            "champion_scorer",
            "FactorScorer",
        ),
        **homes(
            "visrec.recsys.score", "score_all_users", "PhotoBlend", "score_users", "add_generated_candidates"
        ),
        **homes("visrec.store.tables", "load_events", "item_embeddings"),
    },
)
