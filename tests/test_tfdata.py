"""In-memory tf.data input: every element once per epoch, reshuffled, and no autotuning thread."""

from __future__ import annotations

import numpy as np

from visrec.models.tfdata import in_memory_batches


def _epoch(ds) -> list[int]:
    return [int(v) for batch in ds for v in batch[0].numpy()]


def test_each_epoch_sees_every_element_once_in_a_new_order():
    values = np.arange(100)
    ds = in_memory_batches((values, values * 2), 16, shuffle_seed=3)
    first, second = _epoch(ds), _epoch(ds)
    assert sorted(first) == sorted(second) == list(range(100))
    assert first != second  # reshuffled every epoch
    assert first == _epoch(in_memory_batches((values, values * 2), 16, shuffle_seed=3))  # seeded
    assert all(np.array_equal(y.numpy(), 2 * x.numpy()) for x, y in ds)  # pairs stay together


def test_unshuffled_keeps_order_and_drop_remainder_drops_the_short_batch():
    values = np.arange(10)
    assert [int(v) for b in in_memory_batches(values, 4) for v in b.numpy()] == list(range(10))
    assert [len(b) for b in in_memory_batches(values, 4, drop_remainder=True)] == [4, 4]


def test_autotuning_is_off():
    # An autotuned pipeline's iterator waits tens of seconds for its tuning thread when Keras
    # destroys it at the end of each epoch (see visrec.models.tfdata).
    ds = in_memory_batches(np.arange(10), 4, shuffle_seed=0)
    assert ds.options().autotune.enabled is False
