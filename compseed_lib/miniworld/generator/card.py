"""Model card of the mini-world generator, written from its training record and evaluation tables.

Inputs: `<model>/training_record.json` (train.py) and an evaluation folder (evaluate_model.py --out).
Outputs: `<model>/README.md` and `<model>/loss_curve.png`.

Usage:
    compseed model-card MODEL_DIR [EVAL_DIR [NOTES.md]]
    # the shipped card, with its notes on how the model got here:
    compseed model-card models/miniworld reports/miniworld_eval reports/miniworld_eval/card_notes.md
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ...report import markdown_table


def loss_figure(histories: list[tuple[list, int]], path: Path, net: str = "UNet") -> None:
    """Training loss (running mean per log interval) against step; one line per (history, first step)."""
    from matplotlib.figure import Figure  # no pyplot: no backend chosen for the whole process

    fig = Figure(figsize=(5, 3))
    ax = fig.subplots()
    for i, hist in enumerate(histories, 1):
        ax.plot([h[0] + hist[1] for h in hist[0]], [h[1] for h in hist[0]], label=f"stage {i}")
    if len(histories) > 1:
        ax.legend()
    ax.set_xlabel("step")
    ax.set_ylabel("v-prediction MSE")
    ax.set_yscale("log")
    ax.set_title(f"mini-world {net} + text encoder training loss")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _unnamed(c: dict) -> str:
    """What a spatial caption naming no background showed (records before the rule existed: random)."""
    from ..vocab import DEFAULT_BACKGROUND

    rule = c.get("unnamed_background", "random")
    return f", unnamed background {repr(DEFAULT_BACKGROUND) if rule == 'default' else rule}"


def _stage_line(i: int, rec: dict) -> str:
    c = rec["config"]
    probe = f" (cosine heads, scale {c['probe_scale']})" if c.get("probe_scale") else " (linear heads)"
    extra = "".join([f", caption-probe loss weight {c['caption_loss']}{probe}" if c.get("caption_loss") else "",
                     f", spatial scenes drawn {c['spatial_weight']}x" if c.get("spatial_weight", 1) != 1 else "",
                     _unnamed(c)])
    return (f"- stage {i}: {rec['steps']:,} steps × {c['batch']} = {rec['images_seen']:,} images, AdamW lr "
            f"{c['lr']}, EMA {c['ema_decay']}, caption dropout {c['cond_drop']}{extra}; {rec['device']}, "
            f"{rec['threads']} torch thread(s), torch {rec['torch']}, {rec['loss_history'][-1][2] / 3600:.2f} h")


def caption_section(rec: dict) -> list[str]:
    """The card's "Captions" section: the profile the model was trained under and what its captions said."""
    from .captions import EXACT

    profile = rec.get("caption_profile")
    if not profile or profile == {**EXACT.__dict__}:
        return ["## Captions", "", "Exact captions: every training caption states the scene's count or relation "
                "correctly (the clean-caption world; `captions: exact`).", ""]
    stats = pd.DataFrame(rec.get("caption_statistics", []))
    probs = ", ".join(f"{k} {v:g}" for k, v in profile.items() if k != "seed")
    return ["## Captions", "",
            "Web-like captions (`captions` in the training config): the rendered scenes are those of the "
            "clean-caption model, only the text paired with each one changes, once per scene (an alt text, "
            f"not a fresh draw per step). Profile: {probs}.", "",
            "Why these rates: captions that state how many objects an image holds are rare in web data, and a "
            "number word in an alt text often does not give the count of the pictured objects (Paiss et al., "
            "*Teaching CLIP to Count to Ten*, ICCV 2023, had to filter web captions and check them with an "
            "object detector to build a counting set); web captions hold little reliable spatial language "
            "(Kamath et al., *What's \"up\" with vision-language models?*, EMNLP 2023, on LAION-2B; "
            "Chatterjee et al., *Getting it Right* / SPRIGHT, ECCV 2024, on LAION, CC-12M and COCO). Every "
            "mini-world scene is about a count or a relation, so the rates here are far above the web's base "
            "rates: a statement stays the minority and is often wrong, but the words remain learnable. The exact "
            "rates are this kit's choice, not a measurement of LAION.", "",
            "Captions seen in training (share of the scenes of each kind):", "",
            markdown_table(stats) if len(stats) else "(not recorded)", ""]


