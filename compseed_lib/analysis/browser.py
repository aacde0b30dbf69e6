"""An interactive seed browser for JupyterLab (ipywidgets): pick a run, an arm (image stage), a category or one
prompt, and seeds; see the images with the judge's answers, the seeds' accuracy with 95% intervals, and, for a
word of the prompt, where the model attends to it (the images remade with attention capture).

Usage (a notebook cell):
    from compseed_lib.analysis.browser import SeedBrowser
    SeedBrowser("runs")          # displays itself; .figure and .table hold what it shows

Every callback is a plain method driven by the widgets' values, so tests set values and read `.figure`,
`.table` and `.message`; what `.message` says is shown in the widget too (`message_w`), above the images.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..stats import wilson_interval
from ..store import Run

ALL = "(all prompts of the category)"
COLUMNS = 4  # images per row of the grid: titles stay readable with 8 seeds
INTERVAL = {"lo": "95% interval: low", "hi": "95% interval: high"}  # the Wilson interval's columns, as shown


def _png_output(fig, text: str) -> dict:
    """A figure as one display-data output of an Output widget (PNG, with a plain-text fallback)."""
    import base64
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return {"output_type": "display_data", "metadata": {},
            "data": {"image/png": base64.b64encode(buf.getvalue()).decode("ascii"), "text/plain": text}}


class SeedBrowser:
    """Widgets: run, arm (stage), category, prompt, seeds, a word to show attention for."""

    def __init__(self, runs_root: str | Path = "runs", run: str | None = None, max_seeds: int = 8):
        import ipywidgets as W

        self.root, self.max_seeds = Path(runs_root), max_seeds
        self.run: Run | None = None
        self.judged = pd.DataFrame()
        self.figure = None
        self.table = pd.DataFrame()
        self.message = ""
        self._loaded: tuple | None = None  # (run, arm) whose judgements `judged` holds
        runs = sorted(p.name for p in self.root.glob("*") if (p / "ledger.sqlite").is_file())
        self.run_w = W.Dropdown(description="run", options=runs, value=run if run in runs else None)
        self.stage_w = W.Dropdown(description="arm")
        self.category_w = W.Dropdown(description="category")
        self.prompt_w = W.Dropdown(description="prompt", layout=W.Layout(width="32em"))
        self.seeds_w = W.SelectMultiple(description="seeds", rows=6)
        self.word_w = W.Text(description="attend to", placeholder="a word of the prompt, e.g. balls",
                             continuous_update=False)
        self.stats_w = W.HTML()
        self.message_w = W.HTML()
        self.out = W.Output()
        self.run_w.observe(lambda _: self.on_run(), "value")
        self.stage_w.observe(lambda _: self.on_stage(), "value")
        self.category_w.observe(lambda _: self.on_category(), "value")
        for w in (self.prompt_w, self.seeds_w, self.word_w):
            w.observe(lambda _: self.show(), "value")
        self.widget = W.VBox([W.HBox([self.run_w, self.stage_w, self.category_w]),
                              W.HBox([self.prompt_w, self.word_w]), self.message_w,
                              W.HBox([self.seeds_w, self.out]), self.stats_w])
        if self.run_w.value:
            self.on_run()

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)

    # -------------------------------------------------------------- callbacks
    def on_run(self) -> None:
        self.run = Run.open(self.root / self.run_w.value) if self.run_w.value else None
        stages = sorted(self.run.ledger.judgements()["stage"].unique()) if self.run else []
        self._loaded = None
        self.stage_w.options = stages
        self.stage_w.value = "base" if "base" in stages else (stages[0] if stages else None)
        if self._loaded != (self.run_w.value, self.stage_w.value):  # the same arm name as before in another
            self.on_stage()                                           # run fires nothing: load it here

    def on_stage(self) -> None:
        self._loaded = (self.run_w.value, self.stage_w.value)
        j = self.run.ledger.judgements(self.stage_w.value) if self.run and self.stage_w.value else pd.DataFrame()
        self.judged = j.assign(sha256=j["image_sha256"]) if len(j) else j  # the judged file's hash, checked on read
        cats = sorted(self.judged["category"].unique()) if len(self.judged) else []
        self.category_w.options = cats
        self.category_w.value = cats[0] if cats else None
        self.on_category()

    def on_category(self) -> None:
        sub = self._category()
        prompts = sorted(sub["prompt"].unique()) if len(sub) else []
        self.prompt_w.options = [ALL] + prompts
        self.prompt_w.value = ALL
        seeds = sorted(int(s) for s in sub["seed"].unique()) if len(sub) else []
        self.seeds_w.options = seeds
        self.seeds_w.value = tuple(seeds[:self.max_seeds])
        self.show()

    def _category(self) -> pd.DataFrame:
        if not len(self.judged) or self.category_w.value is None:
            return pd.DataFrame(columns=["prompt", "seed", "correct"])
        return self.judged[self.judged["category"] == self.category_w.value]

    # -------------------------------------------------------------- what is shown
    def seed_table(self) -> pd.DataFrame:
        """Per chosen seed: images judged, correct, accuracy and its 95% Wilson interval (unknowns left out)."""
        sub = self._category()
        if self.prompt_w.value not in (None, ALL):
            sub = sub[sub["prompt"] == self.prompt_w.value]
        sub = sub[sub["seed"].isin(list(self.seeds_w.value)) & sub["correct"].notna()]
        g = sub.assign(correct=sub["correct"].astype(bool)).groupby("seed")["correct"].agg(["sum", "count"])
        k, n = g["sum"].to_numpy(int), g["count"].to_numpy(int)
        lo, hi = wilson_interval(k, n)
        return pd.DataFrame({"seed": g.index.astype(int), "images": n, "correct": k,
                             "accuracy": np.where(n > 0, k / np.maximum(n, 1), np.nan), "lo": lo, "hi": hi})

    def _say(self, message: str) -> None:
        """Keep `message` and show it in the widget (empty: nothing shown)."""
        import html

        self.message = message
        self.message_w.value = (f"<div style='color:#a40000;font-weight:600'>{html.escape(message)}</div>"
                                if message else "")

    def show(self) -> None:
        """Redraw: the seed table, and the image grid of the chosen prompt (the category's first one when
        all are chosen) with answers, attention overlaid when a word is given. With nothing to show, the
        images of the choice before are cleared and the message says why."""
        import matplotlib.pyplot as plt

        self.table = self.seed_table()
        shown = self.table.rename(columns=INTERVAL)
        self.stats_w.value = shown.to_html(index=False, float_format="%.2f") if len(self.table) else ""
        self._say("")
        sub = self._category()
        seeds = list(self.seeds_w.value)[:self.max_seeds]
        if not len(sub) or not seeds:
            self.figure = None
            self.out.outputs = ()
            self._say("nothing judged for this choice" if not len(sub) else "no seed chosen: pick one or more seeds")
            return
        prompt = self.prompt_w.value if self.prompt_w.value not in (None, ALL) else sorted(sub["prompt"].unique())[0]
        rows = sub[(sub["prompt"] == prompt) & sub["seed"].isin(seeds)].sort_values("seed")
        overlays = self._attention(rows, prompt) if self.word_w.value.strip() else None
        message = self.message  # what the attention check found, shown under the redraw
        n = max(1, len(rows))
        cols = min(COLUMNS, n)
        grid_rows = -(-n // cols)
        fig, axes = plt.subplots(grid_rows, cols, figsize=(2.4 * cols, 2.6 * grid_rows + 0.4), squeeze=False)
        for ax in axes.flat:
            ax.axis("off")
        for ax, (i, r) in zip(axes.flat, enumerate(rows.itertuples())):
            img = self.run.read_image(r)
            ax.imshow(img)
            if overlays is not None:  # stretched over the image
                ax.imshow(overlays[i], cmap="jet", alpha=0.45, extent=(-0.5, img.width - 0.5, img.height - 0.5, -0.5))
            mark = "?" if pd.isna(r.correct) else ("✓" if r.correct else "✗")
            ax.set_title(f"seed {int(r.seed)}: {r.parsed_answer} {mark}", fontsize=11)
        word = f" — attention to {self.word_w.value.strip()!r}" if overlays is not None else ""
        fig.suptitle(f"{prompt}{word}", fontsize=12)
        fig.tight_layout()
        plt.close(fig)
        self.figure = fig
        self.out.outputs = (_png_output(fig, f"{prompt}{word}"),)  # replaces what was shown, kernel or not
        self._say(message)

    def _attention(self, rows: pd.DataFrame, prompt: str) -> np.ndarray | None:
        """The word's cross-attention for each row's seed, the image remade by the model that made it."""
        import re

        from ..attention import word_attention, word_tokens
        from ..pipelines import load_pipeline

        word = self.word_w.value.strip()
        if word.lower() not in re.findall(r"[a-z0-9']+", prompt.lower()):  # before the model loads (seconds)
            self._say(f"{word!r} is not a word of {prompt!r}: no attention shown")
            return None
        cfg = self.run.config()
        model_cfg = cfg.model.__class__(**{**cfg.model.__dict__, "pipeline": str(rows["model"].iloc[0])})
        pipe, info = load_pipeline(model_cfg)
        if word.lower() not in word_tokens(pipe.tokenizer, prompt):
            self._say(f"{word!r} is not a word of {prompt!r} as the model's tokenizer reads it: no attention shown")
            return None
        gen = cfg.generate
        _, maps = word_attention(pipe, info, prompt, word, [int(s) for s in rows["seed"]], gen.steps, gen.guidance,
                                 gen.height, gen.width, cfg.model.generator_device)
        return maps / np.maximum(maps.max(axis=(1, 2), keepdims=True), 1e-9)
