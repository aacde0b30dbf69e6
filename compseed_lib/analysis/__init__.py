"""Figures and interactive views over runs: image grids, layouts, seed-accuracy plots."""
