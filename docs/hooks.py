"""MkDocs hooks: the generated parts of the documentation, made at build time from the code itself.

A page asks for generated text with a marker on a line of its own, ``<!-- generated: NAME -->``
(``cli``, ``settings``, ``tables``, ``steps``, ``benchmarks``), and quotes a benchmark figure with
``[[fig:KEY]]`` (its value from bench/figures.json, with its unit) or ``[[fig:KEY:value]]`` (the value
alone). An unknown marker or figure key fails the build (``mkdocs build --strict``), so a renamed
setting or a figure that a bench no longer writes cannot leave a stale page behind.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from mkdocs.exceptions import PluginError

REPO = Path(__file__).resolve().parents[1]
FIGURES = REPO / "bench" / "figures.json"
MARKER = re.compile(r"^<!-- generated: ([a-z_]+) -->$", re.MULTILINE)
FIGURE = re.compile(r"\[\[fig:([A-Za-z0-9_.\-]+)(:value)?\]\]")
UNITLESS = {
    "ratio",
    "bool",
    "recall",
    "ndcg",
    "precision",
    "share",
    "delta",
    "share of gain",
    "map",
    "accuracy",
    "rate",
}


class GenerationError(PluginError):
    """A page asks for something the code or the benches do not have (MkDocs prints it as one line)."""


def cli_reference() -> str:
    """Every verb of ``visrec`` (and its sub-verbs) with its ``--help``, from the argparse parser."""
    from visrec.app.cli import build_parser

    parser = build_parser()
    parts = ["```text", parser.format_help().rstrip(), "```"]

    def walk(p: argparse.ArgumentParser, path: list[str]) -> None:
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    parts.extend(
                        [
                            "",
                            f"## `visrec {' '.join([*path, name])}`",
                            "",
                            "```text",
                            sub.format_help().rstrip(),
                            "```",
                        ]
                    )
                    walk(sub, [*path, name])

    walk(parser, [])
    return "\n".join(parts)


def settings_reference() -> str:
    """Every ``VISREC_*`` setting: type and bounds, default, meaning (the settings model's table)."""
    from visrec.settings import settings_table

    return settings_table()


def tables_reference() -> str:
    """Every lake table: where it lives, its key and its columns, from the pyarrow schemas."""
    from visrec.store.schemas import QUARANTINE, TABLES
    from visrec.vocabulary import PUBLISHED_TABLES

    def columns(schema) -> list[str]:
        rows = ["| column | type | nullable |", "|---|---|---|"]
        for field in schema:
            rows.append(f"| `{field.name}` | `{field.type}` | {'yes' if field.nullable else 'no'} |")
        return rows

    parts = []
    for spec in TABLES.values():
        published = (
            "published (a DuckDB view of the release)" if spec.name in PUBLISHED_TABLES else "internal"
        )
        key = ", ".join(["ds", *spec.key])
        parts += [f"## `{spec.name}`", "", f"Lake path `{spec.path}/ds=<ds>/`; key ({key}); {published}.", ""]
        parts += columns(spec.schema) + [""]
    parts += [
        "## `quarantine/<table>`",
        "",
        "Rows rejected on their way into a table, each with its reason (`quarantine/events`, ...).",
        "",
        *columns(QUARANTINE),
    ]
    return "\n".join(parts)


def steps_reference() -> str:
    """The nightly step graph, from its declaration (``visrec.pipeline.graph.STEPS``)."""
    from visrec.pipeline.graph import STEPS

    def names(items) -> str:
        return ", ".join(f"`{i}`" for i in items) or "-"

    rows = [
        "| step | what it does | takes results of | follows | reads | writes | publishes | queue (pool) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for step in STEPS:
        takes = ", ".join(f"`{arg}` from `{source}`" for arg, source in step.takes.items()) or "-"
        queue = step.queue + (f" (`{step.pool}`)" if step.pool else "")
        rows.append(
            f"| `{step.name}` | {step.doc} | {takes} | {names(step.follows)} | {names(step.reads)} "
            f"| {names(step.writes)} | {names(step.publishes)} | {queue} |"
        )
    return "\n".join(rows)


def load_figures() -> dict[str, dict]:
    return json.loads(FIGURES.read_text())


def benchmarks_reference() -> str:
    """Every figure of bench/figures.json, grouped by bench, with its unit, date and note."""
    figures = load_figures()
    machine = figures.get("_machine", {}).get("note", "unknown")
    by_bench: dict[str, list[tuple[str, dict]]] = {}
    for key, fig in sorted(figures.items()):
        if not key.startswith("_"):
            by_bench.setdefault(fig["bench"], []).append((key, fig))
    dates = sorted({fig["at"] for items in by_bench.values() for _, fig in items})
    parts = [
        f"Machine of the last `make bench`: **{machine}**. Figures measured between {dates[0]} and "
        f"{dates[-1]}; {sum(len(v) for v in by_bench.values())} figures from {len(by_bench)} benches.",
        "",
    ]
    for bench, items in sorted(by_bench.items()):
        parts += [
            f"## {bench}",
            "",
            f"`python bench/run.py {bench}`",
            "",
            "| key | value | unit | measured | note |",
            "|---|---|---|---|---|",
        ]
        for key, fig in items:
            note = str(fig.get("note", "")).replace("|", "\\|").replace("\n", " ")
            parts.append(f"| `{key}` | {fig['value']} | {fig.get('unit', '')} | {fig['at']} | {note} |")
        parts.append("")
    return "\n".join(parts)


GENERATORS = {
    "cli": cli_reference,
    "settings": settings_reference,
    "tables": tables_reference,
    "steps": steps_reference,
    "benchmarks": benchmarks_reference,
}


def render_figure(key: str, value_only: bool, figures: dict[str, dict]) -> str:
    if key not in figures:
        raise GenerationError(f"[[fig:{key}]]: no such figure in bench/figures.json")
    fig = figures[key]
    value = fig["value"]
    text = f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)
    unit = fig.get("unit", "")
    if value_only or not unit or unit in UNITLESS or unit == key.rsplit(".", 1)[-1]:
        return text
    return f"{text} {unit}"


def render(markdown: str, where: str = "page") -> str:
    """``markdown`` with its generated markers and figures filled in."""
    figures = load_figures()

    def generated(match: re.Match) -> str:
        name = match.group(1)
        if name not in GENERATORS:
            raise GenerationError(f"{where}: unknown generated section {name!r}; known: {sorted(GENERATORS)}")
        return GENERATORS[name]()

    markdown = MARKER.sub(generated, markdown)
    return FIGURE.sub(lambda m: render_figure(m.group(1), bool(m.group(2)), figures), markdown)


def on_page_markdown(markdown: str, page, config, files) -> str:  # noqa: ARG001 (MkDocs' signature)
    return render(markdown, page.file.src_path)
