"""Splicing an SAE into the language model: downstream loss and ablation sparsity.

The hooked activation of a cache at layer L is ``hidden_states[L]``, the INPUT of block
L (`sae_jax.data.lm.residual_stream`). A splice is a forward pre-hook on block L that
replaces that input, at positions ``start..S-1``, by something else:

* the SAE's reconstruction (normalise, encode, decode, un-normalise);
* zeros (zero-ablation) or the train-split mean activation (mean-ablation);
* the reconstruction with one latent zeroed at one position (ablation sparsity).

Convention: ``start = 1`` when the cache drops position 0 (``exclude_first``, the BOS /
attention-sink position the SAE never saw), else 0. Position 0 then stays clean, and
the next-token losses are averaged over the predictions made at positions
``start..S-2`` (the targets ``start+1..S-1``), the positions a splice can change.
Blocks 0..L-1 are the same for every replacement of a batch, so `Splicer` runs them once
and then only blocks L.. (plus the final norm and LM head) per replacement, after
checking once per model that this equals a full forward. Everything runs in the LM's
dtype on its device; sums are accumulated in float64.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Mapping

import numpy as np
import torch

from sae_jax.data import lm as lm_lib
from sae_jax.errors import ConfigError

Replace = Callable[[torch.Tensor], torch.Tensor]  # h [B, T, D] -> replacement [B, T, D]


@contextlib.contextmanager
def spliced(model, layer: int, replace: Replace | None, start: int):
  """Within the block, block `layer`'s input at positions start.. is ``replace(h)``.

  `replace` receives the original input ``h[:, start:]`` [B, S - start, D] and returns a
  tensor of the same shape; None leaves the model unchanged. Positions < start keep the
  original values, so a `replace` returning its input leaves every logit bit-for-bit
  unchanged.

  Raises:
    ConfigError: layer outside 0..n_layers-1 (hidden_states[n_layers] is the output of
      the final norm, not the input of a block, so it cannot be spliced).
  """
  blocks = lm_lib.decoder_layers(model)
  if not 0 <= layer < len(blocks):
    raise ConfigError(f"cannot splice at layer {layer}: the model has blocks 0..{len(blocks) - 1} "
                      "(hidden_states[n_layers] is the final norm's output)")
  if replace is None:
    yield
    return

  def hook(_module, args, kwargs):
    h = args[0] if args else kwargs["hidden_states"]
    new = h.clone()
    new[:, start:] = replace(h[:, start:]).to(h.dtype)
    if args:
      return (new, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": new}

  handle = blocks[layer].register_forward_pre_hook(hook, with_kwargs=True)
  try:
    yield
  finally:
    handle.remove()


def logits(model, ids_BxS: torch.Tensor, layer: int, replace: Replace | None,
           start: int) -> torch.Tensor:
  """Next-token logits [B, S, V] (float32) of the LM with block `layer`'s input spliced."""
  with torch.inference_mode(), spliced(model, layer, replace, start):
    return model(input_ids=ids_BxS, use_cache=False).logits.float()


class _StopForward(Exception):
  pass


