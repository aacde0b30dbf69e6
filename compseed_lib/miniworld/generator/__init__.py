"""The mini world's trained generators: model (a small text-conditioned diffusers pipeline), data
(captioned renders), train (the training stages), evaluate (the card's numbers, through the kit's
generation engine and judge stage) and card (the model card).

The world (`compseed_lib.miniworld`: vocabulary, renderer, exact judge) knows nothing of this package.

Usage:
    compseed train-miniworld configs/train/miniworld_stage4.yaml
    compseed evaluate-model models/miniworld --seeds 64 --steps 10 --out reports/miniworld_eval
    compseed model-card models/miniworld reports/miniworld_eval reports/miniworld_eval/card_notes.md
"""
