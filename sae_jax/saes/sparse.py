"""Sparse ops of the TopK family's train step, with custom VJPs. Gao et al. 2024 wrote
sparse kernels for the same reason: after the encoder, a TopK SAE needs only k latents
per token.

A dense autodiff step does the O(B·d_in·n_latents) work about five times: the encoder,
the decoder on the scattered dense code, and three matmuls in the backward pass. Only the
encoder matmul is unavoidable. Here the code is kept as a list of E entries

    (row_E, idx_E, pre_E): token row_E[e] uses latent idx_E[e] with pre-activation pre_E[e]

(a TopK code of B tokens is E = B·k entries, sorted by row), and

    decode(W_dec, code)    x_hat[b] = sum_{e: row_e = b} ReLU(pre_e) W_dec[idx_e]
                           VJP: dW_dec scatter-added over the E rows, dpre gathered dots
    select(params, x, code) pre_E = (W_enc^T (x - b_pre) + b_enc)[row, idx], given
                           VJP: dW_enc, db_enc on the E selected (token, latent) pairs only

    kth_largest(v, m)      BatchTopK's threshold: the m-th largest of B·n_latents values,
                           by a radix select (2 histogram passes in XLA, 8 count passes in
                           Pallas) instead of 31 bisection passes
    batch_topk(pre, m)     BatchTopK's code: the entries at or above that threshold; in C++
                           one pass over pre (threshold and selection fused)

cost O(E·d_in) instead of O(B·n_latents·d_in). Each op has implementations with the same
results (`train.sparse_impl`):
  "cpu_kernels"  C++ XLA FFI kernels compiled on first use (`sae_jax/saes/kernels/`),
  "pallas_gpu"   Pallas kernels for GPUs, Triton backend (`sae_jax.saes.pallas_kernels`):
                 the decode, its VJP and the encoder gradient as segment sums over the code
                 laid out by token or, for the weight gradients, sorted by latent,
  "xla"          gathers and scatter-adds in plain JAX that run on any backend and shard
                 under GSPMD,
  "pallas_interpret"  the Pallas kernels run by Pallas' interpreter on any backend (how
                 CI tests them without a GPU; slow, not a training choice).
`impl_for(mesh, requested)` picks by backend when nothing is requested: the C++ kernels on
one CPU device when they build, the Pallas kernels on one GPU, else "xla".

Shapes: W_dec [n_latents, d_in], W_enc [d_in, n_latents], x [B, d_in]; code arrays [E],
int32 indices, float32 values.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import subprocess
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from sae_jax import files
from sae_jax.errors import ConfigError
from sae_jax.saes import pallas_kernels, sharded_topk

_SOURCE = os.path.join(os.path.dirname(__file__), "kernels", "sparse_kernels.cc")
_TARGETS = {"sae_topk": "SaeTopK", "sae_decode": "SaeDecode", "sae_gather_dot": "SaeGatherDot",
            "sae_scatter_rows": "SaeScatterRows", "sae_scatter_cols": "SaeScatterCols",
            "sae_batch_select": "SaeBatchSelect", "sae_kth_largest": "SaeKthLargest",
            "sae_batch_topk": "SaeBatchTopK"}
IMPLS = ("xla", "cpu_kernels", "pallas_gpu", "pallas_interpret")
_INF_BITS = 0x7F800000  # bit pattern of +inf, the largest non-NaN float32
CONFIG_IMPLS = ("xla", "cpu_kernels", "pallas_gpu")  # train.sparse_impl (None: by backend)
_PALLAS = ("pallas_gpu", "pallas_interpret")


def _cpu_signature() -> str:
  """What -march=native compiles for: the CPU model and flags (a cache shared by several
  machines must not hand one machine's binary to another)."""
  try:
    with open("/proc/cpuinfo") as f:
      lines = [l for l in f if l.startswith(("model name", "flags"))][:2]
  except OSError:
    lines = [platform.processor()]
  return platform.machine() + "".join(lines)


@functools.lru_cache(maxsize=1)
def _load_kernels() -> str | None:
  """Compile (once per source, JAX version and CPU; cached under the cache root) and
  register the CPU kernels. Returns None on success, else why they are unavailable."""
  if os.environ.get("SAE_JAX_KERNELS", "1") == "0":
    return "disabled by SAE_JAX_KERNELS=0"
  compiler = os.environ.get("CXX", "g++")
  flags = ["-O3", "-march=native", "-fopenmp-simd", "-std=c++17", "-shared", "-fPIC"]
  with open(_SOURCE, "rb") as f:
    source = f.read()
  key = hashlib.sha256(source + jax.__version__.encode() + " ".join([compiler] + flags).encode()
                       + _cpu_signature().encode()).hexdigest()[:16]
  out_dir = os.path.join(files.cache_root(), "kernels")
  lib_path = os.path.join(out_dir, f"sparse_kernels_{key}.so")
  if not os.path.exists(lib_path):
    def compile_to(tmp: str) -> None:
      cmd = [compiler, *flags, f"-I{jax.ffi.include_dir()}", _SOURCE, "-o", tmp]
      proc = subprocess.run(cmd, capture_output=True, text=True)
      if proc.returncode:
        raise OSError(f"{compiler} failed: "
                      f"{proc.stderr.strip().splitlines()[-1] if proc.stderr else ''}")
    try:  # atomic, so concurrent builders agree; 0o755: a shared cache serves other users
      files.atomic_write(lib_path, compile_to, mode=0o755)
    except OSError as e:
      return str(e) if str(e).startswith(compiler) else f"cannot build {lib_path}: {e}"
  lib = ctypes.cdll.LoadLibrary(lib_path)
  for name, symbol in _TARGETS.items():
    jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(lib, symbol)), platform="cpu")
  return None


