"""Interchange with the SAE ecosystem, and one loader for every on-disk SAE.

    params, cfg = load(path)          # run dir, export dir, SAELens dir, OpenAI .pt, or
                                      # hf://owner/name[/subdir] (sae_jax.tools.hub)
    z, norm = encode(params, cfg, x_BxD)             # raw activations -> latents
    x_hat_BxD = decode(params, cfg, z, norm)          # latents -> raw activations

    to_saelens(path, out_dir)         # cfg.json + sae_weights.safetensors (SAELens >= 6)
    from_saelens(dir, out_dir)        # -> our export format (sae_jax.tools.export)
    from_openai(state_dict_or_path, out_dir)   # openai/sparse_autoencoder state dicts

`params, cfg` is the export format of `sae_jax.tools.export` (our param names, float32
numpy; cfg = its config.json). `encode` / `decode` work in the RAW activation space (the
LM's residual stream): they normalise, run the SAE (`sae_jax.tools.export_reference`, the
numpy twin of each built-in architecture; the architecture's own JAX encode for any
other registered one), and un-normalise, so the numbers can be compared across formats
whose normalisation conventions differ.

Normalisation conventions, mapped exactly (up to the eps each side uses):

  ours "unit_norm"   x_u = (x - mu) / ||x - mu||                    (Gao et al. 2024, 2.1)
  SAELens/OpenAI LN  x_l = (x - mu) / (std + 1e-5), std unbiased (divides by d - 1)
  so x_l = s * x_u with s = sqrt(d - 1) (up to eps / std ~ 1e-6). A TopK SAE on x_l with
  (W_enc', b_enc', b_dec', W_dec') equals ours on x_u with W_enc = s W_enc', b_enc = b_enc',
  b_pre = b_dec' / s, W_dec = W_dec' / s: the same latent values, and the reconstruction
  un-normalised by ``* ||x - mu|| + mu`` (ours) equals theirs ``* std + mu``.
  ours "mean_norm"   x_n = c x: folded into the weights for SAELens (W_enc c, b_dec / c,
  W_dec / c, normalize_activations "none"), as SAELens' fold_activation_norm_scaling_factor.

Raises `ConfigError` (one line, actionable) for anything that cannot be mapped exactly.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import tempfile
import zipfile
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from sae_jax import files, saes
from sae_jax.data import settings as data_settings
from sae_jax.errors import ConfigError
from sae_jax.tools import export, export_reference

SAELENS_CFG = "cfg.json"
SAELENS_WEIGHTS = "sae_weights.safetensors"
SAELENS_VERSION = "6.0.0"  # the cfg.json layout written here (top-level fields + metadata)
LN_EPS = 1e-5  # the eps of OpenAI's / SAELens' LN preprocessing
SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
HF_PREFIX = "hf://"
SPARSIFY_CFG, SPARSIFY_WEIGHTS = "cfg.json", "sae.safetensors"  # SparseCoder.save_to_disk



class Norm(NamedTuple):
  """Per-token un-normalisation: raw = normalised * scale_Bx1 + mu_Bx1."""
  mu_Bx1: np.ndarray
  scale_Bx1: np.ndarray


# ------------------------------------------------------------------ raw-space forward


def normalize(cfg: dict, x_BxD: np.ndarray) -> tuple[np.ndarray, Norm]:
  """Raw activations [B, d_in] -> (the SAE's inputs [B, d_in], the `Norm` that undoes it).

  unit_norm: mu = mean over d_in, scale = max(||x - mu||, 1e-6); mean_norm: mu = 0,
  scale = 1 / norm_scale; none: mu = 0, scale = 1. Raises ValueError for another.
  """
  x = np.asarray(x_BxD, np.float32)
  method = cfg["input_norm"]
  B = x.shape[0]
  if method == "unit_norm":
    mu = x.mean(axis=-1, keepdims=True)
    scale = np.maximum(np.linalg.norm(x - mu, axis=-1, keepdims=True), 1e-6)
    return (x - mu) / scale, Norm(mu, scale)
  if method == "mean_norm":
    c = np.float32(cfg["norm_scale"])
    return x * c, Norm(np.zeros((B, 1), np.float32), np.full((B, 1), 1 / c, np.float32))
  if method == "none":
    return x, Norm(np.zeros((B, 1), np.float32), np.ones((B, 1), np.float32))
  raise ValueError(f"unknown input_norm {method!r}")


def encode(params: dict, cfg: dict, x_BxD: np.ndarray) -> tuple[np.ndarray, Norm]:
  """Latents z [B, n_latents] of RAW activations x [B, d_in], and the `Norm` of x (for
  `decode`). The architecture's inference encoder (`export_reference.ENCODE_FORMULAS`)."""
  x_n, norm = normalize(cfg, x_BxD)
  if cfg["architecture"] in export_reference.KNOWN:
    return export_reference.encode_numpy(params, cfg, x_n), norm
  arch = saes.get(cfg["architecture"])  # a registered architecture without a numpy twin
  hp = arch.make_hyper(cfg.get("hyperparameters") or cfg, n_latents=int(cfg["n_latents"]),
                       input_scale=cfg.get("input_scale"))
  extras = {k: params[k] for k in params if k not in ("W_enc", "W_dec", "b_pre", "b_enc")}
  return np.asarray(arch.encode(params, x_n, extras, hp), np.float32), norm


def decode(params: dict, cfg: dict, z_BxN: np.ndarray, norm: Norm) -> np.ndarray:
  """The reconstruction in RAW space [B, d_in]: (W_dec^T z + b_pre) * scale + mu."""
  return export_reference.decode_numpy(params, cfg, z_BxN) * norm.scale_Bx1 + norm.mu_Bx1


# -------------------------------------------------------------------------- loading


def load(path: str) -> tuple[dict, dict]:
  """(params, cfg) in our export format from any supported SAE on disk.

  Args:
    path: a run directory (checkpoints/; its export/ is used when present, else the
      latest checkpoint is exported to a temporary directory), an export directory
      (config.json + sae.safetensors), a SAELens directory (cfg.json +
      sae_weights.safetensors), an EleutherAI sparsify directory (cfg.json +
      sae.safetensors, one hookpoint) or an OpenAI state dict file (.pt).

    May be "hf://owner/name[/subdir]": that folder of a Hugging Face Hub repository,
      fetched by `huggingface_hub.snapshot_download` (the hub cache first;
      HF_HUB_OFFLINE=1 never touches the network), then read as above.

  Raises:
    ConfigError: nothing loadable at `path`, or a format that cannot be mapped exactly.
  """
  if path.startswith(HF_PREFIX):
    path = hf_download(path)
  if os.path.isfile(path) and path.endswith(".safetensors"):
    path = os.path.dirname(os.path.abspath(path))  # a weights file: its directory
  elif os.path.isfile(path):
    return read_openai(path)
  if not os.path.isdir(path):
    raise ConfigError(f"{path!r} does not exist; give a run directory, an export directory, "
                      "a SAELens directory or an OpenAI .pt file")
  if (os.path.isfile(os.path.join(path, SPARSIFY_WEIGHTS))
      and os.path.isfile(os.path.join(path, SPARSIFY_CFG))
      and not os.path.isfile(os.path.join(path, "config.json"))):
    return read_sparsify(path)
  if os.path.isfile(os.path.join(path, "sae.safetensors")):
    return read_export(path)
  if os.path.isfile(os.path.join(path, SAELENS_CFG)):
    return read_saelens(path)
  if os.path.isdir(os.path.join(path, "checkpoints")):
    exp = os.path.join(path, "export")
    if os.path.isfile(os.path.join(exp, "config.json")):
      return read_export(exp)
    with tempfile.TemporaryDirectory() as tmp:
      try:
        export.export(path, tmp)
      except FileNotFoundError:
        raise ConfigError(f"{path!r} has no checkpoint yet; train it first") from None
      params, cfg = export_reference.load(tmp)
      return {k: np.array(v) for k, v in params.items()}, cfg
  raise ConfigError(f"{path!r} holds no SAE: expected checkpoints/, sae.safetensors + "
                    f"config.json, or {SAELENS_CFG} + {SAELENS_WEIGHTS}")


def parse_hf_path(path: str) -> tuple[str, str]:
  """"hf://owner/name[/subdir]" -> (repo_id, subdir or ""). Raises ConfigError."""
  parts = [p for p in path[len(HF_PREFIX):].split("/") if p]
  if len(parts) < 2:
    raise ConfigError(f"{path!r} is not hf://owner/name[/subdir]")
  return "/".join(parts[:2]), "/".join(parts[2:])


def hf_download(path: str) -> str:
  """The local folder of "hf://owner/name[/subdir]": `huggingface_hub.snapshot_download`
  of that subdir only, served from the hub cache when it is there (HF_HUB_OFFLINE=1:
  only from it).

  Raises:
    ConfigError: not cached while offline, not on the Hub, or no such folder.
  """
  import huggingface_hub  # pylint: disable=import-outside-toplevel  # only for hf:// paths
  repo_id, subdir = parse_hf_path(path)
  try:
    root = huggingface_hub.snapshot_download(
        repo_id, allow_patterns=[f"{subdir}/*"] if subdir else None)
  except Exception as e:  # pylint: disable=broad-except
    first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
    raise ConfigError(f"cannot fetch {path}: {type(e).__name__}: {first}") from None
  folder = os.path.join(root, subdir)
  if not os.path.isdir(folder):
    raise ConfigError(f"{path}: the repository {repo_id} has no folder {subdir!r}")
  return folder


def read_export(path: str) -> tuple[dict, dict]:
  """`export_reference.load`, with an unreadable export (truncated or corrupted
  sae.safetensors, config.json that is not JSON) named in a one-line ConfigError."""
  try:
    params, cfg = export_reference.load(path)
  except (SafetensorError, ValueError, UnicodeDecodeError) as e:
    why = (str(e).strip().splitlines() or [type(e).__name__])[0][:120]
    raise ConfigError(f"the export {path} cannot be read ({why}); delete it and rebuild it "
                      "with `sae-jax export RUN_DIR` (a sweep re-exports finished points)") from None
  if not isinstance(cfg, dict) or "architecture" not in cfg:
    raise ConfigError(f"{path}/config.json is not an export config (no architecture); delete "
                      "the export and rebuild it with `sae-jax export RUN_DIR`")
  return params, cfg


def write_export(params: dict, cfg: dict, out_dir: str) -> str:
  """Write (params, cfg) as an export directory (sae.safetensors + config.json, as
  `sae_jax.tools.export`); returns out_dir."""
  cfg = dict(cfg, tensors={k: list(np.shape(v)) for k, v in sorted(params.items())})
  export.write(params, cfg, out_dir)
  return out_dir


def _read_foreign(cfg_path: str, w_path: str, library: str, dtype) -> tuple[dict, dict]:
  """(config object, {name: array of `dtype`}) of another library's SAE folder, or a
  one-line ConfigError naming the file that is not valid JSON / readable safetensors."""
  try:
    with open(cfg_path, encoding="utf-8") as f:
      cfg = json.load(f)
  except (ValueError, UnicodeDecodeError) as e:
    raise ConfigError(f"{cfg_path} is not valid JSON ({type(e).__name__}: "
                      f"{str(e).splitlines()[0][:80]}); restore it from its source") from None
  if not isinstance(cfg, dict):
    raise ConfigError(f"{cfg_path} holds a JSON {type(cfg).__name__}, not a {library} config object")
  try:
    w = {k: np.asarray(v, dtype) for k, v in load_file(w_path).items()}
  except Exception as e:  # pylint: disable=broad-except  # safetensors' SafetensorError, OSError
    raise ConfigError(f"{w_path} is not a readable safetensors file ({type(e).__name__}); "
                      "restore it from its source") from None
  return cfg, w


def _base_cfg(architecture: str, d_in: int, n_latents: int, input_norm: str, **kw) -> dict:
  cfg = {"format": 1, "architecture": architecture, "d_in": int(d_in),
         "n_latents": int(n_latents), "k": None, "sparsity_coefficient": None,
         "input_norm": input_norm, "norm_scale": 1.0,
         "normalization": export_reference.NORM_FORMULAS.get(input_norm),
         "encode": saes.get(architecture).encode_formula,
         "decode": export_reference.DECODE_FORMULA}
  cfg.update(kw)
  return cfg


# -------------------------------------------------------------------------- SAELens


def hook_name(layer: int | None, site: str | None = None) -> str | None:
  """TransformerLens' name of our hook site (`sae_jax.data.settings.SITES`; default
  "residual": hidden_states[L], the input of block L)."""
  return None if layer is None else data_settings.hook_name(site or "residual", int(layer))


def to_saelens(path: str, out_dir: str) -> str:
  """Write an SAE (anything `load` reads) in the SAELens on-disk format.

  out_dir/cfg.json holds SAELens >= 6's fields (architecture, d_in, d_sae, dtype, device,
  apply_b_dec_to_input, normalize_activations, reshape_activations, k for topk, metadata
  {model_name, hook_name, hook_layer, context_size, ...}) plus the flat pre-6 ones
  (hook_name, hook_layer, activation_fn_kwargs, ...), and a "sae_jax" block that lets
  `from_saelens` restore our architecture and normalisation exactly. out_dir/
  sae_weights.safetensors holds W_enc [d_in, d_sae], b_enc [d_sae], W_dec [d_sae, d_in],
  b_dec [d_in] (+ threshold [d_sae] for jumprelu; b_gate, r_mag, b_mag for gated).

  Normalisation: unit_norm -> "layer_norm" with the sqrt(d_in - 1) rescaling of the module
  docstring; mean_norm -> folded into the weights, "none"; none -> "none".

  Raises:
    ConfigError: an architecture with no SAELens equivalent.
  """
  params, cfg = load(path)
  arch = cfg["architecture"]
  mapping = saes.get(arch).saelens
  if mapping is None:
    known = sorted(a for a in saes.names() if saes.get(a).saelens is not None)
    raise ConfigError(f"architecture {arch!r} has no SAELens equivalent; known: "
                      f"{', '.join(known)}")
  sl_arch, apply_b_dec = mapping
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  d_in, n = p["W_enc"].shape
  norm = cfg["input_norm"]
  if norm == "unit_norm":  # x_l = s x_u: W_enc / s, b_dec * s, W_dec * s
    s, sl_norm = math.sqrt(d_in - 1), "layer_norm"
    enc_mul, dec_mul = 1 / s, s
  elif norm == "mean_norm":  # x_n = c x: W_enc * c, b_dec / c, W_dec / c
    c = float(cfg["norm_scale"])
    sl_norm, enc_mul, dec_mul = "none", c, 1 / c
  elif norm == "none":
    sl_norm, enc_mul, dec_mul = "none", 1.0, 1.0
  else:
    raise ConfigError(f"input_norm {norm!r} has no SAELens equivalent")
  w = {"W_enc": p["W_enc"] * enc_mul, "W_dec": p["W_dec"] * dec_mul,
       "b_dec": p["b_pre"] * dec_mul}
  if arch == "gated":
    w.update(b_gate=p["b_gate"], r_mag=p["r_mag"], b_mag=p["b_mag"])
  else:
    w["b_enc"] = p["b_enc"]
  if arch == "jumprelu":
    w["threshold"] = np.exp(p["log_threshold"])
  elif arch in ("batchtopk", "matryoshka_batchtopk"):
    w["threshold"] = np.full((n,), float(np.asarray(p["threshold"]).reshape(-1)[0]))
  layer = cfg.get("layer")
  model = cfg.get("model")
  model_name = SMOLLM2_HUB_ID if model == "smollm2" else model
  meta = {"sae_lens_version": SAELENS_VERSION, "sae_lens_training_version": None,
          "model_name": model_name, "hook_name": hook_name(layer, cfg.get("site")),
          "hook_layer": layer,
          "hook_head_index": None, "context_size": cfg.get("context_length"),
          "prepend_bos": False, "dataset_path": (cfg.get("training_config") or {}).get(
              "data", {}).get("corpus"), "model_from_pretrained_kwargs": {}}
  sl_cfg = {
      "architecture": sl_arch, "d_in": int(d_in), "d_sae": int(n), "dtype": "float32",
      "device": "cpu", "apply_b_dec_to_input": apply_b_dec,
      "normalize_activations": sl_norm, "reshape_activations": "none", "metadata": meta,
      # pre-6 SAELens read these flat fields
      **{k: v for k, v in meta.items() if k != "sae_lens_version"},
      "activation_fn_str": "topk" if sl_arch == "topk" else "relu",
      "activation_fn_kwargs": {"k": int(cfg["k"])} if sl_arch == "topk" else {},
      "finetuning_scaling_factor": False, "dataset_trust_remote_code": True,
      "sae_jax": {"architecture": arch, "input_norm": norm,
                  "norm_scale": float(cfg.get("norm_scale") or 1.0), "k": cfg.get("k"),
                  "model": model, "layer": layer, "site": cfg.get("site")},
  }
  if sl_arch == "topk":
    sl_cfg["k"] = int(cfg["k"])
  weights = {k: np.ascontiguousarray(v, np.float32) for k, v in w.items()}
  files.atomic_write(os.path.join(out_dir, SAELENS_WEIGHTS), lambda p: save_file(weights, p))
  files.write_json_atomic(os.path.join(out_dir, SAELENS_CFG), sl_cfg)
  return out_dir


def read_saelens(path: str, norm_scale: float | None = None) -> tuple[dict, dict]:
  """(params, cfg) in our format from a SAELens directory (cfg.json +
  sae_weights.safetensors), written by SAELens or by `to_saelens`.

  Architectures: topk -> topk; standard -> relu_l1_unit_norm (apply_b_dec_to_input) or
  relu_l1; jumprelu -> jumprelu (b_dec folded into b_enc when applied to the input;
  thresholds must be >= 0); gated (apply_b_dec_to_input) -> gated. A "sae_jax" block
  (our own export) restores the original architecture and normalisation.

  Normalisation: none -> none; layer_norm -> unit_norm (rescaled, module docstring);
  expected_average_only_in -> mean_norm, needing `norm_scale` (SAELens keeps that factor
  outside the files).

  Raises:
    ConfigError: missing files, an unknown architecture or normalisation, or
      expected_average_only_in without norm_scale.
  """
  cfg_path, w_path = os.path.join(path, SAELENS_CFG), os.path.join(path, SAELENS_WEIGHTS)
  if not (os.path.isfile(cfg_path) and os.path.isfile(w_path)):
    raise ConfigError(f"{path!r} is not a SAELens directory: it needs {SAELENS_CFG} and "
                      f"{SAELENS_WEIGHTS}")
  sl, w = _read_foreign(cfg_path, w_path, "SAELens", np.float64)
  ours = sl.get("sae_jax") or {}
  meta = sl.get("metadata") or {}
  if "architecture" not in sl:
    raise ConfigError(f"{cfg_path} does not say which architecture it is (no 'architecture' "
                      "field); add one (topk, standard, jumprelu or gated) rather than have "
                      "sae_jax guess")
  sl_arch = sl["architecture"]
  act_fn = sl.get("activation_fn_str") or sl.get("activation_fn")
  if sl_arch != "topk" and act_fn not in (None, "relu"):
    raise ConfigError(f"{cfg_path} says architecture {sl_arch!r} with activation_fn "
                      f"{act_fn!r}, which disagree; for a TopK SAE set architecture to 'topk'")
  apply_b_dec = bool(sl.get("apply_b_dec_to_input", True))
  missing = [k for k in ("W_enc", "W_dec", "b_dec") if k not in w]
  if missing or w["W_enc"].ndim != 2:
    raise ConfigError(f"{w_path} lacks {missing or 'a 2-d W_enc'}; not SAELens weights")
  d_in, n = w["W_enc"].shape
  for field, want in (("d_in", d_in), ("d_sae", n)):
    if field in sl and sl[field] != want:
      raise ConfigError(f"{cfg_path} says {field}={sl[field]!r} but W_enc is {d_in} x {n}; "
                        "the config and weights do not belong together")
  sl_norm = sl.get("normalize_activations") or "none"
  if isinstance(sl_norm, bool):  # pre-6 boolean
    sl_norm = "expected_average_only_in" if sl_norm else "none"
  if sl_norm == "layer_norm":
    s = math.sqrt(d_in - 1)
    input_norm, enc_mul, dec_mul, scale = "unit_norm", s, 1 / s, 1.0
  elif sl_norm == "none" and ours.get("input_norm") == "mean_norm":  # undo our own fold
    c = float(ours["norm_scale"])
    input_norm, enc_mul, dec_mul, scale = "mean_norm", 1 / c, c, c
  elif sl_norm == "none":
    input_norm, enc_mul, dec_mul, scale = "none", 1.0, 1.0, 1.0
  elif sl_norm == "expected_average_only_in":
    if norm_scale is None:
      raise ConfigError(f"{path!r} uses normalize_activations='expected_average_only_in', "
                        "whose scaling factor is not in the files; pass norm_scale= "
                        "(sqrt(d_in) / mean activation norm)")
    input_norm, enc_mul, dec_mul, scale = "mean_norm", 1.0, 1.0, float(norm_scale)
  else:
    raise ConfigError(f"normalize_activations={sl_norm!r} has no exact sae_jax equivalent "
                      "(supported: none, layer_norm, expected_average_only_in)")
  W_enc = w["W_enc"] * enc_mul
  b_pre = w["b_dec"] * dec_mul
  p = {"W_enc": W_enc, "W_dec": w["W_dec"] * dec_mul, "b_pre": b_pre}
  k = None
  if sl_arch == "topk":
    arch = "topk"
    kwargs = sl.get("activation_fn_kwargs") or {}
    ks = [v for v in (sl.get("k"), kwargs.get("k") if isinstance(kwargs, dict) else None)
          if v is not None]
    if not ks:
      raise ConfigError(f"{cfg_path} is a topk SAE without k (cfg k or activation_fn_kwargs.k)")
    if len(ks) > 1 and ks[0] != ks[1]:
      raise ConfigError(f"{cfg_path} gives two values of k ({ks[0]!r}: cfg k, {ks[1]!r}: "
                        "activation_fn_kwargs.k); make them agree")
    k = ks[0]
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n:
      raise ConfigError(f"{cfg_path} has k={k!r}, which is not an integer in [1, d_sae={n}]; "
                        "fix k")
    if not apply_b_dec:
      raise ConfigError("a topk SAE with apply_b_dec_to_input=false has no sae_jax equivalent")
    p["b_enc"] = w["b_enc"]
  elif sl_arch == "standard":
    arch = "relu_l1_unit_norm" if apply_b_dec else "relu_l1"
    if ours.get("architecture") in ("relu_l1", "kl") and not apply_b_dec:
      arch = ours["architecture"]
    p["b_enc"] = w["b_enc"]
  elif sl_arch == "jumprelu":
    thr = w["threshold"]
    if ours.get("architecture") in ("batchtopk", "matryoshka_batchtopk") and apply_b_dec:
      arch = ours["architecture"]
      p["b_enc"], p["threshold"] = w["b_enc"], np.asarray(thr[0])
    else:
      if np.any(thr < 0):
        raise ConfigError(f"{path!r} has negative JumpReLU thresholds, which sae_jax's "
                          "JumpReLU (threshold = exp(log_threshold)) cannot represent")
      arch = "jumprelu"
      # our JumpReLU does not subtract b_pre in the encoder: fold it into b_enc
      p["b_enc"] = w["b_enc"] - (w["b_dec"] * float(apply_b_dec)) @ w["W_enc"]
      with np.errstate(divide="ignore"):
        p["log_threshold"] = np.log(thr)
  elif sl_arch == "gated":
    if not apply_b_dec:
      raise ConfigError("a gated SAE with apply_b_dec_to_input=false has no sae_jax equivalent")
    arch = "gated"
    p.update(b_gate=w["b_gate"], r_mag=w["r_mag"], b_mag=w["b_mag"])
  else:
    raise ConfigError(f"SAELens architecture {sl_arch!r} is not supported (topk, standard, "
                      "jumprelu, gated)")
  layer = ours.get("layer", meta.get("hook_layer", sl.get("hook_layer")))
  cfg = _base_cfg(arch, d_in, n, input_norm, k=None if k is None else int(k),
                  norm_scale=scale, model=ours.get("model") or meta.get("model_name")
                  or sl.get("model_name"), layer=layer,
                  **({"site": ours["site"]} if ours.get("site") else {}),
                  hook_name=meta.get("hook_name") or sl.get("hook_name"),
                  context_length=meta.get("context_size") or sl.get("context_size"),
                  imported_from=f"saelens:{os.path.abspath(path)}")
  return {k_: np.asarray(v, np.float32) for k_, v in p.items()}, cfg


def from_saelens(path: str, out_dir: str, norm_scale: float | None = None) -> str:
  """`read_saelens` written as an export directory (see `write_export`)."""
  return write_export(*read_saelens(path, norm_scale), out_dir)


# -------------------------------------------------------------------------- sparsify


def read_sparsify(path: str) -> tuple[dict, dict]:
  """(params, cfg) in our format from one hookpoint's folder of EleutherAI's sparsify
  (`SparseCoder.save_to_disk`: cfg.json with d_in, k, activation, transcode,
  skip_connection; sae.safetensors with encoder.weight [n_latents, d_in], encoder.bias
  [n_latents], W_dec [n_latents, d_in], b_dec [d_in]).

  sparsify's TopK SAE computes z = TopK_k(ReLU(encoder(x - b_dec))) and x_hat = W_dec^T z
  + b_dec on raw activations, which is our topk with input_norm "none": W_enc =
  encoder.weight^T, b_enc = encoder.bias, b_pre = b_dec.

  Raises:
    ConfigError: unreadable files, a transcoder, a skip connection, an activation other
      than topk, or shapes that disagree with cfg.json.
  """
  cfg_path, w_path = os.path.join(path, SPARSIFY_CFG), os.path.join(path, SPARSIFY_WEIGHTS)
  sp, w = _read_foreign(cfg_path, w_path, "sparsify", np.float32)
  missing = [k for k in ("encoder.weight", "encoder.bias", "W_dec", "b_dec") if k not in w]
  if missing:
    raise ConfigError(f"{w_path} lacks {missing}; not sparsify weights (SparseCoder)")
  for flag, what in (("transcode", "a transcoder"), ("skip_connection", "a skip connection")):
    if sp.get(flag):
      raise ConfigError(f"{cfg_path} is {what}, which sae_jax's SAEs cannot represent")
  if sp.get("activation", "topk") != "topk":
    raise ConfigError(f"{cfg_path} has activation {sp.get('activation')!r}; only sparsify's "
                      "topk maps exactly to sae_jax")
  n, d_in = w["encoder.weight"].shape
  k = sp.get("k")
  if (w["W_dec"].shape != (n, d_in) or w["b_dec"].shape != (d_in,)
      or sp.get("d_in", d_in) != d_in):
    raise ConfigError(f"{path!r}: cfg.json says d_in={sp.get('d_in')!r} and the weights are "
                      f"encoder {n} x {d_in}, W_dec {tuple(w['W_dec'].shape)}; the config and "
                      "weights do not belong together")
  if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n:
    raise ConfigError(f"{cfg_path} has k={k!r}, which is not an integer in [1, {n}]; fix k")
  params = {"W_enc": w["encoder.weight"].T.copy(), "b_enc": w["encoder.bias"],
            "W_dec": w["W_dec"], "b_pre": w["b_dec"]}
  cfg = _base_cfg("topk", d_in, n, "none", k=k,
                  imported_from=f"sparsify:{os.path.abspath(path)}",
                  hook_name=os.path.basename(os.path.normpath(path)))
  return params, cfg


# --------------------------------------------------------------------------- OpenAI


def read_openai(state_dict, layer: int | None = None, model: str | None = None
                ) -> tuple[dict, dict]:
  """(params, cfg) in our format from an openai/sparse_autoencoder state dict (a dict or
  a torch.save file): encoder.weight [n_latents, d], decoder.weight [d, n_latents],
  pre_bias [d], latent_bias [n_latents], activation ("TopK" / "ReLU") and
  activation_state_dict {k, postact_fn}; stats buffers are ignored.

  Their forward: latents = act(encoder(x - pre_bias) + latent_bias), recons =
  decoder(latents) + pre_bias, with, for TopK SAEs, x = LN(x) = (x - mu) / (std + 1e-5)
  and recons * std + mu. A TopK SAE maps to ours with input_norm "unit_norm" rescaled by
  s = sqrt(d - 1) (module docstring); a ReLU one to relu_l1_unit_norm without
  normalisation. Latent values are identical.

  Raises:
    ConfigError: missing keys, a TopK whose postact_fn is not ReLU, another activation.
  """
  if isinstance(state_dict, (str, os.PathLike)):
    import torch  # pylint: disable=import-outside-toplevel  # heavy: only for a .pt file
    source = os.path.abspath(state_dict)
    try:
      state_dict = torch.load(state_dict, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, zipfile.BadZipFile,
            UnicodeDecodeError, AttributeError, IndexError, KeyError) as e:
      raise ConfigError(f"{source} is not an SAE: torch cannot load it as a state dict "
                        f"({type(e).__name__}); give a run "
                        "or export directory, a SAELens directory or an OpenAI .pt file") from None
  else:
    source = "state_dict"
  if not isinstance(state_dict, Mapping):
    raise ConfigError(f"{source} holds a {type(state_dict).__name__}, not an OpenAI "
                      "sparse_autoencoder state dict")
  need = ("encoder.weight", "decoder.weight", "pre_bias", "latent_bias")
  missing = [k for k in need if k not in state_dict]
  if missing:
    raise ConfigError(f"not an OpenAI sparse_autoencoder state dict: missing {missing}")
  t = lambda v: np.asarray(v.detach().cpu().double().numpy() if hasattr(v, "detach") else v,
                           np.float64)
  E, D = t(state_dict["encoder.weight"]), t(state_dict["decoder.weight"])
  pre, lat = t(state_dict["pre_bias"]), t(state_dict["latent_bias"])
  n, d = E.shape
  activation = state_dict.get("activation", "ReLU")
  act_sd = state_dict.get("activation_state_dict") or {}
  if activation == "TopK":
    if act_sd.get("postact_fn", "ReLU") != "ReLU":
      raise ConfigError(f"TopK with postact_fn={act_sd.get('postact_fn')!r} has no sae_jax "
                        "equivalent (ours applies ReLU after TopK)")
    k = int(act_sd["k"])
    s = math.sqrt(d - 1)  # LN(x) = s * unit_norm(x)
    p = {"W_enc": E.T * s, "b_enc": lat, "W_dec": D.T / s, "b_pre": pre / s}
    cfg = _base_cfg("topk", d, n, "unit_norm", k=k)
  elif activation == "ReLU":
    p = {"W_enc": E.T, "b_enc": lat, "W_dec": D.T, "b_pre": pre}
    cfg = _base_cfg("relu_l1_unit_norm", d, n, "none")
  else:
    raise ConfigError(f"OpenAI activation {activation!r} is not supported (TopK, ReLU)")
  cfg.update(layer=layer, model=model, imported_from=f"openai:{source}")
  return {k_: np.asarray(v, np.float32) for k_, v in p.items()}, cfg


def from_openai(state_dict, out_dir: str, layer: int | None = None,
                model: str | None = None) -> str:
  """`read_openai` written as an export directory (see `write_export`)."""
  return write_export(*read_openai(state_dict, layer, model), out_dir)
