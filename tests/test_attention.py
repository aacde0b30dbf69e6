"""Cross-attention capture on a tiny SD built from config, the PixArt-style transformer, and the mini-world model:
maps sum to one over tokens, images are identical with capture on and off, processors are put back,
blocks and step ranges select, words map to their tokens (several tokens merged)."""
import numpy as np
import pytest
import torch

from compseed_lib.attention import capture, cross_attention_layers, word_maps, word_tokens
from compseed_lib.config import ModelConfig
from compseed_lib.pipelines import denoiser, load_pipeline

PROMPTS = ["three octopuses, on the sand", "a ball on the left of a star"]


def _images(pipe, info, steps=3, guidance=4.0):
    gens = [torch.Generator().manual_seed(s) for s in (0, 1)]
    return pipe(PROMPTS, generator=gens, num_inference_steps=steps, guidance_scale=guidance, height=32, width=32,
                output_type="np", **info["call_kwargs"]).images


@pytest.mark.parametrize("name", ["tiny-sd", "tiny-pixart"])
def test_capture_records_normalised_maps_without_changing_images_and_removes_itself(name, cache):
    pipe, info = load_pipeline(ModelConfig(pipeline=name))
    net = denoiser(pipe)
    before = dict(net.attn_processors)
    off = _images(pipe, info)
    with capture(pipe, resolution=8) as store:
        on = _images(pipe, info)
        assert all(type(p).__name__ == "CaptureProcessor" for n, p in net.attn_processors.items()
                   if n in cross_attention_layers(net))
        assert not any(type(p).__name__ == "CaptureProcessor" for n, p in net.attn_processors.items()
                       if n not in cross_attention_layers(net))  # self-attention untouched
    assert np.array_equal(off, on)  # the layer's own processor made the output
    after = net.attn_processors
    assert after.keys() == before.keys() and all(after[k] is before[k] for k in before)  # put back
    assert not net._forward_pre_hooks
    maps = store.maps()
    assert maps.shape[:1] == (2,) and maps.shape[2:] == (8, 8)  # the conditional half only
    assert torch.allclose(maps.sum(1), torch.ones(2, 8, 8), atol=1e-4)  # a distribution over tokens per pixel
    assert store.steps == [0, 1, 2] and len(store.layers) == len(cross_attention_layers(net))
    early, late = store.maps(steps=(0, 1)), store.maps(steps=(2, 3))
    assert not torch.allclose(early, late)
    first = store.layers[0].split(".attentions")[0].split(".attn2")[0]
    assert torch.allclose(store.maps(blocks=[first]).sum(1), torch.ones(2, 8, 8), atol=1e-4)
    with pytest.raises(ValueError, match="no attention recorded for steps"):
        store.maps(steps=(5, 9))
    # nothing is recorded once the block is left
    _images(pipe, info)
    assert store.steps == [0, 1, 2]


def test_capture_without_guidance_keeps_the_whole_batch(cache):
    pipe, info = load_pipeline(ModelConfig(pipeline="tiny-sd"))
    with capture(pipe, resolution=4) as store:
        _images(pipe, info, steps=2, guidance=1.0)
    assert store.maps().shape == (2, 77, 4, 4)


def test_words_map_to_their_tokens_merged():
    pipe, _ = load_pipeline(ModelConfig(pipeline="miniworld"))  # word-level: one token per word
    pos = word_tokens(pipe.tokenizer, PROMPTS[1])
    assert pos["ball"] == [2] and pos["star"] == [8] and pos["a"] == [1, 7]  # after BOS
    tiny, _ = load_pipeline(ModelConfig(pipeline="tiny-sd"))  # a small BPE vocabulary: words of many tokens
    pos = word_tokens(tiny.tokenizer, PROMPTS[0])
    assert len(pos["octopuses"]) > 1 and pos["octopuses"] == sorted(pos["octopuses"])
    ids = tiny.tokenizer(PROMPTS[0]).input_ids
    assert tiny.tokenizer.decode([ids[i] for i in pos["octopuses"]]).replace(" ", "") == "octopuses"


def test_word_maps_sum_the_tokens_of_each_word(cache):
    pipe, info = load_pipeline(ModelConfig(pipeline="tiny-sd"))
    with capture(pipe, resolution=8) as store:
        _images(pipe, info, steps=2)
    maps = store.maps()
    got = word_maps(store, pipe, PROMPTS, ["octopuses", "star"])
    pos = word_tokens(pipe.tokenizer, PROMPTS[0])
    assert torch.allclose(got["octopuses"][0], maps[0, pos["octopuses"]].sum(0))
    assert float(got["octopuses"][1].abs().sum()) == 0.0  # not in the second prompt
    assert float(got["star"][1].sum()) > 0
    with pytest.raises(ValueError, match="2 images, 1 prompts"):
        word_maps(store, pipe, PROMPTS[:1], ["star"])
