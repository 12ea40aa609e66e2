"""The feature viewer: built from a small real run (SmolLM2 + TopK SAE), then opened from
disk in headless Chromium (Debian's package, driven by Playwright): the index loads, sorting
and search work, pagination works, a latent page shows highlighted contexts with the max
token marked. Screenshots are saved under the test's tmp_path."""

import json
import os
import re
import shutil

import pytest

from sae_jax import cli
from sae_jax.tools import viewer

pytestmark = pytest.mark.real_model

CHROMIUM = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser",
                             shutil.which("chromium") or "") if p and os.path.isfile(p)), None)
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-sync",
        "--disable-dev-shm-usage"]
MAX_LATENTS, MAX_CONTEXTS, PAGE = 40, 20, 15


@pytest.fixture(scope="module")
def site(tiny_lm_run, smollm2, tmp_path_factory):
  """The viewer of a copy of the tiny run, with an eval.json holding one n-gram explanation
  in the format `sae_jax.evals.suite` writes."""
  run = str(tmp_path_factory.mktemp("viewer") / "run")
  shutil.copytree(tiny_lm_run, run)
  build = lambda: viewer.build(run, max_latents=MAX_LATENTS, max_contexts=MAX_CONTEXTS,
                               page_size=PAGE, lm=smollm2[:2], progress=False)
  # the explanation goes to a latent that fires on the held-out contexts (which ones do
  # depends on the recipe): the last of a first build's sample
  explained = _data(build())[1][-1]["latent"]
  with open(os.path.join(run, "eval.json"), "w") as f:
    json.dump({"explain": {"latents": [{"latent": explained, "ngram": [279], "n": 1,
                                        "text": " the", "precision": 0.9, "recall": 0.4,
                                        "f1": 0.55}]}}, f)
  return run, build(), explained


def _data(index):
  html = open(index, encoding="utf-8").read()
  return html, json.loads(re.search(r"<script id='data' type='application/json'>(.*?)</script>",
                                    html, re.S).group(1).replace("<\\/", "</"))


def test_site_is_self_contained_and_bounded(site):
  run, index, explained = site
  html, rows = _data(index)
  assert len(rows) == MAX_LATENTS  # 256 latents, most live: a sample of 40 got pages
  assert any(r["latent"] == explained and r["score"] == 0.55 and r["explanation"] == " the" for r in rows)
  assert "live latents skipped (raise --max-latents)" in html
  assert f"Held-out contexts: {MAX_CONTEXTS} of 32" in html and "raise --max-contexts" in html
  assert not re.search(r"(src|href)=['\"]?(https?:)?//", html)  # nothing fetched from the network
  pages = os.listdir(os.path.join(run, "viewer", "latents"))
  assert sorted(pages) == sorted(f"{r['latent']}.html" for r in rows)
  for r in rows:
    assert 0 < r["density"] <= 1 and 0 < r["mean_act"] <= r["max_act"]
    assert len(r["out_tokens"]) == 5 and r["top_tokens"]
  page = open(os.path.join(run, "viewer", "latents", f"{explained}.html"), encoding="utf-8").read()
  assert "held-out precision 0.900" in page and "<svg class='hist'" in page


def test_view_command_errors_are_one_line(tmp_path, capsys):
  assert cli.main(["view", str(tmp_path)]) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith("sae-jax: error: ") and "is not a run directory" in err and "\n" not in err


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (CI installs it with "
                    ".ci/install_debian_packages.sh: apt-get install -y chromium)")
def test_viewer_in_headless_chromium(site, tmp_path):
  sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
  run, index, explained = site
  _, rows = _data(index)
  with sync_api.sync_playwright() as pw:
    browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto("file://" + os.path.abspath(index))
    page.wait_for_selector("tr.latent-row")
    latents = lambda: [int(x) for x in page.eval_on_selector_all(  # noqa: E731
        "tr.latent-row", "rs => rs.map(r => r.dataset.latent)")]
    col = lambda i: [float(x) for x in page.eval_on_selector_all(  # noqa: E731
        f"tr.latent-row td:nth-child({i})", "cs => cs.map(c => c.textContent)")]
    assert len(latents()) == PAGE
    assert "page 1 of 3 (40 latents)" in page.inner_text("#pageinfo")
    page.screenshot(path=str(tmp_path / "index.png"), full_page=True)

    # sorting: density descending by default; a click on its header reverses it
    dens = col(2)
    assert dens == sorted(dens, reverse=True)
    first = latents()
    page.click("th[data-key=density]")
    assert col(2) == sorted(col(2)) and latents() != first
    page.click("th[data-key=mean_act]")
    assert col(3) == sorted(col(3), reverse=True)
    page.click("#next")
    assert "page 2 of 3" in page.inner_text("#pageinfo")

    # search by token: every remaining row shows the token
    token = rows[0]["top_tokens"][0]
    page.fill("#search", token)
    shown = latents()
    want = {r["latent"] for r in rows if any(token.lower() in t.lower()
                                             for t in r["top_tokens"] + r["out_tokens"])
            or token.lower() in (r["explanation"] or "").lower()}
    assert 0 < len(shown) <= PAGE and set(shown) <= want and rows[0]["latent"] in want
    page.fill("#search", "no-such-token-zzz")
    assert latents() == []
    page.fill("#search", "")

    # a latent page: highlighted contexts, the max token marked in each
    page.click("th[data-key=latent]")
    page.click("th[data-key=latent]")  # ascending
    assert latents()[:3] == sorted(r["latent"] for r in rows)[:3]
    page.click(f"a[href='latents/{latents()[0]}.html']")
    page.wait_for_selector(".top-contexts .ctx")
    n_ctx = page.locator(".top-contexts .ctx").count()
    assert n_ctx >= 1
    assert page.locator(".top-contexts .tok.max").count() == n_ctx
    shaded = page.locator(".ctx .tok[style*='background']")
    assert shaded.count() >= n_ctx
    bg = shaded.first.evaluate("e => getComputedStyle(e).backgroundColor")
    assert re.match(r"rgba?\(230, 126, 34", bg), bg
    assert page.locator("svg.hist rect").count() > 0
    page.screenshot(path=str(tmp_path / "latent.png"), full_page=True)
    assert not errors, errors
    browser.close()
  print(f"screenshots: {tmp_path / 'index.png'} {tmp_path / 'latent.png'}")
  assert os.path.getsize(tmp_path / "index.png") > 10_000
