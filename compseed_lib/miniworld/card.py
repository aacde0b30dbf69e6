"""Model card of the mini-world generator, written from its training record and evaluation tables.

Inputs: `<model>/training_record.json` (train.py) and an evaluation folder (evaluate_model.py --out).
Outputs: `<model>/README.md` and `<model>/loss_curve.png`.

Usage:
    python -m compseed_lib.miniworld.card models/miniworld reports/miniworld_eval [notes.md]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd


def loss_figure(history: list, path: Path) -> None:
    """Training loss (running mean per log interval) against step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, loss = [h[0] for h in history], [h[1] for h in history]
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot(steps, loss)
    ax.set_xlabel("step")
    ax.set_ylabel("v-prediction MSE")
    ax.set_yscale("log")
    ax.set_title("mini-world UNet + text encoder training loss")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _md(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def write_card(model_dir: str | Path, eval_dir: str | Path | None = None, notes: str = "") -> Path:
    """Write README.md (architecture, data, training, evaluation) into the model folder."""
    model_dir = Path(model_dir)
    rec = json.loads((model_dir / "training_record.json").read_text())
    loss_figure(rec["loss_history"], model_dir / "loss_curve.png")
    p, cfg, spec = rec["parameters"], rec["config"], rec["spec"]
    size_mb = sum(f.stat().st_size for f in model_dir.rglob("*.safetensors")) / 2**20
    text = [
        "# mini-world generator", "",
        "Stable Diffusion in miniature, trained from scratch on rendered mini-world scenes by "
        "`compseed train-miniworld configs/train/miniworld.yaml`. Loads with "
        "`StableDiffusionPipeline.from_pretrained(\"models/miniworld\")`.", "",
        "## Architecture", "",
        f"- AutoencoderKL {spec['vae_channels']}: {spec['image_size']} px RGB ↔ "
        f"{spec['image_size'] // 2 ** (len(spec['vae_channels']) - 1)}² × {spec['latent_channels']} latents "
        f"({p['vae'] / 1e6:.2f} M parameters)",
        f"- UNet2DConditionModel {spec['unet_channels']}, SD block layout (cross-attention in down_blocks.0–2, "
        f"mid_block, up_blocks.1–3), pooled text added to the time embedding ({p['unet'] / 1e6:.2f} M)",
        f"- CLIPTextModel, {spec['text_layers']} layers × {spec['text_dim']} wide, word-level tokenizer "
        f"({p['text_encoder'] / 1e6:.2f} M)",
        f"- {spec['prediction_type']}, zero-terminal-SNR = {spec['zero_terminal_snr']}; DDIM sampler "
        "(trailing spacing)",
        f"- weights: {size_mb:.1f} MB of safetensors", "",
        "## Data and training", "",
        f"- {cfg['n_scenes']:,} rendered scenes (half counting captions, counts one–six; half spatial "
        "captions, a background named half the time), all 8 object kinds and 6 backgrounds",
        f"- VAE: {cfg['vae_steps']:,} steps × {cfg['vae_batch']} images",
        f"- UNet + text encoder: {rec['steps']:,} steps × {cfg['batch']} = {rec['images_seen']:,} images seen, "
        f"AdamW lr {cfg['lr']}, EMA {cfg['ema_decay']}, caption dropout {cfg['cond_drop']}",
        f"- hardware: {rec['device']}, {rec['threads']} torch thread(s), torch {rec['torch']}; UNet + text "
        f"encoder training wall time {rec['loss_history'][-1][2] / 3600:.2f} h (from the loss record)",
        "", "![loss](loss_curve.png)", ""]
    if eval_dir and Path(eval_dir).is_dir():
        ev = Path(eval_dir)
        s = pd.read_csv(ev / "summary.csv").iloc[0]
        text += ["## Evaluation (exact mini-world judge, held-out seeds)", "",
                 f"{int(s['seeds'])} held-out seeds × 40 counting prompts (8 objects × counts 2–6, both "
                 f"splits) and 40 spatial prompts (10 object pairs × 4 relations), {int(s['steps'])} DDIM steps, "
                 f"guidance {s['guidance']}. Command: `python -m compseed_lib.miniworld.evaluate_model "
                 f"models/miniworld --seeds {int(s['seeds'])} --steps {int(s['steps'])} --guidance {s['guidance']} "
                 f"--out reports/miniworld_eval`.", "",
                 _md(pd.read_csv(ev / "summary.csv").drop(columns=["seeds", "steps", "guidance"])), "",
                 "Per count:", "", _md(pd.read_csv(ev / "counting.csv")), "",
                 "Judged count (columns) per asked count (rows):", "", _md(pd.read_csv(ev / "histogram.csv")), "",
                 "Per relation:", "", _md(pd.read_csv(ev / "spatial.csv")), ""]
    if notes:
        text += ["## Notes", "", notes, ""]
    out = model_dir / "README.md"
    out.write_text("\n".join(text))
    return out


if __name__ == "__main__":
    notes = Path(sys.argv[3]).read_text() if len(sys.argv) > 3 else ""
    print(write_card(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None, notes))
