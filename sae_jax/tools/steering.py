"""Steering: run the LM with some SAE latents clamped (or shifted) at the hooked layer.

At block L's input (``hidden_states[L]``, the site the SAE was trained on) every token's
residual h is replaced by

    h' = h + (decode(z') - decode(z)) = h + ((z' - z) @ W_dec) * scale

with z = encode(h) and z' = z with latent i set to V ("clamp") or increased by V ("add"),
both in the SAE's units, and `scale` the per-token factor that un-normalises (the SAE
error term h - decode(z) is kept, as in SAELens' use_error_term / Templeton et al. 2024's
feature steering). Hence with no change to z, h' = h exactly and the LM's logits are
bit-for-bit the unsteered ones.

    clamps = [Clamp(latent=123, value=8.0)]
    logits = steered_logits(model, ids_BxS, params, cfg, layer, clamps)
    out = generate(model, tokenizer, params, cfg, layer, "The", clamps)   # both texts

`params, cfg` come from `sae_jax.tools.interchange.load` (run dir, export, SAELens, OpenAI).
"""

from __future__ import annotations

import contextlib
from typing import NamedTuple, Sequence

import numpy as np
import torch

from sae_jax.data import lm as lm_lib
from sae_jax.errors import ConfigError
from sae_jax.tools import interchange

MODES = ("clamp", "add")


class Clamp(NamedTuple):
  """Set latent `latent` to `value` (mode "clamp") or add `value` to it (mode "add")."""
  latent: int
  value: float
  mode: str = "clamp"


def check_clamps(clamps: Sequence[Clamp], n_latents: int) -> None:
  """Raise ConfigError for a latent out of range or an unknown mode."""
  for c in clamps:
    if not 0 <= int(c.latent) < n_latents:
      raise ConfigError(f"latent {c.latent} is out of range (the SAE has {n_latents} latents: "
                        f"use 0..{n_latents - 1})")
    if c.mode not in MODES:
      raise ConfigError(f"steering mode {c.mode!r} is not one of {', '.join(MODES)}")


def edit_latents(z_BxN: np.ndarray, clamps: Sequence[Clamp]) -> np.ndarray:
  """z' = z with each clamp applied in order (a copy)."""
  z = np.array(z_BxN, np.float32, copy=True)
  for c in clamps:
    if c.mode == "clamp":
      z[:, c.latent] = np.float32(c.value)
    else:
      z[:, c.latent] += np.float32(c.value)
  return z


def steering_delta(params: dict, cfg: dict, h_BxD: np.ndarray, clamps: Sequence[Clamp]
                   ) -> np.ndarray:
  """decode(z') - decode(z) in raw space [B, d_in] for raw residuals h [B, d_in]:
  ((z' - z) @ W_dec) * scale (decode is affine, so b_pre and the mean cancel). Exactly 0
  on tokens where z' == z."""
  z, norm = interchange.encode(params, cfg, h_BxD)
  dz = edit_latents(z, clamps) - z
  if not dz.any():
    return np.zeros_like(h_BxD, dtype=np.float32)
  return (dz @ np.asarray(params["W_dec"], np.float32)) * norm.scale_Bx1


@contextlib.contextmanager
def steer(model, params: dict, cfg: dict, layer: int, clamps: Sequence[Clamp],
          positions: Sequence[int] | None = None, skip_first: bool = True):
  """While active, block `layer` of `model` sees h' (module docstring) instead of h.

  Args:
    model: a transformers causal LM (`lm.decoder_layers` finds its blocks).
    params, cfg: the SAE (`interchange.load`).
    layer: the hooked layer L (the SAE's training site hidden_states[L]).
    clamps: the latent edits; none leaves the model unchanged.
    positions: absolute token positions to steer (None: all). Generated tokens have
      positions >= the prompt length.
    skip_first: leave position 0 alone (the attention sink the SAE never saw when the
      cache excluded it; `data.exclude_first`).

  Raises:
    ConfigError: a latent out of range, an unknown mode, or a layer with no block
      (layer == n_layers is the final norm's output, not a block input).
  """
  blocks = lm_lib.decoder_layers(model)
  if not 0 <= layer < len(blocks):
    raise ConfigError(f"cannot steer at layer {layer}: {type(model).__name__} has blocks "
                      f"0..{len(blocks) - 1} (layer L steers the input of block L)")
  check_clamps(clamps, int(np.asarray(params["W_dec"]).shape[0]))
  want = None if positions is None else np.asarray(sorted(set(int(p) for p in positions)))

  def hook(_module, args, kwargs):
    h = args[0] if args else kwargs["hidden_states"]
    B, S, D = h.shape
    pos_ids = kwargs.get("position_ids")
    if pos_ids is None:
      cache_pos = kwargs.get("cache_position")
      pos_BxS = (np.broadcast_to(cache_pos.cpu().numpy(), (B, S)) if cache_pos is not None
                 else np.broadcast_to(np.arange(S), (B, S)))
    else:
      pos_BxS = np.broadcast_to(pos_ids.cpu().numpy(), (B, S))
    mask_BxS = np.ones((B, S), bool)
    if skip_first:
      mask_BxS &= pos_BxS != 0
    if want is not None:
      mask_BxS &= np.isin(pos_BxS, want)
    if not clamps or not mask_BxS.any():
      return None
    h_np = h.detach().float().cpu().numpy().reshape(B * S, D)
    rows = np.flatnonzero(mask_BxS.reshape(-1))
    delta = np.zeros((B * S, D), np.float32)
    delta[rows] = steering_delta(params, cfg, h_np[rows], clamps)
    h2 = h + torch.from_numpy(delta.reshape(B, S, D)).to(h.dtype).to(h.device)
    if args:
      return (h2,) + tuple(args[1:]), kwargs
    return args, dict(kwargs, hidden_states=h2)

  handle = blocks[layer].register_forward_pre_hook(hook, with_kwargs=True)
  try:
    yield
  finally:
    handle.remove()


