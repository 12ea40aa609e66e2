"""Read the run records a sweep writes: `runs/<sweep>/results.jsonl`, one JSON per line.

Each record is one (run, evaluation point): `run_id`, `architecture`, `n_latents`, `k`,
`d_in`, `tokens`, `step`, `final`, `flops` (training compute so far, FLOPs),
`normalized_mse` (= FVU), `mse`, `l0`, `dead_fraction`, `model`, `layer`, `config`, ...
The table stays a plain `list[dict]`: no dataframe dependency.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from typing import Any

from analysis._warn import warn_caller
from sae_jax import files
from sae_jax.errors import ConfigError

RESULTS_FILENAME = "results.jsonl"


def resolve_results_path(path: str | os.PathLike) -> str:
  """The results.jsonl a user meant: the path itself, or `<dir>/results.jsonl` for a run dir.

  Raises:
    ConfigError: neither the file nor `<dir>/results.jsonl` exists.
  """
  path = os.fspath(path)
  if os.path.isdir(path):
    candidate = os.path.join(path, RESULTS_FILENAME)
    if not os.path.isfile(candidate):
      raise ConfigError(f"no {RESULTS_FILENAME} in directory {path}; "
                        f"pass the sweep directory runs/<sweep>/ or the file itself")
    return candidate
  if not os.path.isfile(path):
    raise ConfigError(f"results file not found: {path}; expected runs/<sweep>/{RESULTS_FILENAME} "
                      f"or the directory holding it")
  return path


def read_jsonl(path: str) -> list[dict]:
  """Every record of one results.jsonl, in file order (`sae_jax.files.read_jsonl`: a
  truncated last line is skipped with a warning at the caller's line).

  Raises:
    ConfigError: a line (other than a truncated last one) is not a JSON object.
  """
  return files.read_jsonl(path, warn=warn_caller)


RECORD_IDENTITY = ("sweep", "run_id", "tokens")
"""A record is one evaluation of one run: (sweep, run_id, tokens) names it."""
COMPARED_FIELDS = ("architecture", "n_latents", "k", "d_in", "final", "flops", "step",
                   "normalized_mse", "mse", "l0", "model", "layer")
"""Two records of the same identity that differ in one of these (or in the fitted loss)
say different things about the same evaluation: a conflict, not a copy."""


def dedupe_records(records: Iterable[Mapping[str, Any]], labels: Iterable[str] | None = None,
                   *, loss_key: str = "normalized_mse") -> list[dict]:
  """The records with exact copies collapsed (the first kept), warning how many there were.

  Two records are copies when they share `RECORD_IDENTITY` (sweep, run_id, tokens) and
  agree on `COMPARED_FIELDS` and `loss_key` (a results table concatenated twice, or a run
  appended again). Fitting both would count one measurement twice and narrow every
  interval.

  Args:
    records: run records, in file order.
    labels: one per record, naming where it came from ("results.jsonl:12"); default
      "record <i>" (counted from 1).
    loss_key: the fitted loss, compared too.

  Returns:
    The records without copies, in their first order.

  Raises:
    ConfigError: two records of one identity disagree (e.g. a different loss); the
      message names both lines and the field.
  """
  records = list(records)
  labels = list(labels) if labels is not None else [f"record {i + 1}" for i in range(len(records))]
  fields = COMPARED_FIELDS + ((loss_key,) if loss_key not in COMPARED_FIELDS else ())
  first: dict[tuple, int] = {}
  kept, copies = [], []
  for i, r in enumerate(records):
    key = tuple(json_key(r.get(f)) for f in RECORD_IDENTITY)
    if key not in first:
      first[key] = i
      kept.append(dict(r))
      continue
    j = first[key]
    diff = [f for f in fields if json_key(records[j].get(f)) != json_key(r.get(f))]
    if diff:
      f = diff[0]
      raise ConfigError(
          f"conflicting duplicate records: {labels[j]} and {labels[i]} are both "
          f"sweep={r.get('sweep')!r} run_id={r.get('run_id')!r} tokens={r.get('tokens')!r} but "
          f"{f} = {records[j].get(f)!r} vs {r.get(f)!r}; delete the wrong line")
    copies.append((labels[i], labels[j]))
  if copies:
    warn_caller(f"collapsed {len(copies)} duplicate record(s) (same sweep, run_id, tokens and "
                f"values; e.g. {copies[0][0]} repeats {copies[0][1]}): each evaluation is "
                f"fitted once")
  return kept


def json_key(value: Any) -> Any:
  """A hashable, order-independent form of a JSON value (for comparing records)."""
  if isinstance(value, Mapping):
    return tuple(sorted((str(k), json_key(v)) for k, v in value.items()))
  if isinstance(value, list):
    return tuple(json_key(v) for v in value)
  if isinstance(value, float) and value.is_integer():
    return int(value)
  return value


def get_field(record: Mapping[str, Any], key: str) -> Any:
  """`record[key]`, where a dotted key walks nested dicts ("config.train.lr"); None if absent."""
  if key in record:
    return record[key]
  value: Any = record
  for part in key.split("."):
    if not isinstance(value, Mapping) or part not in value:
      return None
    value = value[part]
  return value


def _has_field(record: Mapping[str, Any], key: str) -> bool:
  if key in record:
    return True
  value: Any = record
  for part in key.split("."):
    if not isinstance(value, Mapping) or part not in value:
      return False
    value = value[part]
  return True


def _equal(value: Any, wanted: Any) -> bool:
  """Equality that lets a command-line string match a typed field ("15" == 15, "true" == True)."""
  if value == wanted and type(value) is not bool and type(wanted) is not bool:
    return True
  if isinstance(value, bool) or isinstance(wanted, bool):
    as_bool = {"true": True, "false": False, "1": True, "0": False}
    v = as_bool.get(str(value).lower(), value)
    w = as_bool.get(str(wanted).lower(), wanted)
    return v is w
  if isinstance(wanted, str) and not isinstance(value, str) and value is not None:
    try:
      return float(wanted) == float(value)
    except (TypeError, ValueError):
      return str(value) == wanted
  return False


def matches(record: Mapping[str, Any], filters: Mapping[str, Any]) -> bool:
  """True if every filter matches; a list/tuple/set filter value matches any of its items."""
  for key, wanted in filters.items():
    value = get_field(record, key)
    options = wanted if isinstance(wanted, (list, tuple, set, frozenset)) else (wanted,)
    if not any(_equal(value, w) for w in options):
      return False
  return True


def _describe_values(records: list[dict], key: str, limit: int = 8) -> str:
  values = sorted({repr(get_field(r, key)) for r in records})
  shown = ", ".join(values[:limit]) + (", ..." if len(values) > limit else "")
  return f"{key} in [{shown}]"


def load_results(paths: str | os.PathLike | Iterable[str | os.PathLike],
                 **filters: Any) -> list[dict]:
  """Load and filter run records from one or many results.jsonl files (or sweep dirs).

  Args:
    paths: a results.jsonl path, a directory containing one, or a list of either.
    **filters: field=value pairs a record must match, e.g. `architecture="topk", layer=15,
      k=32`. A dotted name reaches into nested dicts (`**{"config.train.lr": 1e-3}`).
      Strings match typed fields ("15" matches 15), so command-line values work as is.
      A list value matches any of its items.

  Returns:
    The matching records, as dicts, in file order (files in the order given).

  Raises:
    ConfigError: a file is missing or malformed, a filter names a field no record has,
      no record is left (the message names the filter and the values present), or two
      records of one (sweep, run_id, tokens) disagree (`dedupe_records`: exact copies
      are collapsed with a warning).
  """
  if isinstance(paths, (str, os.PathLike)):
    paths = [paths]
  found = [resolve_results_path(p) for p in paths]
  if not found:
    raise ConfigError("no results files given; pass runs/<sweep>/results.jsonl")
  records, labels = [], []
  for f in found:
    for line, record in files.read_jsonl(f, warn=warn_caller, line_numbers=True):
      records.append(record)
      labels.append(f"{f}:{line}")
  where = ", ".join(found)
  if not records:
    raise ConfigError(f"no records in {where}: the file is empty; "
                      f"has the sweep evaluated any run yet?")
  for key in filters:
    if not any(_has_field(r, key) for r in records):
      fields = sorted({k for r in records for k in r if k != "config"})
      raise ConfigError(f"filter {key!r} matches no field of the records in {where}; "
                        f"fields are: {', '.join(fields)}")
  keep = [matches(r, filters) for r in records]
  kept = dedupe_records([r for r, k in zip(records, keep) if k],
                        [lab for lab, k in zip(labels, keep) if k])
  if not kept:
    asked = ", ".join(f"{k}={v!r}" for k, v in filters.items())
    present = "; ".join(_describe_values(records, k) for k in filters)
    raise ConfigError(f"no records in {where} match {asked} (the records have {present})")
  return kept


def run_key(record: Mapping[str, Any]) -> tuple[str, str]:
  """The identity of a record's run: (sweep, run_id), so several sweeps can be pooled."""
  return (str(record.get("sweep")), str(record.get("run_id")))


def group_runs(records: Iterable[Mapping[str, Any]], x_key: str = "tokens",
               *required: str) -> dict[tuple[str, str], list[Mapping[str, Any]]]:
  """Records per run (`run_key`), each run's records sorted by `x_key`.

  Records whose `x_key` or any `required` field is not a finite number > 0 are left out.
  Runs are ordered by (k, n_latents, run key).
  """
  runs: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
  for r in records:
    if _positive(r, x_key, *required):
      runs.setdefault(run_key(r), []).append(r)

  def order(item):
    first = item[1][0]
    return (_num(first.get("k")), _num(first.get("n_latents")), item[0])

  return {key: sorted(rs, key=lambda r: r[x_key]) for key, rs in sorted(runs.items(), key=order)}


def _num(v: Any) -> float:
  return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else 0.0


def _positive(record: Mapping[str, Any], *fields: str) -> bool:
  for f in fields:
    v = get_field(record, f)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not (0 < v < float("inf")):
      return False
  return True


def is_usable(record: Mapping[str, Any], *fields: str) -> bool:
  """True if every named field of the record is a finite number > 0 (not a bool)."""
  for f in fields:
    v = record.get(f)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
      return False
  return True
