"""tf.data input for in-memory arrays, without tf.data's autotuning.

An autotuned pipeline (``prefetch(tf.data.AUTOTUNE)``) runs a tuning thread that sleeps longer and
longer between rounds, and destroying the pipeline's iterator waits for that thread to wake up.
Keras destroys the iterator at the end of every epoch, so on this project's 2-core machines about
half the image model's epochs ended with 20 to 40 seconds of the whole machine idle (seen with gdb:
``RootDataset::Iterator::~Iterator`` waiting on ``model::Model::OptimizeLoop``): 17-19 epochs fitted
its 20-minute budget, 25 without the stalls. Arrays already in memory have nothing to tune: two
batches are prefetched while the model trains on the current one.
"""

from __future__ import annotations


def in_memory_batches(
    data, batch_size: int, *, shuffle_seed: int | None = None, drop_remainder: bool = False
):
    """A ``tf.data.Dataset`` of batches of ``data`` (an array, or a nested tuple of arrays of equal
    length), reshuffled every epoch when ``shuffle_seed`` is given, with autotuning off."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices(data)
    if shuffle_seed is not None:
        buffer = min(int(ds.cardinality()), 20_000)
        ds = ds.shuffle(buffer, seed=shuffle_seed, reshuffle_each_iteration=True)
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(2).with_options(options)