def steered_logits(model, input_ids_BxS: torch.Tensor, params: dict, cfg: dict, layer: int,
                   clamps: Sequence[Clamp], positions: Sequence[int] | None = None,
                   skip_first: bool = True) -> torch.Tensor:
  """The LM's logits [B, S, vocab] (float32) with the clamps applied (see `steer`)."""
  with torch.inference_mode(), steer(model, params, cfg, layer, clamps, positions, skip_first):
    return model(input_ids=input_ids_BxS, use_cache=False).logits.float()


def generate(model, tokenizer, params: dict, cfg: dict, layer: int, prompt: str,
             clamps: Sequence[Clamp], max_new_tokens: int = 40, seed: int | None = None,
             temperature: float = 1.0, skip_first: bool = True) -> dict:
  """Generate from `prompt` with and without the clamps.

  Greedy unless `seed` is given (then sampling at `temperature`, the same seed for both
  runs). The steering applies to the prompt's tokens and to every generated one.

  Returns:
    dict(prompt, steered, unsteered): the continuations (prompt excluded) as text, and
    steered_ids / unsteered_ids (lists of token ids).
  """
  ids = tokenizer(prompt, return_tensors="pt").input_ids.to(model.device)
  kw = dict(max_new_tokens=int(max_new_tokens), pad_token_id=tokenizer.eos_token_id)
  if seed is None:
    kw.update(do_sample=False)
  else:
    kw.update(do_sample=True, temperature=float(temperature), top_k=0, top_p=1.0)
  out = {"prompt": prompt}
  for name, cl in (("unsteered", []), ("steered", list(clamps))):
    if seed is not None:
      torch.manual_seed(int(seed))
    with torch.inference_mode(), steer(model, params, cfg, layer, cl, skip_first=skip_first):
      gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kw)
    new = gen[0, ids.shape[1]:].tolist()
    out[name + "_ids"] = new
    out[name] = tokenizer.decode(new, skip_special_tokens=True)
  return out


def load(path: str, model: str | None = None, layer: int | None = None, device: str = "cpu",
         clamps: Sequence[Clamp] = ()):
  """(lm, tokenizer, params, cfg, layer) for steering with the SAE at `path`
  (`interchange.load`). The LM and layer default to the ones the SAE was trained on.
  `clamps` are checked against the SAE before the LM is loaded.

  Raises:
    ConfigError: no model or layer known for an imported SAE (pass them), a bad clamp, or
      as `interchange.load` / `lm.load_lm`.
  """
  params, cfg = interchange.load(path)
  check_clamps(clamps, int(np.asarray(params["W_dec"]).shape[0]))
  model = model or cfg.get("model")
  if not model:
    raise ConfigError(f"{path!r} does not say which LM it was trained on; pass --model")
  lm, tokenizer, info = lm_lib.load_lm(model, device)
  if layer is None:
    layer = cfg.get("layer")
  if layer is None:
    layer = lm_lib.middle_layer(info["n_layers"])
  if int(np.asarray(params["W_dec"]).shape[1]) != info["d_model"]:
    raise ConfigError(f"the SAE's d_in={np.asarray(params['W_dec']).shape[1]} does not match "
                      f"{model}'s d_model={info['d_model']}; pass the right --model")
  return lm, tokenizer, params, cfg, int(layer)