class Splicer:
  """One batch of contexts run once up to block `layer`, then the rest of the model for
  any number of replacements of block `layer`'s input: what every variant of a splice
  shares (blocks 0..layer-1) is computed once.

  The shared-prefix path runs blocks layer.. with the arguments the model passed to
  block `layer`, then the final norm and LM head (Llama-like models: ``model.norm`` and
  ``lm_head``). It is checked once per model against a full forward; where it differs
  (or the layout is unknown) every replacement runs the full model with a pre-hook.
  """

  _verified: dict = {}

  def __init__(self, model, ids_BxS: torch.Tensor, layer: int):
    self.model, self.ids, self.layer = model, ids_BxS, layer
    self.blocks = lm_lib.decoder_layers(model)
    if not 0 <= layer < len(self.blocks):
      raise ConfigError(f"cannot splice at layer {layer}: the model has blocks "
                        f"0..{len(self.blocks) - 1} (hidden_states[n_layers] is the final norm's output)")
    captured = {}

    def hook(_module, args, kwargs):
      captured["args"], captured["kwargs"] = args, kwargs
      raise _StopForward

    handle = self.blocks[layer].register_forward_pre_hook(hook, with_kwargs=True)
    try:
      with torch.inference_mode():
        model(input_ids=ids_BxS, use_cache=False)
    except _StopForward:
      pass
    finally:
      handle.remove()
    args, self.kwargs = captured["args"], captured["kwargs"]
    self.h = args[0] if args else self.kwargs["hidden_states"]
    self.rest = args[1:]
    if not args:
      self.kwargs = {k: v for k, v in self.kwargs.items() if k != "hidden_states"}
    self.fast = self._check_fast()

  def _suffix(self, h):
    inner = getattr(self.model, "model", None)
    with torch.inference_mode():
      for blk in self.blocks[self.layer:]:
        out = blk(h, *self.rest, **self.kwargs)
        h = out[0] if isinstance(out, tuple) else out
      return self.model.lm_head(inner.norm(h)).float()

  def _check_fast(self) -> bool:
    key = (id(self.model), self.layer)
    if key not in Splicer._verified:
      ok = hasattr(getattr(self.model, "model", None), "norm") and hasattr(self.model, "lm_head")
      if ok:
        try:
          full = logits(self.model, self.ids, self.layer, None, 0)
          ok = torch.allclose(self._suffix(self.h), full, atol=1e-4, rtol=1e-4)
        except Exception:  # pylint: disable=broad-except
          ok = False
      Splicer._verified = {key: ok}  # one model at a time
    return Splicer._verified[key]

  def logits(self, replace: Replace | None, start: int) -> torch.Tensor:
    """Logits [B, S, V] float32 with positions start.. of block `layer`'s input replaced."""
    if not self.fast:
      return logits(self.model, self.ids, self.layer, replace, start)
    h = self.h
    if replace is not None:
      h = h.clone()
      h[:, start:] = replace(self.h[:, start:]).to(h.dtype)
    return self._suffix(h)


def _token_losses(logp_BxTxV: torch.Tensor, targets_BxT: torch.Tensor) -> torch.Tensor:
  return -logp_BxTxV.gather(-1, targets_BxT[..., None])[..., 0]


def downstream_loss(model, tokens_CxS: np.ndarray, layer: int, start: int,
                    reconstructions: Mapping[str, Replace], mean_D: np.ndarray | None = None,
                    batch_size: int = 8) -> dict:
  """Next-token cross-entropy of the LM with SAE reconstructions spliced in, against the
  clean run and the zero- and mean-ablation baselines (Gao et al. 2024, Sec. 4.1
  "downstream loss"; SAEBench's "loss recovered", Karvonen et al. 2025).

  Args:
    model: a transformers causal LM.
    tokens_CxS: int [C, S] held-out contexts (`ActivationCache.tokens("eval")`).
    layer: the hooked layer (splice at the input of block `layer`).
    start: first spliced position (1 when the cache excludes position 0, see module doc).
    reconstructions: name -> `Replace` (e.g. `SAEOnRaw.reconstruct_torch`); all are
      evaluated in the same pass, so the clean and ablation runs are shared.
    mean_D: the mean activation for mean-ablation (train split); None skips it.
    batch_size: contexts per forward pass.

  Returns:
    {"clean": {"ce"}, "zero": {"ce", "kl"}, "mean": {...}, name: {"ce", "kl",
    "delta_ce", "loss_recovered_zero", "loss_recovered_mean"}, "n_tokens"}: ce in nats per
    token, kl = KL(clean || spliced) in nats per token, loss recovered
    = (CE_zero - CE_sae) / (CE_zero - CE_clean) (and with CE_mean).

  Raises:
    ConfigError: as `spliced`, or contexts too short to predict a token after start.
  """
  tok = np.asarray(tokens_CxS, np.int64)
  S = tok.shape[1]
  if S - start < 2:
    raise ConfigError(f"contexts of {S} tokens leave nothing to predict after position {start}")
  device = next(model.parameters()).device
  variants: dict[str, Replace | None] = {"zero": lambda h: torch.zeros_like(h)}
  if mean_D is not None:
    mean = torch.as_tensor(np.asarray(mean_D, np.float32), device=device)
    variants["mean"] = lambda h: mean.to(h.dtype).expand_as(h)
  variants.update(reconstructions)
  sums = {name: {"ce": 0.0, "kl": 0.0} for name in ["clean", *variants]}
  n = 0
  for b in range(0, len(tok), batch_size):
    ids_BxS = torch.from_numpy(tok[b:b + batch_size]).to(device)
    targets_BxT = ids_BxS[:, start + 1:]
    run = Splicer(model, ids_BxS, layer)
    logp_clean = torch.log_softmax(run.logits(None, start)[:, start:-1], -1)
    sums["clean"]["ce"] += float(_token_losses(logp_clean, targets_BxT).double().sum())
    p_clean = logp_clean.exp()
    for name, replace in variants.items():
      logp = torch.log_softmax(run.logits(replace, start)[:, start:-1], -1)
      sums[name]["ce"] += float(_token_losses(logp, targets_BxT).double().sum())
      sums[name]["kl"] += float((p_clean * (logp_clean - logp)).sum(-1).double().sum())
    n += targets_BxT.numel()
  out: dict = {"n_tokens": n, "clean": {"ce": sums["clean"]["ce"] / n}}
  for name in variants:
    out[name] = {k: v / n for k, v in sums[name].items()}
  ce_clean = out["clean"]["ce"]
  for name in reconstructions:
    r = out[name]
    r["delta_ce"] = r["ce"] - ce_clean
    for base in ("zero", "mean"):
      if base in out:
        gap = out[base]["ce"] - ce_clean
        r[f"loss_recovered_{base}"] = (out[base]["ce"] - r["ce"]) / gap if gap else float("nan")
  return out


