"""The documentation stays true: the site builds with warnings as errors and holds every CLI verb and
every setting; its generated parts come from the code and the benches (an unknown figure fails the
build); the README stays short and quotes no benchmark figure; and the bring-your-own-shop tutorial
runs, command by command, from its own text."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
BIN = Path(sys.executable).parent


def _hooks():
    spec = importlib.util.spec_from_file_location("docs_hooks", DOCS / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.unit
def test_figures_and_sections_come_from_the_code_and_benches_or_fail_loudly():
    hooks = _hooks()
    figures = hooks.load_figures()
    key = next(k for k, v in figures.items() if not k.startswith("_") and v.get("unit") == "s")
    assert hooks.render(f"took [[fig:{key}]]") == f"took {figures[key]['value']} s"
    assert hooks.render(f"[[fig:{key}:value]]") == str(figures[key]["value"])
    with pytest.raises(hooks.GenerationError, match="no such figure"):
        hooks.render("[[fig:no.such.figure]]")
    with pytest.raises(hooks.GenerationError, match="unknown generated section"):
        hooks.render("<!-- generated: nonsense -->")
    steps = hooks.render("<!-- generated: steps -->")
    from visrec.pipeline.graph import STEPS

    assert all(f"`{step.name}`" in steps for step in STEPS)


@pytest.mark.integration
def test_the_site_builds_strictly_with_every_verb_and_setting(tmp_path):
    from visrec.app.cli import build_parser
    from visrec.settings import Settings

    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    out = subprocess.run(
        [str(BIN / "mkdocs"), "build", "--strict", "--site-dir", str(site)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    cli = (site / "reference" / "cli" / "index.html").read_text()
    verbs = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction").choices
    assert [v for v in verbs if f"visrec {v}</code>" not in cli] == []
    settings = (site / "reference" / "settings" / "index.html").read_text()
    assert [n for n in Settings.model_fields if Settings.env_name(n) not in settings] == []
    api = (site / "reference" / "python-api" / "index.html").read_text()
    assert "split_per_user" in api and "select_recommender" in api
    built = "\n".join(p.read_text() for p in site.rglob("*.html"))
    assert "[[fig:" not in built and "<!-- generated:" not in built


@pytest.mark.unit
def test_the_readme_is_short_links_into_the_docs_and_types_no_benchmark_figure():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    prose = re.sub(r"```.*?```|Python \d+\.\d+|Java \d+", "", readme, flags=re.S)
    # A measured figure looks like 0.471, 8 min 22 s, 3,948 images/s or 43 s: none may be typed here.
    typed = re.findall(r"\b\d+\.\d+\b|\b\d+ min\b|\b[\d,]+ (?:s|images/s|events/s|ms)\b", prose)
    assert typed == []
    links = re.findall(r"\]\((docs/[^)#]+)", readme)
    assert links and [link for link in links if not (REPO / link).exists()] == []


def _tutorial_blocks(page: Path) -> list[tuple[str, str]]:
    text = page.read_text()
    return re.findall(r"<!-- tutorial -->\n```(python|bash)\n(.*?)```", text, re.S)


@pytest.mark.e2e
def test_the_bring_your_own_shop_tutorial_runs_from_its_own_text(tmp_path):
    blocks = _tutorial_blocks(DOCS / "tutorials" / "your-shop.md")
    assert [kind for kind, _ in blocks] == ["python", "bash", "bash", "bash", "bash"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VISREC_", "AIRFLOW"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"
    outputs = []
    for kind, code in blocks:
        command = (
            [sys.executable, "-c", code] if kind == "python" else ["bash", "-euo", "pipefail", "-c", code]
        )
        out = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200)
        assert out.returncode == 0, f"{code}\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
        outputs.append(out.stdout)
    # What the last block shows: customer c001's top 5, most of them hats (c001's category).
    rows = [line for line in outputs[-1].splitlines() if "c001" in line]
    assert len(rows) == 5
    import csv

    kinds = {r["article_id"]: r["product_type"] for r in csv.DictReader(open(tmp_path / "articles.csv"))}
    items = [re.findall(r"\b\d{4}\b", row)[-1] for row in rows]
    assert sum(kinds[i] == "hat" for i in items) >= 3, rows
