"""Attention-loss guidance (methods/guidance.py) on tiny SD and tiny PixArt built from configs and on the shipped
mini-world generators: scale 0 is the plain pipeline's image for the same seed, counting prompts are left alone,
the step window is kept, the latent update moves the objects' attention centroids the way the relation asks."""
import logging

import numpy as np
import pytest
import torch

from compseed_lib.config import ModelConfig
from compseed_lib.generate import seed_noise
from compseed_lib.methods import guidance as G
from compseed_lib.pipelines import latent_shape, load_pipeline

PROMPTS = ["a kite on the left of a ring", "three balls, on the sand", "a star under a heart"]
SEEDS = [3, 4, 5]


@pytest.fixture(scope="module")
def pipes(cache):
    loaded = {}

    def get(name):
        if name not in loaded:
            loaded[name] = load_pipeline(ModelConfig(pipeline=name))
        return loaded[name]
    return get


def _plain(pipe, info, prompts, seeds, steps=6):
    noise = seed_noise(seeds, latent_shape(pipe, 32, 32))
    with torch.no_grad():
        out = pipe(prompts, latents=noise, num_inference_steps=steps, guidance_scale=4.0, height=32, width=32,
                   output_type="np", **info["call_kwargs"]).images
    return (out * 255).round().astype(int)


def _arr(images):
    return np.stack([np.asarray(i) for i in images]).astype(int)


@pytest.mark.parametrize("name", ["tiny-sd", "tiny-pixart", "miniworld"])
def test_scale_zero_is_the_plain_pipeline_for_the_same_seed(name, pipes):
    pipe, info = pipes(name)
    images = G.generate_guided(pipe, PROMPTS, SEEDS, G.GuidanceConfig(scale=0.0), steps=6, batch_size=2)
    assert [im.size for im in images] == [(32, 32)] * 3
    assert np.abs(_arr(images) - _plain(pipe, info, PROMPTS, SEEDS)).max() <= 1


@pytest.mark.parametrize("name", ["tiny-sd", "miniworld-pixart"])
def test_guidance_changes_only_relation_prompts_inside_the_window(name, pipes, caplog):
    pipe, info = pipes(name)
    cfg = G.GuidanceConfig(scale=300.0, start=2, end=4, iterations=2)
    with caplog.at_level(logging.INFO, logger="compseed_lib.methods.guidance"):
        images, trace = G.generate_guided(pipe, PROMPTS, SEEDS, cfg, steps=6, return_trace=True)
    assert "1 of 3 prompts state no relation" in caplog.text
    plain = _plain(pipe, info, PROMPTS, SEEDS)
    got = _arr(images)
    assert np.array_equal(got[1], plain[1])  # the counting prompt is sampled as without guidance
    assert not np.array_equal(got[0], plain[0]) and not np.array_equal(got[2], plain[2])
    assert sorted(set(trace.step)) == [2, 3] and sorted(set(trace.iteration)) == [0, 1]
    assert set(trace.prompt) == {PROMPTS[0], PROMPTS[2]} and len(trace) == 2 * 2 * 2
    assert np.isfinite(trace[["total", "spatial", "presence", "balance", "d"]].to_numpy()).all()


def test_counting_prompts_only_are_a_no_op_that_says_so(pipes, caplog):
    pipe, info = pipes("miniworld")
    with caplog.at_level(logging.INFO, logger="compseed_lib.methods.guidance"):
        images, trace = G.generate_guided(pipe, PROMPTS[1:2], SEEDS[:1], G.GuidanceConfig(scale=1e4), steps=6,
                                          return_trace=True)
    assert "no-op" in caplog.text and trace.empty
    assert np.abs(_arr(images) - _plain(pipe, info, PROMPTS[1:2], SEEDS[:1])).max() <= 1


@pytest.mark.parametrize("relation,axis,sign", [("on the left of", "x", 1), ("on the right of", "x", -1),
                                                ("on the top of", "y", 1), ("under", "y", -1)])
def test_updates_move_the_centroids_the_way_the_relation_asks(relation, axis, sign, pipes):
    """Controlled case: one prompt and seed, six updates at the first step only; B's centroid moves away from
    A's along the relation's axis (x_B - x_A grows for 'left', shrinks for 'right'; y likewise, y downwards)."""
    pipe, _ = pipes("miniworld-pixart")  # its relations are at chance: the loss has room to move
    cfg = G.GuidanceConfig(scale=300.0, start=0, end=1, iterations=6, w_presence=0.0, w_balance=0.0)
    _, trace = G.generate_guided(pipe, [f"a kite {relation} a ring"], [7], cfg, steps=4, return_trace=True)
    offset = sign * (trace[f"{axis}b"] - trace[f"{axis}a"]).to_numpy()
    assert np.allclose(offset, trace.d.to_numpy(), atol=1e-5)
    assert offset[-1] > offset[0] + 0.02 and trace.spatial.iloc[-1] < trace.spatial.iloc[0]
    assert (np.diff(trace.spatial.to_numpy()) < 1e-6).sum() >= 4  # mostly monotone


def test_spatial_loss_is_the_published_form():
    c_a, c_b = torch.tensor([0.2, 0.5]), torch.tensor([0.7, 0.4])
    loss, d = G.spatial_loss(c_a, c_b, "left")
    assert float(d) == pytest.approx(0.5) and float(loss) == pytest.approx(float(torch.nn.functional.gelu(
        torch.tensor(0.75 * (0.25 - 0.5)))))
    assert float(G.spatial_loss(c_a, c_b, "right")[1]) == pytest.approx(-0.5)
    assert float(G.spatial_loss(c_a, c_b, "above")[1]) == pytest.approx(-0.1)
    with pytest.raises(ValueError, match="unknown relation 'near'"):
        G.spatial_loss(c_a, c_b, "near")


def test_bad_inputs_name_the_problem(pipes):
    pipe, _ = pipes("tiny-sd")
    with pytest.raises(ValueError, match="step window start=3, end=2"):
        G.generate_guided(pipe, PROMPTS[:1], [0], G.GuidanceConfig(start=3, end=2), steps=4)
    with pytest.raises(ValueError, match="end=9 .* steps \\(4\\)"):
        G.generate_guided(pipe, PROMPTS[:1], [0], G.GuidanceConfig(end=9), steps=4)
    with pytest.raises(ValueError, match="layer 'mid_blocks' has no cross-attention layer"):
        G.generate_guided(pipe, PROMPTS[:1], [0], G.GuidanceConfig(layers=("mid_blocks",)), steps=4)
    with pytest.raises(ValueError, match="2 prompts and 1 seeds"):
        G.generate_guided(pipe, PROMPTS[:2], [0], steps=4)
    with pytest.raises(ValueError, match="scale -1"):
        G.generate_guided(pipe, PROMPTS[:1], [0], G.GuidanceConfig(scale=-1), steps=4)
