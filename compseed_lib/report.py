"""A run's report for a browser: each executed notebook as HTML, and an index.html with the key numbers,
links and thumbnails.

Inputs: a report folder (`reports/<run>/`: the executed notebooks, figures/, timings.txt) and its run
directory (tables/). Outputs: `<notebook>.html` per notebook (nbconvert, lab template), `thumbs/*.png`
(figures shrunk to at most 240 px) and `index.html`. Written by `compseed run` at the end of the chain;
`compseed report reports/mini runs/mini` writes them again for an existing report.

Usage:
    write_report("reports/mini", "runs/mini")   # -> reports/mini/index.html
"""
from __future__ import annotations

import html
import json
import logging
from pathlib import Path

import pandas as pd

from .store import atomic_write_text

log = logging.getLogger(__name__)
THUMB = 240  # px, the longer side; thumbnails are palette PNGs (small enough to commit)


def export_html(notebook: Path) -> Path:
    """`<notebook>.html` next to the notebook (nbconvert's lab template, outputs as executed)."""
    import nbformat
    from nbconvert import HTMLExporter

    quiet = logging.getLogger("traitlets")
    level, quiet.level = quiet.level, logging.ERROR  # nbconvert's per-image alt-text notices
    try:
        nb = nbformat.read(notebook, as_version=4)
        nb.metadata["title"] = notebook.stem  # the page's title (nbconvert's default says "Notebook")
        body, _ = HTMLExporter(template_name="lab").from_notebook_node(
            nb, resources={"metadata": {"name": notebook.stem}})
    finally:
        quiet.setLevel(level)
    out = notebook.with_suffix(".html")
    atomic_write_text(out, body)
    return out


def thumbnail(figure: Path, folder: Path, name: str | None = None) -> Path:
    """A palette PNG copy of `figure` at most THUMB px on its longer side, in `folder` (as `name`)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    out = folder / (name or figure.name)
    with Image.open(figure) as im:
        im = im.convert("RGB")
        im.thumbnail((THUMB, THUMB))
        im.quantize(64).save(out, optimize=True)
    return out


def key_numbers(run_dir: Path) -> list[tuple[str, str]]:
    """(label, value) pairs from the run's tables: what a reader looks for first."""
    tables, out = Path(run_dir) / "tables", []
    if (tables / "prompts.csv").is_file():
        ps = pd.read_csv(tables / "prompts.csv")
        out.append(("prompts", ", ".join(f"{n} {k}" for k, n in ps["kind"].value_counts().sort_index().items())))
    if (tables / "seed_accuracy.csv").is_file():
        acc = pd.read_csv(tables / "seed_accuracy.csv")
        if "seed" in acc:
            out.append(("mining seeds", str(acc["seed"].nunique())))
    summary = tables / "seed_reliability_summary.json"
    if summary.is_file():
        rel = json.loads(summary.read_text())
        lay = rel.get("layout") or {}
        if lay:
            out.append(("layout: same seed r / different seeds r",
                        f"{lay['same_seed_r']:.2f} / {lay['different_seed_r']:.2f} ({lay['seeds']} seeds)"))
        nl = rel.get("noise_layout") or {}
        if nl:
            out.append(("layout from the noise (held-out seeds)", f"r = {nl['mean_r']:.2f} vs {nl['null_mean_r']:.2f} "
                        f"with seeds shuffled, p = {nl['p']:.2g} ({nl['seeds']} seeds)"))
        for cat, text in (rel.get("verdict") or {}).items():
            if cat in ("all", "count", "spatial"):
                out.append((f"seed reliability ({cat})", text.split(": ", 1)[-1]))
    if (tables / "dataset_captions.csv").is_file():
        d = pd.read_csv(tables / "dataset_captions.csv")
        out.append(("dataset captions", ", ".join(f"{n} {s}" for s, n in d["status"].value_counts().items())))
    if (tables / "evaluation.csv").is_file():
        ev = pd.read_csv(tables / "evaluation.csv")
        for r in ev[ev["level"].isin(["count", "spatial"])].itertuples():
            p = "" if pd.isna(r.mcnemar_p) else f", McNemar p vs base {r.mcnemar_p:.2g}"
            out.append((f"{r.arm}: {r.level}", f"{r.accuracy:.3f} [{r.lo:.3f}, {r.hi:.3f}]{p}"))
    return out


def write_report(report_dir: str | Path, run_dir: str | Path, notebooks: list[str] | None = None) -> Path:
    """HTML exports, thumbnails and index.html for a report folder; returns index.html."""
    report_dir, run_dir = Path(report_dir), Path(run_dir)
    names = notebooks or sorted(p.stem for p in report_dir.glob("*.ipynb"))
    pages = []
    for name in names:
        nb = report_dir / f"{name}.ipynb"
        if nb.is_file():
            export_html(nb)
            pages.append(name)
    timings = {}
    if (report_dir / "timings.txt").is_file():
        for line in (report_dir / "timings.txt").read_text().splitlines():
            name, _, secs = line.partition("\t")
            timings[name] = secs
    fig_dir = report_dir / "figures"  # the stages' figures, then the paper's (figures/paper/, notebook 08)
    figures = (sorted(fig_dir.glob("*.png")) + sorted(fig_dir.glob("*/*.png"))) if fig_dir.is_dir() else []
    rel = [f.relative_to(fig_dir).as_posix() for f in figures]
    thumbs = [thumbnail(f, report_dir / "thumbs", r.replace("/", "__")) for f, r in zip(figures, rel)]
    e = html.escape
    rows = "".join(f"<tr><td>{e(k)}</td><td>{e(v)}</td></tr>" for k, v in key_numbers(run_dir))
    links = "".join(f"<li><a href='{e(n)}.html'>{e(n)}</a> (<a href='{e(n)}.ipynb'>notebook</a>)"
                    f"{' — ' + e(timings[n]) if n in timings else ''}</li>" for n in pages)
    cards = "".join(f"<figure><a href='figures/{e(r)}'><img src='thumbs/{e(t.name)}' alt='{e(r)}'></a>"
                    f"<figcaption>{e(r.removesuffix('.png'))}"
                    + (f" (<a href='figures/{e(r.removesuffix('.png'))}.pdf'>pdf</a>)"
                       if f.with_suffix(".pdf").is_file() else "")
                    + "</figcaption></figure>" for f, r, t in zip(figures, rel, thumbs))
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>compseed report: {e(report_dir.name)}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:70em;margin:2em auto;padding:0 1em}}
table{{border-collapse:collapse}}td{{border-bottom:1px solid #ddd;padding:.25em .75em;vertical-align:top}}
figure{{display:inline-block;margin:.5em;text-align:center;font-size:.8em}}img{{border:1px solid #ccc}}</style>
</head><body>
<h1>compseed report: {e(report_dir.name)}</h1>
<p>Run directory: <code>{e(run_dir.as_posix())}</code>. Notebooks executed by <code>compseed run</code>.</p>
<h2>Key numbers</h2><table>{rows or '<tr><td>no tables yet</td></tr>'}</table>
<h2>Notebooks</h2><ol>{links}</ol>
<h2>Figures</h2>{cards or '<p>none</p>'}
</body></html>
"""
    out = report_dir / "index.html"
    atomic_write_text(out, page)
    log.info("report written to %s", out)
    return out


def markdown_table(df: pd.DataFrame) -> str:
    """A DataFrame as a GitHub markdown table (floats to 3 decimals), for model cards and README reports."""
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    return "\n".join(lines + ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)])

