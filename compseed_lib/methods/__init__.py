"""Neighbouring methods compared with seed selection: RPG regional prompting (regional), InfSplign-style
attention-loss guidance (guidance) and best-of-N noise search (search)."""
