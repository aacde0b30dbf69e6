"""Layout from the noise: the permutation test finds a planted link and no link where there is none;
the accuracy predictor likewise; the figure draws."""
import numpy as np
import torch

from compseed_lib.analysis.noise_layout import layout_from_noise, noise_energy, plot_noise_vs_layout, predicts_accuracy
from compseed_lib.generate import seed_noise


def _case(planted: bool, n_seeds=24):
    seeds = list(range(n_seeds))
    maps = noise_energy(seed_noise(seeds, (4, 8, 8)), (32, 32))
    rng = np.random.default_rng(1)
    base = np.outer(np.hanning(32), np.hanning(32))  # every seed's shared layout: objects away from borders
    heat = {s: base + (0.5 * maps[i] / maps[i].max() if planted else 0) + rng.normal(0, 0.3, (32, 32))
            for i, s in enumerate(seeds)}
    return heat, maps, seeds


def test_noise_energy_is_the_low_passed_energy_resized():
    noise = torch.zeros(1, 4, 8, 8)
    noise[0, :, :2, :2] = 1.0  # energy only in the top-left cell
    m = noise_energy(noise, (8, 8))
    assert m.shape == (1, 8, 8) and m[0, 0, 0] > m[0, 7, 7] == 0


def test_planted_layout_is_found_and_none_is_not():
    found = layout_from_noise(*_case(True)[:2], n_permutations=500)
    assert found["mean_r"] > 0.3 and found["p"] < 0.01
    none = layout_from_noise(*_case(False)[:2], n_permutations=500)
    assert abs(none["mean_r"]) < 0.1 and none["p"] > 0.05


def test_accuracy_predictor_finds_a_monotone_link_only():
    rng = np.random.default_rng(0)
    score = rng.normal(size=40)
    assert predicts_accuracy(score, score + rng.normal(0, 0.3, 40))["p"] < 0.01
    assert predicts_accuracy(score, rng.normal(size=40))["p"] > 0.05


def test_figure_draws_each_seed():
    heat, maps, seeds = _case(True, 8)
    fig = plot_noise_vs_layout(heat, maps, seeds, show=seeds[:3])
    assert len(fig.axes) == 6


def test_channel_weights_fitted_on_some_seeds_predict_the_others():
    from compseed_lib.analysis.noise_layout import fit_channel_weights, weighted_noise_map

    seeds = list(range(40))
    noise = seed_noise(seeds, (4, 8, 8))
    truth = weighted_noise_map(noise, np.array([-1.0, 0.0, 0.5, 0.0]), (16, 16))  # a signed channel mix
    rng = np.random.default_rng(2)
    heat = {s: truth[i] + rng.normal(0, 0.5, (16, 16)) for i, s in enumerate(seeds)}
    w = fit_channel_weights(heat, noise[:20], seeds[:20])
    assert w[0] < -0.5 and w[2] > 0.2 and abs(w[1]) < 0.2
    res = layout_from_noise(heat, weighted_noise_map(noise[20:], w, (16, 16)), seeds[20:], n_permutations=300)
    assert res["mean_r"] > 0.5 and res["p"] < 0.01