def _captions_beside_accuracy(rec: dict, summary: pd.Series) -> pd.DataFrame | None:
    """Per kind: share of training captions that stated the count / relation, share of those that were
    right, and the evaluated accuracy it governs."""
    stats = {(r["scenes"].split()[0], r["caption"]): r["share"] for r in rec.get("caption_statistics", [])}
    if not stats:
        return None
    rows = []
    for group, said, right, acc, acc_name in (
            ("count", ("exact", "wrong"), "count word right, when stated", "count_2_5_exact", "count 2–5 exact"),
            ("relation", ("stated", "flipped"), "relation word right, when stated", "relation_correct_given_both",
             "relation right, given both drawn")):
        rows.append({"kind": group, "captions stating it": sum(stats.get((group, f), 0.0) for f in said),
                     "right when stated": stats.get((group, right), float("nan")),
                     "accuracy": f"{float(summary[acc]):.3f} ({acc_name})"})
    return pd.DataFrame(rows)


def write_card(model_dir: str | Path, eval_dir: str | Path | None = None, notes: str = "") -> Path:
    """Write README.md (architecture, data, training, evaluation) into the model folder."""
    model_dir = Path(model_dir)
    rec = json.loads((model_dir / "training_record.json").read_text())
    p, cfg, spec = rec["parameters"], rec["config"], rec["spec"]
    stages, r = [], rec
    while r:  # a continued run keeps the record of the run it started from
        stages.insert(0, r)
        r = r.get("init_from_record")
    offsets = [sum(x["steps"] for x in stages[:i]) for i in range(len(stages))]
    size_mb = sum(f.stat().st_size for f in model_dir.rglob("*.safetensors")) / 2**20
    pixart = spec.get("architecture", "unet") == "pixart"
    configs = ([x["config_file"] for x in stages] if all(x.get("config_file") for x in stages) else
               ["configs/train/miniworld_pixart.yaml"] if pixart else
               ["configs/train/miniworld.yaml"] + [f"configs/train/miniworld_stage{i}.yaml"
                                                   for i in range(2, len(stages) + 1)])
    vae_from = next((x["config"].get("vae_from") for x in stages if x["config"].get("vae_from")), None)
    latent = f"{spec['image_size'] // 2 ** (len(spec['vae_channels']) - 1)}² × {spec['latent_channels']}"
    vae_line = (f"- AutoencoderKL {spec['vae_channels']}: {spec['image_size']} px RGB ↔ {latent} latents "
                f"({p['vae'] / 1e6:.2f} M parameters" + (f", taken as trained from `{vae_from}`)"
                                                        if vae_from else ")"))
    if pixart:
        arch = [vae_line,
                f"- PixArtTransformer2DModel: {spec['dit_layers']} DiT blocks × "
                f"{spec['dit_heads'] * spec['dit_head_dim']} wide ({spec['dit_heads']} heads), "
                f"{spec['patch_size']}×{spec['patch_size']} latent patches, "
                f"cross-attention to the text states, timestep through adaLN-single ({p['transformer'] / 1e6:.2f} M)",
                f"- T5EncoderModel, {spec['text_layers']} layers × {spec['text_dim']} wide (relative position "
                f"buckets, gated-GELU), word-level tokenizer ending each prompt with EOS "
                f"({p['text_encoder'] / 1e6:.2f} M)"]
    else:
        arch = [vae_line,
                f"- UNet2DConditionModel {spec['unet_channels']}, SD block layout (cross-attention in down_blocks.0–2, "
                f"mid_block, up_blocks.1–3), pooled text added to the time embedding ({p['unet'] / 1e6:.2f} M)",
                f"- CLIPTextModel, {spec['text_layers']} layers × {spec['text_dim']} wide, word-level tokenizer "
                f"({p['text_encoder'] / 1e6:.2f} M)"]
    loss_figure([(x["loss_history"], o) for x, o in zip(stages, offsets)], model_dir / "loss_curve.png",
                "PixArt transformer" if pixart else "UNet")
    text = [
        f"# mini-world generator ({'PixArt-alpha' if pixart else 'Stable Diffusion'} in miniature)", "",
        ("PixArt-alpha" if pixart else "Stable Diffusion") + " in miniature, trained from scratch on rendered "
        f"mini-world scenes by `compseed train-miniworld {configs[0]}`"
        + "".join(f", then `{c}`" for c in configs[1:])
        + ". Loads with "
        f"`{'PixArtAlphaPipeline' if pixart else 'StableDiffusionPipeline'}"
        f".from_pretrained(\"models/{model_dir.name}\")`"
        f" or `model.pipeline: {model_dir.name}`.", "",
        "## Architecture", "",
        *arch,
        f"- {spec['prediction_type']}, zero-terminal-SNR = {spec['zero_terminal_snr']}; DDIM sampler "
        "(trailing spacing)",
        f"- weights: {size_mb:.1f} MB of safetensors", "",
        "## Data and training", "",
        f"- {cfg['n_scenes']:,} rendered scenes (half counting captions, counts one–six; half spatial "
        "captions, a background named half the time; what an unnamed one shows is given per stage), all 8 "
        "object kinds and 6 backgrounds",
        (f"- VAE: that of `{vae_from}`, unchanged" if vae_from else
         f"- VAE: {cfg['vae_steps']:,} steps × {cfg['vae_batch']} images"),
        *[_stage_line(i, r) for i, r in enumerate(stages, 1)],
        f"- in all {sum(r['images_seen'] for r in stages):,} images seen by the "
        f"{'transformer' if pixart else 'UNet'} and text encoder, "
        f"{sum(r['loss_history'][-1][2] for r in stages) / 3600:.2f} h of training (from the loss records)",
        "", "![loss](loss_curve.png)", "", *caption_section(rec)]
    if eval_dir and Path(eval_dir).is_dir():
        ev = Path(eval_dir)
        s = pd.read_csv(ev / "summary.csv").iloc[0]
        text += ["## Evaluation (exact mini-world judge, held-out seeds)", "",
                 f"{int(s['seeds'])} held-out seeds (from {int(s.get('seed_offset', 10_000))}) × 40 counting "
                 f"prompts (8 objects × counts 2–6, both "
                 f"splits) and 40 spatial prompts (10 object pairs × 4 relations), {int(s['steps'])} DDIM steps, "
                 f"guidance {s['guidance']}. Command: `compseed evaluate-model "
                 f"models/{model_dir.name} --seeds {int(s['seeds'])} --steps {int(s['steps'])} "
                 f"--guidance {s['guidance']} "
                 f"--out reports/{model_dir.name}_eval`.", "",
                 markdown_table(pd.read_csv(ev / "summary.csv").drop(
                     columns=["seeds", "seed_offset", "steps", "guidance"], errors="ignore")), "",
                 "sensitivity_ratio: mean per-pixel |difference| between \"A on the left of B\" and \"A on the "
                 "right of B\" at one seed, over that between two consecutive seeds of one prompt (the spatial "
                 "prompts name no background).", "",
                 "Per count:", "", markdown_table(pd.read_csv(ev / "counting.csv")), "",
                 "Judged count (columns) per asked count (rows):", "",
                 markdown_table(pd.read_csv(ev / "histogram.csv")), "",
                 "Per relation:", "", markdown_table(pd.read_csv(ev / "spatial.csv")), ""]
        side = _captions_beside_accuracy(rec, s)
        if side is not None:
            text += ["What the training captions said, beside what the model does (the same evaluation):", "",
                     markdown_table(side), ""]
        if (ev / "text_separation.csv").is_file():
            text += ["Text-encoder distance between captions that differ in one word (mean L2 over token "
                     "states; a word near zero is one the UNet cannot see):", "",
                     markdown_table(pd.read_csv(ev / "text_separation.csv")), ""]
    if notes:
        text += ["## Notes", "", notes, ""]
    out = model_dir / "README.md"
    out.write_text("\n".join(text))
    return out


def main(argv: list[str] | None = None) -> int:
    """`compseed model-card MODEL_DIR [EVAL_DIR [NOTES.md]]`: write MODEL_DIR/README.md."""
    import argparse

    ap = argparse.ArgumentParser(prog="compseed model-card", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="pipeline folder, e.g. models/miniworld")
    ap.add_argument("eval", nargs="?", help="folder of `compseed evaluate-model --out` tables")
    ap.add_argument("notes", nargs="?", help="a markdown file of notes for the card's last section")
    args = ap.parse_args(argv)
    notes = Path(args.notes).read_text() if args.notes else ""
    print(write_card(args.model, args.eval, notes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