def kernels_available() -> bool:
  """Whether the C++ CPU kernels built and registered (warns once with the reason if not)."""
  why = _load_kernels()
  if why is not None:
    warnings.warn(f"sae_jax CPU kernels unavailable ({why}); using the XLA sparse ops",
                  stacklevel=2)
  return why is None


def impl_for(mesh, requested: str | None = None) -> str:
  """The sparse ops' implementation for a mesh: `requested` (train.sparse_impl) after
  checking that it runs there, else by backend: "cpu_kernels" on one CPU device when the
  kernels build, "pallas_gpu" on one GPU, else "xla" (GSPMD partitions its gathers; a
  custom kernel on a multi-device mesh would see its operands gathered).

  Raises ConfigError for an unknown name, "cpu_kernels" off a one-device CPU mesh or when
  they cannot build, "pallas_gpu" off a GPU."""
  devices = mesh.devices.ravel()
  platform = devices[0].platform
  if requested is None:
    if len(devices) == 1 and platform == "cpu" and kernels_available():
      return "cpu_kernels"
    return "pallas_gpu" if len(devices) == 1 and platform == "gpu" else "xla"
  if requested not in IMPLS:
    raise ConfigError(f"train.sparse_impl={requested!r} must be one of {CONFIG_IMPLS} "
                      "(or unset: chosen by backend)")
  if requested == "cpu_kernels":
    if len(devices) != 1 or platform != "cpu":
      raise ConfigError(f"train.sparse_impl='cpu_kernels' runs on one CPU device, not on "
                        f"{len(devices)} {platform} device(s); use 'xla' or leave it unset")
    if (why := _load_kernels()) is not None:
      raise ConfigError(f"train.sparse_impl='cpu_kernels': the C++ kernels are unavailable "
                        f"({why}); use 'xla' or leave it unset")
  if requested == "pallas_gpu" and platform != "gpu":
    raise ConfigError(f"train.sparse_impl='pallas_gpu' needs a GPU backend, not {platform}; "
                      "use 'xla' or leave it unset")
  return requested


def _check(impl: str):
  """Raises ValueError for an unknown impl, RuntimeError if "cpu_kernels" cannot build."""
  if impl not in IMPLS:
    raise ValueError(f"sparse impl {impl!r} must be one of {IMPLS}")
  if impl == "cpu_kernels" and (why := _load_kernels()) is not None:
    raise RuntimeError(f"sae_jax CPU kernels unavailable ({why}); use impl='xla'")


# ---------------------------------------------------------------------------------------
# Primitive ops, both implementations.


