"""Activation batches for training and evaluation: input normalisation and a
deterministic, resumable, prefetching batch stream over an activation cache.

The stream's position is one integer (the step): batch s of a run is always the same
rows, so a resumed run sees exactly the data an uninterrupted run would.

Two orders, both functions of (seed, step) only:
  random rows (`batch_rows`)     each epoch a permutation of the rows; a batch reads rows
                                 from anywhere in the cache (fine when it fits in memory);
  shuffled blocks (`BlockOrder`) each epoch a permutation of blocks of `block_rows`
                                 consecutive rows, read `buffer_blocks` blocks at a time
                                 (large sequential reads) into an in-memory shuffle buffer
                                 whose rows are permuted; for caches larger than memory
                                 (`data.shuffle_block_rows`).
The stream reads ahead on a thread, and `prefetch_to_device` keeps the next batch already
on its way to the device while the step runs (double buffering).
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import queue
import threading
from typing import Any, Callable, Iterator, Protocol

import jax.numpy as jnp
import numpy as np


class ActivationSource(Protocol):
  """What the trainer needs from an activation cache (`sae_jax.data.cache.ActivationCache`, `ArraySource`)."""

  d_in: int
  stats: dict

  def n_tokens(self, split: str) -> int: ...

  def read(self, split: str, rows: np.ndarray) -> np.ndarray: ...

  # Optional, for a source that computes its rows (`sae_jax.data.on_the_fly`):
  #   order: BlockOrder        the training order the trainer must use
  #   sample_rows(n, seed)     the rows of a run's initial sample (b_pre)


def norm_scale(method: str, stats: dict, d_in: int) -> float:
  """The constant of the "mean_norm" normalisation: sqrt(d_in) / E||x||
  (Templeton et al. 2024); 1 for the others."""
  if method == "mean_norm":
    return float(np.sqrt(d_in) / stats["mean_norm"])
  return 1.0


def input_rms(method: str, stats: dict, d_in: int) -> float:
  """sqrt(E||x||^2) of the inputs after `normalize(x, method, norm_scale(...))`, from the
  raw statistics (mean_sq_norm = E||x||^2, mean_norm = E||x||): exactly 1 for
  "unit_norm", norm_scale * sqrt(E||x||^2) for "mean_norm" (>= sqrt(d_in)), sqrt(E||x||^2)
  for "none". The input scale s of `sae_jax.saes.base.Hyper`."""
  if method == "unit_norm":
    return 1.0
  return norm_scale(method, stats, d_in) * float(np.sqrt(stats["mean_sq_norm"]))


def normalize(x_BxD: jnp.ndarray, method: str, scale: float = 1.0) -> jnp.ndarray:
  """Normalise raw activations before the SAE sees them.

  "unit_norm": subtract the mean over d_in and scale each token to unit L2 norm
  (Gao et al. 2024, Sec. 2.1); "mean_norm": multiply by `scale` = sqrt(d_in) / E||x||
  (Templeton et al. 2024); "none": unchanged. Shape [B, d_in] -> [B, d_in].
  """
  if method == "unit_norm":
    x_BxD = x_BxD - jnp.mean(x_BxD, axis=-1, keepdims=True)
    return x_BxD / jnp.maximum(jnp.linalg.norm(x_BxD, axis=-1, keepdims=True), 1e-6)
  if method == "mean_norm":
    return x_BxD * scale
  if method == "none":
    return x_BxD
  raise ValueError(f"unknown input_norm {method!r}")


def batch_rows(n_rows: int, batch_size: int, seed: int, step: int) -> np.ndarray:
  """Rows of training batch `step`: epoch e is a permutation seeded by (seed, e); the
  batches tile the epochs without gaps, so the stream never repeats a row within an
  epoch. Returned sorted (reads are sequential within a shard; order inside a batch
  does not matter to the loss)."""
  start = step * batch_size
  out = []
  while len(out) < batch_size:
    epoch, offset = divmod(start, n_rows)
    perm = _permutation(n_rows, seed, epoch)
    take = min(batch_size - len(out), n_rows - offset)
    out.extend(perm[offset:offset + take])
    start += take
  return np.sort(np.asarray(out, np.int64))


_PERM_CACHE: dict = {}


def _permutation(n_rows: int, seed: int, epoch: int) -> np.ndarray:
  key = (n_rows, seed, epoch)
  if key not in _PERM_CACHE:
    _PERM_CACHE.clear()
    _PERM_CACHE[key] = np.random.default_rng([seed, epoch]).permutation(n_rows)
  return _PERM_CACHE[key]


@dataclasses.dataclass(frozen=True)
class BlockOrder:
  """Block-shuffled order: epoch e permutes the blocks of `block_rows` consecutive rows
  with a generator seeded by (seed, e) (a shorter last block stays last); each window of
  `buffer_blocks` consecutive blocks of that permutation is one shuffle buffer whose rows
  are permuted by (seed, e, window). Epoch orders are concatenated and cut into batches as
  `batch_rows` does, so batch s is a function of (seed, s) and resume is exact."""
  block_rows: int
  buffer_blocks: int

  @property
  def window_rows(self) -> int:
    """Rows of one shuffle buffer."""
    return self.block_rows * self.buffer_blocks

  def epoch_order(self, n_rows: int, seed: int, epoch: int) -> np.ndarray:
    """The rows of epoch `epoch` in stream order, int64 [n_rows]."""
    key = ("blocks", n_rows, seed, epoch, self.block_rows, self.buffer_blocks)
    if key not in _PERM_CACHE:
      n_full = n_rows // self.block_rows  # a shorter last block stays last, so that every
      blocks = np.random.default_rng([seed, epoch, 1]).permutation(n_full)  # window but the
      if n_rows % self.block_rows:  # last holds exactly window_rows rows
        blocks = np.append(blocks, n_full)
      n_blocks = len(blocks)
      out = []
      for w in range(0, n_blocks, self.buffer_blocks):
        B = self.block_rows
        rows = np.concatenate([np.arange(b * B, min(n_rows, (b + 1) * B))
                               for b in blocks[w:w + self.buffer_blocks]])
        out.append(rows[np.random.default_rng([seed, epoch, 2, w]).permutation(len(rows))])
      _PERM_CACHE.clear()
      _PERM_CACHE[key] = np.concatenate(out)
    return _PERM_CACHE[key]


def ordered_rows(n_rows: int, batch_size: int, seed: int, step: int,
                 order: BlockOrder | None = None) -> np.ndarray:
  """Rows of training batch `step` under `order` (None: random rows, `batch_rows`), in
  stream order (unsorted for blocks: a batch is a slice of the shuffle buffer)."""
  if order is None:
    return batch_rows(n_rows, batch_size, seed, step)
  start, out = step * batch_size, []
  while sum(map(len, out)) < batch_size:
    epoch, offset = divmod(start, n_rows)
    take = min(batch_size - sum(map(len, out)), n_rows - offset)
    out.append(order.epoch_order(n_rows, seed, epoch)[offset:offset + take])
    start += take
  return np.concatenate(out)


class _BufferedReader:
  """Reads a block-ordered stream window by window: each shuffle buffer's rows are read
  once, sorted (sequential runs of block_rows rows), and batches are gathered from
  memory. Once a window is in, the next one the stream needs (before stream position
  `end_row`) is read on a second thread while batches are served from this one (for
  `sae_jax.data.on_the_fly`, the LM forward of the next buffer overlaps training). Holds
  at most four windows (a batch may straddle a window boundary; one being read ahead)."""

  def __init__(self, source, split: str, n_rows: int, seed: int, order: BlockOrder,
               end_row: int | None = None):
    self.source, self.split, self.n_rows, self.seed, self.order = source, split, n_rows, seed, order
    self.end_row = end_row
    self.windows: dict = {}
    self.ahead: dict = {}  # (epoch, window) -> Future of _load
    self.pool = concurrent.futures.ThreadPoolExecutor(1) if end_row is not None else None

  def _load(self, epoch: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    size = self.order.window_rows
    rows = np.sort(self.order.epoch_order(self.n_rows, self.seed, epoch)[w * size:(w + 1) * size])
    return rows, self.source.read(self.split, rows)

  def _window(self, epoch: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    if (epoch, w) not in self.windows:
      future = self.ahead.pop((epoch, w), None)
      data = future.result() if future is not None else self._load(epoch, w)
      self.windows = {k: v for k, v in self.windows.items() if k > (epoch, w - 2)}
      self.windows[(epoch, w)] = data
      size = self.order.window_rows
      nxt = (epoch, w + 1) if (w + 1) * size < self.n_rows else (epoch + 1, 0)
      if (self.pool is not None and nxt not in self.ahead and nxt not in self.windows
          and nxt[0] * self.n_rows + nxt[1] * size < self.end_row):
        self.ahead[nxt] = self.pool.submit(self._load, *nxt)
    return self.windows[(epoch, w)]

  def close(self) -> None:
    if self.pool is not None:
      self.pool.shutdown(wait=False, cancel_futures=True)

  def read(self, batch_size: int, step: int) -> np.ndarray:
    size = self.order.window_rows
    rows = ordered_rows(self.n_rows, batch_size, self.seed, step, self.order)
    pos = step * batch_size + np.arange(batch_size)  # stream positions
    epoch, offset = np.divmod(pos, self.n_rows)
    out = np.empty((batch_size, self.source.d_in), np.float32)
    for key in sorted(set(zip(epoch.tolist(), (offset // size).tolist()))):
      sel = (epoch == key[0]) & (offset // size == key[1])
      w_rows, w_data = self._window(*key)
      out[sel] = w_data[np.searchsorted(w_rows, rows[sel])]
    return out


def stream(source: ActivationSource, batch_size: int, seed: int, start_step: int,
           end_step: int, prefetch: int = 4, split: str = "train",
           rows: tuple[int, int] | None = None, order: BlockOrder | None = None
           ) -> Iterator[tuple[int, np.ndarray]]:
  """Yield (step, x_BxD float32) for steps [start_step, end_step), read by a background
  thread `prefetch` batches ahead so reading overlaps the train step.

  rows: only this [lo, hi) part of each batch (a process's share in a multi-host run).
  order: None for random rows, or a `BlockOrder` (read through an in-memory shuffle buffer).
  """
  lo, hi = rows or (0, batch_size)
  n_rows = source.n_tokens(split)
  q: queue.Queue = queue.Queue(maxsize=max(1, prefetch))
  stop = threading.Event()
  buffered = None if order is None else _BufferedReader(source, split, n_rows, seed, order,
                                                        end_row=end_step * batch_size)

  def worker():
    try:
      for step in range(start_step, end_step):
        if stop.is_set():
          return
        if buffered is None:
          x = source.read(split, batch_rows(n_rows, batch_size, seed, step)[lo:hi])
        else:
          x = buffered.read(batch_size, step)[lo:hi]
        q.put((step, x))
      q.put(None)
    except BaseException as e:  # surfaced in the consumer
      q.put(e)

  t = threading.Thread(target=worker, daemon=True)
  t.start()
  try:
    while True:
      item = q.get()
      if item is None:
        return
      if isinstance(item, BaseException):
        raise item
      yield item
  finally:  # the reader stops after its current batch; joined, so that an early exit (a
    # signal, an error) never leaves it reading while the interpreter shuts down
    stop.set()
    while t.is_alive():
      try:
        q.get(timeout=0.1)
      except queue.Empty:
        pass
    if buffered is not None:
      buffered.close()


def prefetch_to_device(batches_it: Iterator[tuple[int, Any]], put: Callable[[Any], Any],
                       size: int = 2) -> Iterator[tuple[int, Any]]:
  """(step, put(x)) for each batch, with `size` batches already put (double buffering for
  2): `put` (e.g. `jax.device_put`) is asynchronous, so the next batch's host-to-device copy
  runs while the step on the current one does (as flax's `prefetch_to_device`)."""
  buf: collections.deque = collections.deque()
  for step, x in batches_it:
    buf.append((step, put(x)))
    if len(buf) >= size:
      yield buf.popleft()
  while buf:
    yield buf.popleft()


def eval_batches(source: ActivationSource, batch_size: int, split: str = "eval"
                 ) -> Iterator[np.ndarray]:
  """Every row of the split once, in order, in batches of at most batch_size."""
  n = source.n_tokens(split)
  for start in range(0, n, batch_size):
    yield source.read(split, np.arange(start, min(n, start + batch_size)))


class ArraySource:
  """An in-memory activation source (tests, synthetic data): {"train": x, "eval": x}."""

  def __init__(self, splits: dict[str, np.ndarray]):
    self.splits = {k: np.asarray(v, np.float32) for k, v in splits.items()}
    self.d_in = next(iter(self.splits.values())).shape[1]
    x = self.splits["train"].astype(np.float64)
    mean = x.mean(0)
    self.stats = {"mean": mean, "mean_norm": float(np.linalg.norm(x, axis=1).mean()),
                  "mean_sq_norm": float((x**2).sum(1).mean()),
                  "total_variance": float(((x - mean) ** 2).sum(1).mean())}
    self.meta = {"d_in": self.d_in}

  def n_tokens(self, split: str) -> int:
    return len(self.splits[split])

  def read(self, split: str, rows: np.ndarray) -> np.ndarray:
    return self.splits[split][rows]
