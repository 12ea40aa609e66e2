"""The notebooks: committed clean (no outputs, no absolute paths, exactly what
notebooks/make_notebooks.py writes), and all three run top to bottom against a small
real sweep (sweeps/tiny.py on SmolLM2; marked real_model, still runs in CI)."""

import json
import os
import re
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NB_DIR = os.path.join(ROOT, "notebooks")
NAMES = ("01_quickstart.ipynb", "02_fit_scaling_laws.ipynb", "03_reproduce_paper_plots.ipynb")


def _load_generator():
  sys.path.insert(0, NB_DIR)
  try:
    import make_notebooks  # pylint: disable=import-outside-toplevel
  finally:
    sys.path.remove(NB_DIR)
  return make_notebooks


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_is_clean(name):
  nbformat = pytest.importorskip("nbformat")
  path = os.path.join(NB_DIR, name)
  with open(path, encoding="utf-8") as f:
    text = f.read()
  nb = nbformat.reads(text, as_version=4)
  nbformat.validate(nb)
  for cell in nb.cells:
    if cell.cell_type == "code":
      assert cell.outputs == [] and cell.execution_count is None, f"{name}: stale outputs"
  assert not re.search(r"(/work/|/home/|/tmp/|/Users/|[A-Z]:\\\\)", text), f"{name}: absolute path"
  assert text == _load_generator().build()[name], (
      f"{name} differs from notebooks/make_notebooks.py: edit the generator and rerun it")


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
  """Run 01 (the tiny sweep), then 02 and 03 on its results; name -> executed notebook."""
  nbformat = pytest.importorskip("nbformat")
  nbclient = pytest.importorskip("nbclient")
  out = tmp_path_factory.mktemp("notebook_runs")
  env = {
      "SAE_JAX_NOTEBOOK_SWEEP": "sweeps/tiny.py",
      "SAE_JAX_NOTEBOOK_OUT": str(out),
      "SAE_JAX_NOTEBOOK_RESULTS": str(out / "tiny" / "results.jsonl"),
      "SAE_JAX_NOTEBOOK_BOOTSTRAP": "50",
      "XLA_FLAGS": "",  # one host device in the kernel (conftest forces 8 for pytest itself)
  }
  saved = {k: os.environ.get(k) for k in env}
  os.environ.update(env)
  done = {}
  try:
    for name in NAMES:
      nb = nbformat.read(os.path.join(NB_DIR, name), as_version=4)
      client = nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                                       resources={"metadata": {"path": NB_DIR}})
      client.execute()
      done[name] = nb
  finally:
    for k, v in saved.items():
      if v is None:
        os.environ.pop(k, None)
      else:
        os.environ[k] = v
  return out, done


def _text(nb):
  parts = []
  for cell in nb.cells:
    for o in cell.get("outputs", []):
      parts.append(o.get("text", "") + json.dumps(o.get("data", {}).get("text/plain", "")))
  return "\n".join(parts)


@pytest.mark.real_model
def test_notebooks_run_top_to_bottom_on_a_tiny_real_sweep(executed):
  out, done = executed
  assert (out / "tiny" / "results.jsonl").is_file() and (out / "tiny" / "fits.json").is_file()
  fits = json.loads((out / "tiny" / "fits.json").read_text())
  assert fits["n_runs"] == 8 and any("params" in e for e in fits["L_C"].values())
  for name, nb in done.items():
    images = sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
    assert images >= 1, f"{name} displayed no figure"
    assert "Traceback" not in _text(nb)
  figs = sorted(os.listdir(out / "paper_figures"))
  for stem in ("fig1", "loss_vs_k", "compute_optimal", "loss_vs_tokens", "lr_sweep"):
    assert f"{stem}.png" in figs and f"{stem}.pdf" in figs, figs
  assert (out / "notebook_02" / "fits.json").is_file()