def top_k(pre_BxN: jax.Array, k: int, impl: str = "xla", bias_N: jax.Array | None = None
          ) -> tuple[jax.Array, jax.Array]:
  """(values [B, k] descending, int32 indices [B, k]) of the k largest entries of each row
  of pre + bias (bias default 0; -inf masks a latent out); ties go to the lower index.
  "xla" and the Pallas impls use `sharded_topk.top_k` (exact under latent sharding); the
  C++ kernel adds the bias as it
  reads, so pre + bias is never written. A NaN row gets a NaN first value."""
  _check(impl)
  B, N = pre_BxN.shape
  bias_N = jnp.zeros((N,), jnp.float32) if bias_N is None else bias_N.astype(jnp.float32)
  if impl != "cpu_kernels":  # XLA's top_k (on a GPU, its own sort-free kernel)
    return sharded_topk.top_k(pre_BxN + bias_N, k)
  return jax.ffi.ffi_call("sae_topk", (jax.ShapeDtypeStruct((B, k), jnp.float32),
                                       jax.ShapeDtypeStruct((B, k), jnp.int32)))(
                                           pre_BxN.astype(jnp.float32), bias_N)


def batch_select(pre_BxN: jax.Array, cut: jax.Array, n_entries: int, impl: str = "xla"
                 ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """BatchTopK's code (Bussmann et al. 2024): (row_E, idx_E, pre_E) of the entries with
  pre >= cut and pre > 0, in row-major order, E = n_entries of them. Fewer are padded
  with (B - 1, 0, 0.0), which decode to nothing; more (ties at the cut) keep the first E.
  int32 flat indices: B * n_latents must stay below 2^31."""
  _check(impl)
  B, N = pre_BxN.shape
  if impl == "cpu_kernels":
    return jax.ffi.ffi_call("sae_batch_select", (jax.ShapeDtypeStruct((n_entries,), jnp.int32),
                                                 jax.ShapeDtypeStruct((n_entries,), jnp.int32),
                                                 jax.ShapeDtypeStruct((n_entries,), jnp.float32)))(
        pre_BxN.astype(jnp.float32), jnp.asarray(cut, jnp.float32).reshape(()))
  keep = ((pre_BxN >= cut) & (pre_BxN > 0)).reshape(-1)
  flat = jnp.nonzero(keep, size=n_entries, fill_value=B * N - 1)[0].astype(jnp.int32)
  valid = jnp.arange(n_entries) < jnp.sum(keep)
  return (jnp.where(valid, flat // N, B - 1).astype(jnp.int32),
          jnp.where(valid, flat % N, 0).astype(jnp.int32),
          jnp.where(valid, pre_BxN.reshape(-1)[flat], 0.0))


def _batch_topk_kernel(pre_BxN, bias_N, m: int):
  """The C++ kernel: (row_E, idx_E, pre_E, fallback) with E = m; fallback (int32 scalar) is
  1 when its one-pass candidate search fell back to the four reference passes."""
  out = (jax.ShapeDtypeStruct((m,), jnp.int32), jax.ShapeDtypeStruct((m,), jnp.int32),
         jax.ShapeDtypeStruct((m,), jnp.float32), jax.ShapeDtypeStruct((), jnp.int32))
  return jax.ffi.ffi_call("sae_batch_topk", out)(pre_BxN.astype(jnp.float32),
                                                 bias_N.astype(jnp.float32))


def batch_topk(pre_BxN: jax.Array, m: int, impl: str = "xla", bias_N: jax.Array | None = None
               ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """BatchTopK's code of v = pre + bias (bias default 0): (row_E, idx_E, v_E), E = m, the
  entries of v at or above its m-th largest ReLU value and > 0 (Bussmann et al. 2024,
  Sec. 3), exactly `batch_select(v, kth_largest(v, m), m)` (row-major order, ties at the
  cut: the first m; fewer padded with (B - 1, 0, 0.0)).

  "cpu_kernels" reads pre once (`sae_batch_topk` in `sae_jax/saes/kernels/`: a lower bound
  on the cut from 1/16 of the rows, then one pass collecting the entries above it, among
  which the cut is found exactly; it falls back to the four passes of `kth_largest` and
  `batch_select` when the bound is off), adding the bias as it reads, so v is never written.
  Other impls run `kth_largest` and `batch_select` on pre + bias.

  Raises ValueError unless 1 <= m <= pre_BxN.size."""
  _check(impl)
  B, N = pre_BxN.shape
  if not 1 <= m <= B * N:
    raise ValueError(f"m={m} must be in [1, {B * N}] (the number of entries)")
  bias_N = jnp.zeros((N,), jnp.float32) if bias_N is None else bias_N.astype(jnp.float32)
  if impl == "cpu_kernels":
    return _batch_topk_kernel(pre_BxN, bias_N, m)[:3]
  v_BxN = pre_BxN.astype(jnp.float32) + bias_N
  return batch_select(v_BxN, kth_largest(v_BxN, m, impl), m, impl)


def csr_offsets(sorted_E: jax.Array, n: int) -> jax.Array:
  """offsets [n + 1] of a sorted int array: segment j holds entries offsets[j] ..
  offsets[j + 1] - 1 (the entries equal to j)."""
  return jnp.searchsorted(sorted_E, jnp.arange(n + 1, dtype=sorted_E.dtype),
                          side="left").astype(jnp.int32)


def by_latent(row_E, idx_E, coef_E, n: int):
  """The code re-laid out for the weight gradients: (offsets [n + 1] over latents, row_E,
  coef_E) with the entries stably sorted by latent (a latent's entries stay in token
  order, so sums run in the same order as a row-major scatter-add)."""
  perm = jnp.argsort(idx_E, stable=True)
  return csr_offsets(idx_E[perm], n), row_E[perm], coef_E[perm]


def _threshold_bits(v_M: jax.Array, m: int) -> jax.Array:
  """int32 bit patterns of v (flattened) in [0, +inf]: their integer order is the float
  order (a negative value or -0.0 counts as 0, NaN as +inf)."""
  if not 1 <= m <= v_M.size:
    raise ValueError(f"m={m} must be in [1, {v_M.size}] (the number of entries)")
  bits = lax.bitcast_convert_type(v_M.astype(jnp.float32).reshape(-1), jnp.int32)
  return jnp.clip(bits, 0, _INF_BITS)


def kth_largest(v_M: jax.Array, m: int, impl: str = "xla") -> jax.Array:
  """The m-th largest entry of ReLU(v) (v float32, any shape), exactly: BatchTopK's cut, the
  k·B-th largest ReLU pre-activation of the batch (Bussmann et al. 2024, Sec. 3). Negative
  entries count as 0 (so v = pre needs no ReLU pass), NaN as +inf.

  A radix select over the int32 bit patterns of the values (`_threshold_bits`), where a
  bisection needs 31 compare-and-count passes and `lax.top_k` with k in the tens of
  thousands sorts:
    "xla": two histogram passes (scatter-adds): the top 15 bits, then the low 16 bits of
      the values in the chosen bin; "cpu_kernels": the same two passes in C++;
    Pallas impls: 8 passes of `pallas_kernels.radix_counts`, each counting the values at or
      above 16 edges, i.e. 4 bits of the answer per pass (a GPU histogram would need atomics,
      all contending on the bin of 0 that holds about half of the ReLU outputs).

  Returns 0 when fewer than m entries are positive. Raises ValueError unless
  1 <= m <= v_M.size.
  """
  _check(impl)
  bits_M = _threshold_bits(v_M, m)
  if impl == "cpu_kernels":  # the same two passes in C++, over v itself (ReLU as it reads)
    return jax.ffi.ffi_call("sae_kth_largest", jax.ShapeDtypeStruct((), jnp.float32))(
        v_M.astype(jnp.float32).reshape(-1), jnp.int32(m))
  if impl in _PALLAS:
    padded = pallas_kernels.pad_bits(bits_M)
    R, lo, width = pallas_kernels.RADIX, jnp.int32(0), 1 << 31  # answer in [lo, lo + width)
    j_R = jnp.arange(R, dtype=jnp.int32)
    while width > 1:
      step = max(1, width // R)
      counts_R = pallas_kernels.radix_counts(padded, lo + j_R * step,
                                             interpret=impl == "pallas_interpret")
      in_range_R = np.arange(R) * step < width  # static: the last pass has 8 edges
      lo = lo + step * (jnp.sum(in_range_R & (counts_R >= m)) - 1)
      width = step
    return lax.bitcast_convert_type(lo, jnp.float32)

  def at_or_above(hist):  # [j] = count of values in bins >= j
    return jnp.cumsum(hist[::-1])[::-1]
  H, L = 1 << 15, 1 << 16
  hi_M = bits_M >> 16
  c1 = at_or_above(jnp.zeros((H,), jnp.int32).at[hi_M].add(1))
  b1 = jnp.sum(c1 >= m) - 1  # c1[0] = v.size >= m
  above = jnp.where(b1 + 1 < H, c1[jnp.minimum(b1 + 1, H - 1)], 0)
  lo_M = jnp.where(hi_M == b1, bits_M & (L - 1), L)  # L: outside the bin, dropped
  c2 = at_or_above(jnp.zeros((L,), jnp.int32).at[lo_M].add(1, mode="drop"))
  b2 = jnp.sum(c2 >= m - above) - 1
  return lax.bitcast_convert_type((b1 << 16) | b2, jnp.float32)


def _decode_fwd_impl(W_NxD, row_E, idx_E, pre_E, B, impl):
  _check(impl)
  if impl == "cpu_kernels":
    return jax.ffi.ffi_call("sae_decode", jax.ShapeDtypeStruct((B, W_NxD.shape[1]), jnp.float32))(
        W_NxD, row_E, idx_E, pre_E)
  acts_E = jnp.where(jnp.isnan(pre_E), pre_E, jax.nn.relu(pre_E))
  if impl in _PALLAS:
    return pallas_kernels.segment_gather_sum(csr_offsets(row_E, B), idx_E, acts_E, W_NxD,
                                             interpret=impl == "pallas_interpret")
  return jax.ops.segment_sum(acts_E[:, None] * W_NxD[idx_E], row_E, B, indices_are_sorted=True)


def _gather_dot(W_NxD, row_E, idx_E, g_BxD, impl):
  """W[idx_e] . g[row_e], shape [E]."""
  _check(impl)
  if impl == "cpu_kernels":
    return jax.ffi.ffi_call("sae_gather_dot", jax.ShapeDtypeStruct(idx_E.shape, jnp.float32))(
        W_NxD, row_E, idx_E, g_BxD)
  if impl in _PALLAS:
    return pallas_kernels.segment_gather_dot(csr_offsets(row_E, g_BxD.shape[0]), idx_E, W_NxD,
                                             g_BxD, interpret=impl == "pallas_interpret")
  return jnp.sum(W_NxD[idx_E] * g_BxD[row_E], axis=-1)


def scatter_rows(row_E, idx_E, coef_E, g_BxD, n: int, impl: str = "xla", transposed=False):
  """out[j] = sum_{e: idx_e = j} coef_e g[row_e]: [n, D], or [D, n] if transposed (the
  encoder gradient dW_enc; the Pallas impls write [n, D] rows and XLA transposes)."""
  _check(impl)
  D = g_BxD.shape[1]
  if impl == "cpu_kernels":
    name, shape = ("sae_scatter_cols", (D, n)) if transposed else ("sae_scatter_rows", (n, D))
    return jax.ffi.ffi_call(name, jax.ShapeDtypeStruct(shape, jnp.float32))(
        row_E, idx_E, coef_E, g_BxD)
  if impl in _PALLAS:  # one program per (latent, d_in block) sums its own entries
    offsets_N1, src_E, c_E = by_latent(row_E, idx_E, coef_E, n)
    out = pallas_kernels.segment_gather_sum(offsets_N1, src_E, c_E, g_BxD,
                                            interpret=impl == "pallas_interpret")
    return out.T if transposed else out
  out = jnp.zeros((n, D), jnp.float32).at[idx_E].add(coef_E[:, None] * g_BxD[row_E])
  return out.T if transposed else out


# ---------------------------------------------------------------------------------------
# Differentiable ops.


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def decode(W_NxD, row_E, idx_E, pre_E, B: int, impl: str = "xla"):
  """sum_{e: row_e = b} ReLU(pre_e) W[idx_e] for each token b: [B, D] (no bias).

  The VJP is sparse: dW[j] = sum_{e: idx_e = j} ReLU(pre_e) g[row_e] (a scatter-add of E
  rows), dpre_e = 1[pre_e > 0] W[idx_e] . g[row_e]. A NaN pre-activation propagates.
  """
  return _decode_fwd_impl(W_NxD, row_E, idx_E, pre_E, B, impl)


def _decode_fwd(W_NxD, row_E, idx_E, pre_E, B, impl):
  return _decode_fwd_impl(W_NxD, row_E, idx_E, pre_E, B, impl), (W_NxD, row_E, idx_E, pre_E)


def _decode_bwd(B, impl, res, g_BxD):
  W_NxD, row_E, idx_E, pre_E = res
  g_BxD = g_BxD.astype(jnp.float32)
  acts_E = jax.nn.relu(pre_E)
  dW = scatter_rows(row_E, idx_E, acts_E, g_BxD, W_NxD.shape[0], impl)
  dpre = jnp.where(pre_E > 0, _gather_dot(W_NxD, row_E, idx_E, g_BxD, impl), 0.0)
  return dW, None, None, dpre


decode.defvjp(_decode_fwd, _decode_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(7,))
def select(W_DxN, b_enc_N, b_pre_D, x_BxD, row_E, idx_E, pre_E, impl: str = "xla"):
  """The pre-activations of the selected (token, latent) pairs, as a function of the
  encoder parameters: pre_E[e] = (x[row_e] - b_pre) . W_enc[:, idx_e] + b_enc[idx_e].

  pre_E must already hold those values (the caller computed every pre-activation to
  choose the code); the forward returns it, and the VJP touches only the E pairs:
  dW_enc[:, j] = sum_{e: idx_e = j} g_e (x[row_e] - b_pre), db_enc[j] = sum g_e,
  db_pre = -W_enc db_enc, dx[b] = sum_{e: row_e = b} g_e W_enc[:, idx_e].
  """
  del W_DxN, b_enc_N, b_pre_D, x_BxD, row_E, idx_E, impl
  return pre_E


def _select_fwd(W_DxN, b_enc_N, b_pre_D, x_BxD, row_E, idx_E, pre_E, impl):
  return pre_E, (W_DxN, b_pre_D, x_BxD, row_E, idx_E)


def _select_bwd(impl, res, g_E):
  W_DxN, b_pre_D, x_BxD, row_E, idx_E = res
  g_E = g_E.astype(jnp.float32)
  n = W_DxN.shape[1]
  xc_BxD = (x_BxD - b_pre_D).astype(jnp.float32)
  dW = scatter_rows(row_E, idx_E, g_E, xc_BxD, n, impl, transposed=True)
  db_enc = jnp.zeros((n,), jnp.float32).at[idx_E].add(g_E)
  db_pre = -(W_DxN @ db_enc)
  dx = jax.ops.segment_sum(g_E[:, None] * W_DxN.T[idx_E], row_E, x_BxD.shape[0],
                           indices_are_sorted=True)  # removed by XLA when unused
  return dW, db_enc, db_pre, dx.astype(x_BxD.dtype), None, None, None


select.defvjp(_select_fwd, _select_bwd)


def rows_of(B: int, k: int) -> jax.Array:
  """row_E of a [B, k] code flattened row-major: [0]*k + [1]*k + ..., int32 [B*k]."""
  return jnp.repeat(jnp.arange(B, dtype=jnp.int32), k, total_repeat_length=B * k)


def encoder_matmul(params, x_BxD: jax.Array, compute_dtype: str = "float32",
                   bias: bool = True) -> jax.Array:
  """W_enc (x - b_pre) (+ b_enc if bias), [B, n_latents] float32, with the matmul's inputs
  in compute_dtype ("float32" or "bfloat16": float32 accumulation, float32 master
  params)."""
  xc = x_BxD - params["b_pre"]
  if compute_dtype == "float32":
    out = xc @ params["W_enc"]
  else:
    dt = jnp.dtype(compute_dtype)
    out = lax.dot(xc.astype(dt), params["W_enc"].astype(dt), preferred_element_type=jnp.float32)
  return out + params["b_enc"] if bias else out

