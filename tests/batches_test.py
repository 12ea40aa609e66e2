"""The batch stream's block-shuffled order (exact resume, sequential reads through a
shuffle buffer) and its double-buffered prefetch to the device."""

import numpy as np
import pytest

from sae_jax import config
from sae_jax.data import batches


class _CountingSource(batches.ArraySource):
  """An in-memory source that records the rows of every read."""

  def __init__(self, n_rows, d_in=3):
    x = np.arange(n_rows * d_in, dtype=np.float32).reshape(n_rows, d_in)
    super().__init__({"train": x, "eval": x[:10]})
    self.reads = []

  def read(self, split, rows):
    self.reads.append(np.asarray(rows))
    return super().read(split, rows)


ORDER = batches.BlockOrder(block_rows=7, buffer_blocks=3)  # windows of 21 rows


def test_block_order_is_a_permutation_built_from_shuffled_blocks():
  n = 100  # 15 blocks, the last of 2 rows; 5 windows, the last of 16 rows
  order = ORDER.epoch_order(n, seed=3, epoch=0)
  assert sorted(order) == list(range(n))
  for w in range(0, n, ORDER.window_rows):  # each buffer holds 3 whole blocks
    blocks = np.unique(order[w:w + ORDER.window_rows] // 7)
    assert len(blocks) == 3  # the last: 2 whole blocks and the short one
    assert sorted(order[w:w + ORDER.window_rows]) == sorted(
        r for b in blocks for r in range(7 * b, min(n, 7 * b + 7)))
  assert not np.array_equal(order, ORDER.epoch_order(n, seed=3, epoch=1))  # a new shuffle
  assert not np.array_equal(np.sort(order[:21]), np.arange(21))  # blocks are shuffled too


@pytest.mark.parametrize("batch_size", [8, 13])  # 13: batches straddle windows and epochs
def test_block_stream_is_a_function_of_seed_and_step_and_resumes_exactly(batch_size):
  src = _CountingSource(100)
  full = dict(batches.stream(src, batch_size, 5, 0, 20, order=ORDER))
  resumed = dict(batches.stream(src, batch_size, 5, 11, 20, order=ORDER))
  for step in range(11, 20):
    np.testing.assert_array_equal(resumed[step], full[step])
  for step in (0, 7, 19):  # what was read is what `ordered_rows` names
    rows = batches.ordered_rows(100, batch_size, 5, step, ORDER)
    np.testing.assert_array_equal(full[step], src.splits["train"][rows])
  epoch0 = np.concatenate([batches.ordered_rows(100, batch_size, 5, s, ORDER)
                           for s in range(100 // batch_size)])
  assert len(set(epoch0.tolist())) == len(epoch0)  # no row twice within an epoch


def test_block_stream_reads_whole_windows_sequentially():
  src = _CountingSource(100)
  list(batches.stream(src, 8, 5, 0, 12, order=ORDER))  # 96 rows: 5 windows
  assert len(src.reads) == 5, "one read per shuffle buffer, not one per batch"
  for rows in src.reads:
    assert np.all(np.diff(rows) > 0)  # sorted, and runs of whole blocks of 7 rows
    starts = rows[np.r_[0, np.flatnonzero(np.diff(rows) > 1) + 1]]
    assert np.all(starts % 7 == 0)


def test_prefetch_to_device_keeps_the_next_batch_in_flight():
  events = []

  def put(x):
    events.append(("put", x))
    return x

  for step, x in batches.prefetch_to_device(((i, i * 10) for i in range(4)), put):
    events.append(("step", x))
  # batch s + 1 is sent before step s runs: double buffering
  assert events == [("put", 0), ("put", 10), ("step", 0), ("put", 20), ("step", 10),
                    ("put", 30), ("step", 20), ("step", 30)]


def test_bad_shuffle_settings_say_what_to_change():
  c = config.default_config()
  c.data.shuffle_block_rows = -1
  with pytest.raises(config.ConfigError, match="data.shuffle_block_rows=-1 must be 0"):
    config.resolve(c, 32)
