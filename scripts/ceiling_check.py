"""The known positive a ceiling must be able to show: does exact, diverse data teach this model to count?

A ceiling arm bounds what better data can do only if the fine-tune it runs can move the model at all. This
check fine-tunes a generator on scenes drawn the way its pretraining scenes were (every object, background,
count and relation of the mini world; `miniworld.generator.data.scene` at indices its pretraining never
used), captioned exactly, with the kit's own `finetune.train`, and scores base and fine-tune by the model
card's protocol (`compseed evaluate-model`: every object at counts 2-5, held-out seeds), paired by
(prompt, seed) with an exact McNemar test.

Usage:
    .venv/bin/python scripts/ceiling_check.py models/miniworld-web --images 6000 --steps 1600 --lr 1e-4
    .venv/bin/python scripts/ceiling_check.py models/miniworld-web --weights qk     # the paper's q/k only
Writes runs/_ceiling_check/<model>-<weights>-<images>-<steps>-<lr>/ (dataset, fine-tune, evaluation images)
and prints counting 2-5 and spatial accuracy of both, the gain, and p.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from compseed_lib import finetune  # noqa: E402
from compseed_lib.config import GRID_WEIGHTS, FinetuneConfig  # noqa: E402
from compseed_lib.miniworld.generator import data  # noqa: E402
from compseed_lib.miniworld.generator.evaluate import evaluate  # noqa: E402
from compseed_lib.stats import mcnemar  # noqa: E402
from compseed_lib.store import atomic_write_text  # noqa: E402

FRESH = 50_000_000  # scene indices from here on: no pretraining stage drew them


def scenes(folder: Path, n: int, size: int) -> Path:
    """`n` pretraining-like scenes with exact captions as an imagefolder (kept when already complete)."""
    from PIL import Image

    meta = folder / "train" / "metadata.jsonl"
    if meta.is_file() and len(meta.read_text().splitlines()) == n:
        return folder
    (folder / "train").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        caption, img = data.scene(FRESH + i, size=size)
        Image.fromarray(img).save(folder / "train" / f"scene_{i:06d}.png")
        lines.append(json.dumps({"file_name": f"scene_{i:06d}.png", "text": caption}))
    atomic_write_text(meta, "\n".join(lines) + "\n")
    return folder


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="a mini-world generator folder, e.g. models/miniworld-web")
    ap.add_argument("--images", type=int, default=6000)
    ap.add_argument("--steps", type=int, default=1600)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--weights", default="all", choices=GRID_WEIGHTS, help="what trains (finetune.widened)")
    ap.add_argument("--seeds", type=int, default=16, help="evaluation seeds per prompt (the card's protocol)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    model = Path(args.model)
    pixart = (model / "transformer").is_dir()
    root = Path("runs") / "_ceiling_check" / f"{model.name}-{args.weights}-{args.images}-{args.steps}-{args.lr:g}"
    folder = scenes(root.parent / f"scenes-{args.images}", args.images, 32)
    ft = finetune.widened(FinetuneConfig(method="qk", steps=args.steps, lr=args.lr, batch=args.batch,
                                         blocks=[2, 3, 4, 5] if pixart else None), args.weights)
    target = root / "model"
    if not finetune.finished_with(target, ft, folder):
        finetune.train(str(model), folder, ft, root / "work", target)
    base = evaluate(model, n_seeds=args.seeds, steps=10, guidance=4.0, run_dir=root.parent / f"eval-{model.name}")
    tuned = evaluate(target, n_seeds=args.seeds, steps=10, guidance=4.0, run_dir=root / "eval")
    b, t = (r["images"].set_index(["prompt", "seed"]) for r in (base, tuned))
    for kind, name in (("count", "counting 2-5"), ("spatial", "spatial")):
        keep = (b["kind"] == kind) & (b["asked"].between(2, 5) if kind == "count" else True)
        x, y = b.loc[keep, "correct"], t.loc[b.index[keep], "correct"]
        xs = [None if v is None or v != v else bool(v) for v in x]
        ys = [None if v is None or v != v else bool(v) for v in y]
        test = mcnemar(xs, ys)
        acc = lambda vs: sum(v is True for v in vs) / max(1, sum(v is not None for v in vs))  # noqa: E731
        print(f"{name}: base {acc(xs):.3f}, fine-tuned {acc(ys):.3f} ({len(xs)} images; "
              f"{test['b_only']} fixed, {test['a_only']} broken, McNemar p {test['p']:.2g})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
