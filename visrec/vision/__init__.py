"""vision: the image model's training (:mod:`.train`), embeddings (:mod:`.embed`), photo search and
user photos. The old ``visrec.vision`` module's names still resolve here, deprecated."""

from visrec.deprecated import homes, moved

__getattr__ = moved(
    __name__,
    {
        **homes("visrec.vision.train", "CNNConfig", "CNNResult", "train_cnn", "held_out_split", "warm_start"),
        **homes("visrec.vision.embed", "load_cnn", "embed_items"),
        **homes("visrec.store.tables", "StagedImages", "decode_pngs", "load_staged_images"),
    },
)
