"""Pallas kernels of the sparse TopK step for GPUs (Triton backend), the "pallas_gpu" impl
of `sae_jax.saes.sparse`; with interpret=True the same kernels run on any backend
(Pallas' interpreter), which is how CI checks them without a GPU.

A code is a list of E entries (row_E, idx_E, coef_E), sorted by row. Every op of the
sparse step is one of two segment kernels over a CSR layout (offsets_S1 [S + 1]: segment s
holds entries offsets[s] .. offsets[s + 1] - 1):

    segment_gather_sum  out[s]  = sum_{e in s} coef_e M[src_e]        [S, D]
    segment_gather_dot  out[e]  = M[src_e] . G[s]  for e in s          [E]

  decode           x_hat = segment_gather_sum over tokens (offsets from row_E), src = idx
  dpre (its VJP)   segment_gather_dot over tokens, M = W_dec, G = dL/dx_hat
  dW_dec, dW_enc   segment_gather_sum over latents: the entries sorted by latent
                   (`by_latent`), src = row, M = dL/dx_hat or x - b_pre

Sorting by latent turns the encoder gradient's column scatter into a [d_in, n_latents]
matrix (the access GPUs handle worst: atomics on scattered columns) into one program per
(latent, d_in block) that sums its own entries and writes its row once; a dead latent's
segment is empty and its row is written as zeros. Deterministic: no atomics anywhere.

    radix_counts        counts[j] = #{i : bits_i >= edges_j}, for BatchTopK's threshold
                        (`sae_jax.saes.sparse.kth_largest`: a 16-way radix select, 8
                        passes instead of 31 bisection passes)

Each program loops over its segment's entries in order, so results are deterministic and
equal the XLA ops up to float summation order. The d_in axis is tiled in blocks of the
largest power of two (<= 256) dividing d_in, so no load is masked (Triton needs
power-of-two tiles). Shapes: float32 values, int32 indices.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

# Triton, not Mosaic GPU (its pallas_call path needs TMA-sized copies): scalar-indexed
# gathers of rows are what these kernels do.
_TRITON = pltriton.CompilerParams(num_warps=4, num_stages=1)
RADIX = 16  # edges per radix_counts pass: log2(16) = 4 bits of the threshold per pass
COUNT_BLOCK = 1024  # elements per radix_counts program


def d_block(D: int) -> int:
  """The d_in tile: the largest power of two <= 256 that divides D."""
  return min(256, D & -D)


@functools.partial(jax.jit, static_argnames=("interpret",))
def segment_gather_sum(offsets_S1: jax.Array, src_E: jax.Array, coef_E: jax.Array,
                       M_RxD: jax.Array, *, interpret: bool = False) -> jax.Array:
  """out[s] = sum_{e = offsets[s]}^{offsets[s+1]-1} coef_e M[src_e], float32 [S, D].

  One program per (segment, d_in block); an empty segment writes zeros."""
  S, (_, D) = offsets_S1.shape[0] - 1, M_RxD.shape
  bD = d_block(D)

  def kernel(off_ref, src_ref, coef_ref, M_ref, out_ref):
    s, cols = pl.program_id(0), pl.ds(pl.program_id(1) * bD, bD)

    def body(e, acc):
      return acc + coef_ref[e] * M_ref[src_ref[e], cols]
    out_ref[s, cols] = lax.fori_loop(off_ref[s], off_ref[s + 1], body,
                                     jnp.zeros((bD,), jnp.float32))

  return pl.pallas_call(kernel, out_shape=jax.ShapeDtypeStruct((S, D), jnp.float32),
                        grid=(S, D // bD), interpret=interpret, compiler_params=_TRITON)(
                            offsets_S1.astype(jnp.int32), src_E.astype(jnp.int32),
                            coef_E.astype(jnp.float32), M_RxD.astype(jnp.float32))


@functools.partial(jax.jit, static_argnames=("interpret",))
def segment_gather_dot(offsets_S1: jax.Array, src_E: jax.Array, M_RxD: jax.Array,
                       G_SxD: jax.Array, *, interpret: bool = False) -> jax.Array:
  """out[e] = M[src_e] . G[s] for each entry e of segment s, float32 [E]. Entries outside
  every segment (none, for offsets from `csr_offsets`) are 0."""
  S, D, E = offsets_S1.shape[0] - 1, M_RxD.shape[1], src_E.shape[0]
  bD = d_block(D)

  def kernel(off_ref, src_ref, M_ref, G_ref, out_ref):
    s = pl.program_id(0)

    def entry(e, carry):
      j = src_ref[e]

      def tile(t, acc):
        cols = pl.ds(t * bD, bD)
        return acc + jnp.sum(M_ref[j, cols] * G_ref[s, cols])
      out_ref[e] = lax.fori_loop(0, D // bD, tile, jnp.float32(0))
      return carry
    lax.fori_loop(off_ref[s], off_ref[s + 1], entry, 0)

  return pl.pallas_call(kernel, out_shape=jax.ShapeDtypeStruct((E,), jnp.float32),
                        grid=(S,), interpret=interpret, compiler_params=_TRITON)(
                            offsets_S1.astype(jnp.int32), src_E.astype(jnp.int32),
                            M_RxD.astype(jnp.float32), G_SxD.astype(jnp.float32))


@functools.partial(jax.jit, static_argnames=("interpret",))
def radix_counts(bits_M: jax.Array, edges_R: jax.Array, *, interpret: bool = False
                 ) -> jax.Array:
  """counts[j] = #{i : bits_M[i] >= edges_R[j]}, int32 [R]. bits_M: int32, its length a
  multiple of COUNT_BLOCK (`pad_bits`). One program per block of COUNT_BLOCK elements
  writes its R partial counts; XLA sums the blocks (no atomics)."""
  R, M = edges_R.shape[0], bits_M.shape[0]
  if M % COUNT_BLOCK:
    raise ValueError(f"{M} elements: pad them to a multiple of {COUNT_BLOCK} (pad_bits)")
  n_blocks = M // COUNT_BLOCK

  def kernel(bits_ref, edges_ref, out_ref):
    b = pl.program_id(0)
    block = bits_ref[pl.ds(b * COUNT_BLOCK, COUNT_BLOCK)]
    ge = block[:, None] >= edges_ref[...][None, :]
    out_ref[b, :] = jnp.sum(ge.astype(jnp.int32), axis=0)

  partial = pl.pallas_call(kernel, out_shape=jax.ShapeDtypeStruct((n_blocks, R), jnp.int32),
                           grid=(n_blocks,), interpret=interpret, compiler_params=_TRITON)(
                               bits_M, edges_R.astype(jnp.int32))
  return jnp.sum(partial, axis=0)


def pad_bits(bits_M: jax.Array) -> jax.Array:
  """bits_M padded with -1 (below every edge >= 0) to a non-zero multiple of COUNT_BLOCK."""
  M = bits_M.shape[0]
  padded = max(1, pl.cdiv(M, COUNT_BLOCK)) * COUNT_BLOCK
  return jnp.pad(bits_M.astype(jnp.int32), (0, padded - M), constant_values=-1)