# -------------------------------------------------------------------- ablation sparsity


def effect_sparsity(delta_TxV: np.ndarray) -> tuple[float, float]:
  """((L1/L2)^2, (L1/L2)^2 / (T*V)) of a latent's effect on the logits.

  Following Gao et al. 2024, Sec. 4.5: the median over the vocabulary is subtracted at
  each position (a constant shift of all logits does not change the probabilities), the
  T positions are concatenated into one vector of T*V numbers, and its sparsity is
  (L1/L2)^2, "an effective number of vocab tokens affected" (1 for a one-hot effect, T*V
  for a uniform one); the paper reports it divided by T*V (a fraction in (0, 1], smaller
  is sparser). NaN for an effect that is zero after the median is removed.
  """
  d = np.asarray(delta_TxV, np.float64)
  d = d - np.median(d, axis=-1, keepdims=True)
  l1, l2 = np.abs(d).sum(), np.sqrt((d**2).sum())
  if l2 == 0:
    return float("nan"), float("nan")
  eff = float((l1 / l2) ** 2)
  return eff, eff / d.size


def ablation_sparsity(model, tokens_CxS: np.ndarray, layer: int, start: int, sae,
                      occurrences: list[tuple[int, int, int]], n_future: int = 16,
                      batch_size: int = 8) -> list[dict]:
  """Sparsity of the downstream effect of ablating single latents (Gao et al. 2024, Sec. 4.5).

  For each occurrence (latent j, context c, position p) where j fires: splice the SAE
  reconstruction into context c (the baseline), then the reconstruction with z_j zeroed
  at position p only, and compare the logits at positions p..p+n_future-1 (positions
  before p cannot change). See `effect_sparsity` for the measure.

  Args:
    sae: a `sae_jax.evals.suite.SAEOnRaw` (encode/decode of raw activations).
    occurrences: (latent, context, position) triples, position >= start.

  Returns:
    One dict per occurrence: latent, context, position, activation (z_j in the live run),
    effective_logits ((L1/L2)^2), fraction ((L1/L2)^2 / (T*V)), n_positions (T).
  """
  tok = np.asarray(tokens_CxS, np.int64)
  S = tok.shape[1]
  device = next(model.parameters()).device
  out = []
  for b in range(0, len(occurrences), batch_size):
    items = occurrences[b:b + batch_size]
    ids_BxS = torch.from_numpy(tok[[c for _, c, _ in items]]).to(device)
    run = Splicer(model, ids_BxS, layer)
    base = run.logits(sae.reconstruct_torch, start)
    live = []

    def ablate(h_BxTxD):
      B, T, D = h_BxTxD.shape
      x = h_BxTxD.reshape(B * T, D).float().cpu().numpy()
      z, norm = sae.encode(x)
      z = z.reshape(B, T, -1).copy()
      for i, (j, _, p) in enumerate(items):
        live.append(float(z[i, p - start, j]))
        z[i, p - start, j] = 0.0
      x_hat = sae.decode(z.reshape(B * T, -1), norm)
      return torch.from_numpy(np.array(x_hat).reshape(B, T, D)).to(h_BxTxD.device)

    abl = run.logits(ablate, start)
    for i, (j, c, p) in enumerate(items):
      end = min(S, p + n_future)
      delta = (abl[i, p:end] - base[i, p:end]).cpu().numpy()
      eff, frac = effect_sparsity(delta) if live[i] > 0 else (float("nan"), float("nan"))
      out.append(dict(latent=int(j), context=int(c), position=int(p), activation=live[i],
                      effective_logits=eff, fraction=frac, n_positions=end - p))
  return out
