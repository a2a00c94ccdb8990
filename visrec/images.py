"""Deprecated: image decoding and normalising moved to :mod:`visrec.ingest.images`."""

from visrec.deprecated import homes, moved

__getattr__ = moved(
    __name__,
    homes(
        "visrec.ingest.images",
        "to_rgb",
        "fit_square",
        "decode_image",
        "normalise_image",
        "content_hash",
        "ImageResult",
        "normalise_many",
    ),
)
