"""The engine's text states (`pipelines.PromptStates`) on real tiny pipelines: each distinct prompt is
encoded once per run, PixArt's masked padding is cut to the batch's longest prompt, and the images are the
ones the pipeline makes from the prompt strings (SD: bit-identical; PixArt: up to float rounding).
`generate.compile` compiles the denoiser and keeps the images."""
import numpy as np
import pytest
import torch

from compseed_lib import generate as G
from compseed_lib import prompts
from compseed_lib.config import GenerateConfig, ModelConfig
from compseed_lib.pipelines import PromptStates, denoiser, load_pipeline
from compseed_lib.store import Run

torch.set_num_threads(1)
TEXTS = ["two red balls and one more ball, on the grass", "a star", "two red balls and one more ball, on the grass",
         "a box left of a star"]
SEEDS = [3, 4, 5, 6]


class Strings:
    """The pipeline's own path: prompt strings, encoded inside every call."""

    def __call__(self, texts, guidance):
        return {"prompt": list(texts)}


def _images(pipe, info, states, guidance=4.0):
    return [np.asarray(im, dtype=np.int16) for im in
            G.render(pipe, info, TEXTS, SEEDS, 2, guidance, 32, 32, states=states)]


def _spy(pipe):
    """Records the rows the text encoder encodes and the text length the denoiser attends over."""
    seen = {"encoded": 0, "text_len": []}
    h1 = pipe.text_encoder.register_forward_hook(
        lambda m, args, kwargs, out: seen.__setitem__("encoded", seen["encoded"] + len(args[0] if args else
                                                                                       kwargs["input_ids"])),
        with_kwargs=True)
    h2 = denoiser(pipe).register_forward_pre_hook(
        lambda m, args, kwargs: seen["text_len"].append(kwargs["encoder_hidden_states"].shape[1]), with_kwargs=True)
    return seen, (h1, h2)


@pytest.mark.parametrize("name", ["tiny-pixart", "tiny-sd"])
def test_each_prompt_encoded_once_and_images_unchanged(cache, name):
    pipe, info = load_pipeline(ModelConfig(pipeline=name))
    plain = _images(pipe, info, Strings())
    states = PromptStates(pipe)
    assert states.kind == ("pixart" if name == "tiny-pixart" else "sd")
    seen, hooks = _spy(pipe)
    try:
        cached = _images(pipe, info, states)
        assert seen["encoded"] == 3 + 1  # three distinct prompts and "" (the unconditional half), once each
        _images(pipe, info, states)
        assert seen["encoded"] == 4  # a second batch of the same prompts encodes nothing
    finally:
        for h in hooks:
            h.remove()
    diff = max(int(np.abs(a - b).max()) for a, b in zip(plain, cached, strict=True))
    if name == "tiny-sd":
        assert diff == 0  # the same CLIP states, all 77 positions
        assert set(seen["text_len"]) == {77}
    else:
        assert diff <= 1  # masked padding cut: the same attention up to float rounding
        longest = int(pipe.tokenizer(TEXTS, padding=True, return_tensors="pt").attention_mask.sum(1).max())
        assert set(seen["text_len"]) == {longest} and longest < 120


def test_unguided_calls_skip_the_unconditional_prompt(cache):
    pipe, info = load_pipeline(ModelConfig(pipeline="tiny-pixart"))
    states = PromptStates(pipe)
    kwargs = states(TEXTS, guidance=1.0)
    assert "negative_prompt_embeds" not in kwargs and "" not in states._cache
    plain, cached = _images(pipe, info, Strings(), 1.0), _images(pipe, info, states, 1.0)
    assert max(int(np.abs(a - b).max()) for a, b in zip(plain, cached, strict=True)) <= 1


# ~20 s: torch.compile of the tiny PixArt transformer (the compile itself is most of it).
def test_generate_compile_keeps_the_images(cache, tmp_path):
    jobs = G.make_jobs(prompts.load("miniworld", "train", limit=1), [0, 1])
    cfg = GenerateConfig(steps=2, guidance=4.0, batch_size=4, threads=1)
    made = {}
    for compiled in (False, True):
        pipe, info = load_pipeline(ModelConfig(pipeline="tiny-pixart"))
        run = Run(tmp_path / f"c{compiled}")
        df = G.generate(run, "s", pipe, info, jobs, GenerateConfig(**{**cfg.__dict__, "compile": compiled}),
                        progress=False)
        assert bool(getattr(denoiser(pipe), "_compiled_call_impl", None)) is compiled
        made[compiled] = {(r.prompt_id, r.seed): np.asarray(run.read_image(r), dtype=np.int16) for r in df.itertuples()}
    assert made[True].keys() == made[False].keys()
    assert max(int(np.abs(made[True][k] - made[False][k]).max()) for k in made[True]) <= 1
