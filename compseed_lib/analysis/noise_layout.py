"""Can a seed's layout be read from its initial noise? A permutation test, and the per-seed figures.

Inputs: per-seed layout heatmaps (layout.seed_heatmaps: where the judge found objects, averaged over
prompts), the seeds' initial noise (generate.seed_noise: the very tensors the engine starts from), and
optionally per-seed accuracy.
Outputs:
  noise_energy(noise, size)      low-frequency energy map of each seed's noise: the noise low-passed
                                 (average-pooled to `pool` x `pool` cells), squared, summed over channels,
                                 resized to the heatmap's size
  fit_channel_weights / weighted_noise_map
                                 a signed combination of the noise channels fitted on some seeds (least
                                 squares), applied to others: the latent channels are not alike
  layout_from_noise(heat, maps)  mean over seeds of corr(map_s, heatmap_s), against the same with the
                                 seeds' maps shuffled (permutation p): is the layout in the noise?
  predicts_accuracy(scores, acc) Spearman correlation between a per-seed score (how well its noise map
                                 matches the average layout) and its accuracy, with a permutation p
  plot_noise_vs_layout(...)      the maps of a few seeds beside their layouts

Usage:
    heat = seed_heatmaps(object_masks(run, "base"))
    noise = seed_noise(list(heat), latent_shape)
    res = layout_from_noise(heat, noise_energy(noise, heat_size))
    w = fit_channel_weights(heat, noise[:16], seeds[:16])        # fit on half the seeds ...
    res = layout_from_noise(heat, weighted_noise_map(noise[16:], w, heat_size), seeds[16:])  # ... test on the rest
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F


def noise_energy(noise: torch.Tensor, size: tuple[int, int], pool: int = 2) -> np.ndarray:
    """(seeds, h, w) low-frequency energy of (seeds, C, H, W) noise, resized to `size`."""
    low = F.avg_pool2d(noise.float(), kernel_size=pool) if pool > 1 else noise.float()
    energy = (low ** 2).sum(1, keepdim=True)
    return F.interpolate(energy, size=size, mode="bilinear", align_corners=False)[:, 0].numpy()


def channel_maps(noise: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """(seeds, C, h, w): each noise channel resized to `size` (bilinear)."""
    return F.interpolate(noise.float(), size=size, mode="bilinear", align_corners=False).numpy()


def fit_channel_weights(heatmaps: dict[int, np.ndarray], noise: torch.Tensor, seeds: Sequence[int]) -> np.ndarray:
    """Least-squares weights w (C,) so that sum_c w_c * channel_c best predicts where a seed's layout
    differs from the mean layout, fitted on `seeds` only (test on others)."""
    heat = np.stack([heatmaps[s] for s in seeds])
    chans = channel_maps(noise, heat.shape[1:])
    y = (heat - heat.mean(0, keepdims=True)).reshape(-1)
    x = (chans - chans.mean(0, keepdims=True)).transpose(0, 2, 3, 1).reshape(-1, chans.shape[1])
    return np.linalg.lstsq(x, y, rcond=None)[0]


def weighted_noise_map(noise: torch.Tensor, weights: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(seeds, h, w): the noise channels combined with `weights` (fit_channel_weights)."""
    return np.tensordot(channel_maps(noise, size), weights, axes=([1], [0]))


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    d = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / d) if d > 0 else float("nan")


def layout_from_noise(heatmaps: dict[int, np.ndarray], maps: np.ndarray, seeds: Sequence[int] | None = None,
                      n_permutations: int = 2000, seed: int = 0) -> dict[str, float]:
    """Mean over seeds of corr(maps[i], heatmap of seeds[i]) against seed-shuffled pairings.

    `maps` is (len(seeds), h, w) in the order of `seeds` (default: sorted heatmap keys). Each heatmap
    has the mean heatmap of all seeds subtracted first, so what is tested is where *this* seed differs
    from the typical layout, not the layout every seed shares (objects rarely touch the border)."""
    seeds = list(seeds) if seeds is not None else sorted(heatmaps)
    if len(seeds) != len(maps) or len(seeds) < 3:
        raise ValueError(f"need one map per seed and at least 3 seeds, got {len(maps)} maps for {len(seeds)} seeds")
    heat = np.stack([heatmaps[s] for s in seeds])
    heat = heat - heat.mean(0, keepdims=True)
    centred = maps - maps.mean(0, keepdims=True)
    observed = float(np.nanmean([_corr(centred[i], heat[i]) for i in range(len(seeds))]))
    rng = np.random.default_rng(seed)
    null = np.empty(n_permutations)
    for k in range(n_permutations):
        perm = rng.permutation(len(seeds))
        null[k] = np.nanmean([_corr(centred[perm[i]], heat[i]) for i in range(len(seeds))])
    p = float((1 + np.sum(null >= observed)) / (1 + n_permutations))
    return {"seeds": len(seeds), "mean_r": observed, "null_mean_r": float(null.mean()),
            "null_95th": float(np.quantile(null, 0.95)), "p": p}


def predicts_accuracy(score: Sequence[float], accuracy: Sequence[float], n_permutations: int = 2000,
                      seed: int = 0) -> dict[str, float]:
    """Spearman rho between a per-seed score and per-seed accuracy, with a two-sided permutation p."""
    from scipy.stats import rankdata

    x, y = rankdata(np.asarray(score, float)), rankdata(np.asarray(accuracy, float))
    if len(x) != len(y) or len(x) < 4:
        raise ValueError(f"need matching per-seed values for at least 4 seeds, got {len(x)} and {len(y)}")
    rho = _corr(x, y)
    rng = np.random.default_rng(seed)
    null = np.array([_corr(x, rng.permutation(y)) for _ in range(n_permutations)])
    p = float((1 + np.sum(np.abs(null) >= abs(rho))) / (1 + n_permutations))
    return {"seeds": len(x), "rho": rho, "p": p}


def plot_noise_vs_layout(heatmaps: dict[int, np.ndarray], maps: np.ndarray, seeds: Sequence[int],
                         show: Sequence[int] | None = None, title: str = ""):
    """For a few seeds: a map computed from the noise (energy or fitted channel mix, top) over where objects
    ended up (bottom)."""
    import matplotlib.pyplot as plt

    seeds = list(seeds)
    show = list(show) if show is not None else seeds[:6]
    fig, axes = plt.subplots(2, len(show), figsize=(1.7 * len(show), 3.6), squeeze=False)
    for j, s in enumerate(show):
        axes[0, j].imshow(maps[seeds.index(s)], cmap="viridis")
        axes[0, j].set_title(f"seed {s}: noise", fontsize=8)
        axes[1, j].imshow(heatmaps[s], cmap="magma", vmin=0)
        axes[1, j].set_title("layout", fontsize=8)
        for ax in axes[:, j]:
            ax.axis("off")
    fig.suptitle(title or "a map computed from the initial noise (top) and where objects ended up (bottom)", fontsize=9)
    fig.tight_layout()
    return fig
