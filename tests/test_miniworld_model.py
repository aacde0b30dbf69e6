"""The mini-world generator: SD-in-miniature components, the tiny training run, resume, loading."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from compseed_lib import prompts as P
from compseed_lib.config import ConfigError, load_dataclass
from compseed_lib.miniworld.generator import data
from compseed_lib.miniworld.generator.data import objects_and_backgrounds
from compseed_lib.miniworld.generator.model import MiniModelSpec, build_tokenizer, build_unet
from compseed_lib.miniworld.generator.train import TrainConfig, train
from compseed_lib.store import Run

REPO = Path(__file__).resolve().parents[1]


def test_tokenizer_knows_every_prompt_word():
    tok = build_tokenizer(MiniModelSpec.tiny())
    texts = [p.text for s in P.SPLITS for p in P.load("miniworld", s)] + [data.scene(i)[0] for i in range(50)]
    for text in texts:
        ids = tok(text).input_ids
        assert tok.unk_token_id not in ids, text
        assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
        assert len(ids) <= tok.model_max_length, text


def test_unet_has_the_papers_attention_blocks():
    unet = build_unet(MiniModelSpec.tiny())
    names = {n for n, _ in unet.named_modules()}
    for block in ("down_blocks.1", "down_blocks.2", "mid_block", "up_blocks.1", "up_blocks.2"):
        assert any(n.startswith(block) and n.endswith("attn2.to_q") for n in names), block
        assert any(n.startswith(block) and n.endswith("attn1.to_k") for n in names), block


def test_scenes_are_deterministic_and_captioned():
    (c1, a), (c2, b) = data.scene(123), data.scene(123)
    assert c1 == c2 and np.array_equal(a, b) and a.shape == (32, 32, 3)
    captions = [data.scene(i)[0] for i in range(200)]
    assert any(" on the left of " in c for c in captions) and any(c.startswith("three ") for c in captions)


def test_an_unnamed_background_is_the_default_one_and_the_old_rule_stays_reproducible(tmp_path, monkeypatch):
    from compseed_lib.miniworld import judge_scene
    from compseed_lib.miniworld.vocab import DEFAULT_BACKGROUND

    unnamed_bgs = []
    for i in range(120):
        (c_def, a), (c_rand, b) = data.scene(i), data.scene(i, unnamed="random")
        assert c_def == c_rand  # same random draws under both rules
        if ", " in c_def:
            assert np.array_equal(a, b), c_def  # named backgrounds: identical scenes
        else:
            assert judge_scene(a).background == DEFAULT_BACKGROUND, c_def
            unnamed_bgs.append(judge_scene(b).background)
    assert len(unnamed_bgs) > 10 and len(set(unnamed_bgs)) >= 4  # the old rule drew them at random
    folder = tmp_path / "scenes"
    data.build_scene_cache(folder, 40, progress=False)
    imgs_def, caps = data.load_scene_cache(folder, 40)
    data.build_scene_cache(folder, 40, progress=False, unnamed="random")  # another rule: rendered again
    imgs_rand, caps_rand = data.load_scene_cache(folder, 40)
    assert caps == caps_rand and not np.array_equal(imgs_def, imgs_rand)
    assert json.loads((folder / "world.json").read_text())["unnamed"] == "random"
    monkeypatch.setattr(data, "CHUNK", 16)  # several chunks, rendered by two processes: the same scenes
    data.build_scene_cache(tmp_path / "two", 40, progress=False, unnamed="random", workers=2)
    imgs_two, caps_two = data.load_scene_cache(tmp_path / "two", 40)
    assert len(list((tmp_path / "two").glob("scenes_*.npy"))) == 3
    assert caps_two == caps_rand and np.array_equal(imgs_two, imgs_rand)
    with pytest.raises(ValueError, match="unnamed_background must be one of .* 'sometimes'"):
        train(TrainConfig(work_dir=str(tmp_path / "w"), unnamed_background="sometimes", tiny=True, n_scenes=8))


def test_caption_labels_read_the_structure_of_every_caption_kind():
    caps = ["a tent on the right of a ball, on a stone floor", "three stars, at night", "one kite, on the sand",
            "a ball under a heart", ""]
    lab = data.caption_labels(caps)
    names = dict(zip(data.LABEL_FIELDS, lab.T))
    rel = {r: i + 1 for i, r in enumerate(P.RELATION_TEXT)}
    assert list(names["relation"]) == [rel["right"], 0, 0, rel["below"], 0]
    assert list(names["count"]) == [0, 3, 1, 0, 0]
    assert names["kind_b"][0] == names["kind_a"][3] != names["kind_a"][0]  # ball; tent differs
    assert (lab[4] == 0).all() and (lab[:4, 1] > 0).all() and names["background"][3] == 0
    assert (lab.max(axis=0) < np.array(data.LABEL_SIZES)).all()
    scene_caps = [data.scene(i)[0] for i in range(300)]
    scene_lab = data.caption_labels(scene_caps)
    assert ((scene_lab[:, 0] > 0) == scene_lab[:, 2].astype(bool)).all()  # relation iff a second object
    with pytest.raises(ValueError, match="seven dragons"):
        data.caption_labels(["seven dragons, at night"])


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("mw")
    cfg = load_dataclass(TrainConfig, REPO / "configs/train/miniworld_tiny.yaml",
                         [f"out_dir={root / 'model'}", f"work_dir={root / 'work'}"])
    return cfg, train(cfg)


def test_tiny_training_exports_a_loadable_sd_pipeline(tiny_model):
    from diffusers import StableDiffusionPipeline

    from compseed_lib.pipelines import from_pretrained

    cfg, out = tiny_model
    record = json.loads((out / "training_record.json").read_text())
    assert record["steps"] == cfg.steps and record["images_seen"] == cfg.steps * cfg.batch
    assert len(record["loss_history"]) >= 2 and all(np.isfinite(h[1]) for h in record["loss_history"])
    assert not list(out.rglob("*.bin")) and list(out.rglob("*.safetensors"))  # no pickles shipped
    assert json.loads((out / "tokenizer" / "tokenizer.json").read_text())["padding"] is None  # no training state
    from safetensors.torch import load_file

    for part in ("unet", "text_encoder", "vae"):  # shipped as fp16 (half the bytes), loaded as float32
        weights = load_file(str(next((out / part).glob("*.safetensors"))))
        assert {t.dtype for t in weights.values()} == {torch.float16}, part
    pipe = from_pretrained(out)
    assert isinstance(pipe, StableDiffusionPipeline)
    assert {p.dtype for m in (pipe.unet, pipe.text_encoder, pipe.vae) for p in m.parameters()} == {torch.float32}
    pipe.set_progress_bar_config(disable=True)
    g = [torch.Generator().manual_seed(s) for s in (0, 1)]
    images = pipe(["two balls, on the sand", "a star under a box"], num_inference_steps=2, height=32,
                  width=32, generator=g, output_type="np").images
    assert images.shape == (2, 32, 32, 3) and np.isfinite(images).all()


def test_training_resumes_from_its_checkpoint(tiny_model, caplog):
    cfg, _ = tiny_model
    ckpts = sorted((Path(cfg.work_dir) / "checkpoints").glob("step_*"))
    assert [c.name for c in ckpts] == ["step_0000003", "step_0000006"]  # keep_checkpoints=2
    cfg.steps += 2
    with caplog.at_level("INFO"):
        train(cfg)
    assert "resumed from" in caplog.text and "step_0000006" in caplog.text
    record = json.loads((Path(cfg.out_dir) / "training_record.json").read_text())
    assert record["loss_history"][-1][0] == 8


def test_bad_training_config_names_the_key(tmp_path):
    bad = tmp_path / "t.yaml"
    bad.write_text("stpes: 3\n")
    with pytest.raises(ConfigError, match="unknown config key 'stpes'"):
        load_dataclass(TrainConfig, bad)


def test_export_of_a_checkpoint_matches_the_trained_export(tiny_model, tmp_path):
    from safetensors.torch import load_file

    from compseed_lib.miniworld.generator.train import export_checkpoint

    cfg, out = tiny_model
    cfg2 = TrainConfig(**{**cfg.__dict__, "out_dir": str(tmp_path / "exported")})
    exported = export_checkpoint(cfg2)
    for part in ("unet", "text_encoder"):
        a = load_file(str(next((Path(cfg.out_dir) / part).glob("*.safetensors"))))
        b = load_file(str(next((exported / part).glob("*.safetensors"))))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), part


def test_training_can_continue_from_a_shipped_folder(tiny_model, tmp_path):
    from safetensors.torch import load_file

    cfg, out = tiny_model
    cont = TrainConfig(**{**cfg.__dict__, "work_dir": str(tmp_path / "work"), "out_dir": str(tmp_path / "out"),
                          "init_from": str(out), "steps": 1, "checkpoint_every": 1})
    train(cont)
    vae_a = load_file(str(next((out / "vae").glob("*.safetensors"))))
    vae_b = load_file(str(next((tmp_path / "out" / "vae").glob("*.safetensors"))))
    assert all(torch.equal(vae_a[k], vae_b[k]) for k in vae_a)  # the VAE is adopted, not retrained
    scale = [json.loads((f / "vae" / "config.json").read_text())["scaling_factor"] for f in (out, tmp_path / "out")]
    assert scale[0] == scale[1]  # and so is the latent scale its UNet was trained at
    # one step of EMA(0.999) from the warm start stays close to it; a fresh init would not
    a = load_file(str(next((out / "unet").glob("*.safetensors"))))
    b = load_file(str(next((tmp_path / "out" / "unet").glob("*.safetensors"))))
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-2


def test_the_last_stage_config_trains_the_earlier_stages_first(tmp_path):
    stage1 = tmp_path / "stage1.yaml"
    tiny = yaml.safe_load((REPO / "configs/train/miniworld_tiny.yaml").read_text())
    stage1.write_text(yaml.safe_dump({**tiny, "out_dir": str(tmp_path / "s1"), "work_dir": str(tmp_path / "w1"),
                                      "steps": 2}))
    stage2 = TrainConfig(tiny=True, n_scenes=64, vae_steps=2, vae_batch=8, steps=1, batch=8, warmup=1,
                         out_dir=str(tmp_path / "s2"), work_dir=str(tmp_path / "w2"),
                         init_from=str(tmp_path / "s1"), init_from_config=str(stage1))
    record = json.loads((train(stage2) / "training_record.json").read_text())
    assert record["init_from_record"]["steps"] == 2 and record["images_seen_total"] == 2 * 8 + 1 * 8
    wrong = TrainConfig(**{**stage2.__dict__, "init_from": str(tmp_path / "elsewhere")})
    with pytest.raises(ValueError, match="writes .*s1.*not init_from .*elsewhere"):
        train(wrong)
    with pytest.raises(FileNotFoundError, match="elsewhere.* is not a pipeline folder"):
        train(TrainConfig(**{**wrong.__dict__, "init_from_config": None}))
    for n in (2, 3, 4):  # the shipped chain is linked the same way
        cfg = load_dataclass(TrainConfig, REPO / f"configs/train/miniworld_stage{n}.yaml")
        prior = load_dataclass(TrainConfig, REPO / cfg.init_from_config)
        assert prior.out_dir == cfg.init_from


@pytest.mark.parametrize("name, cls", [("miniworld", "StableDiffusionPipeline"),
                                       ("miniworld-pixart", "PixArtAlphaPipeline")])
def test_shipped_model_loads_by_name_and_draws_scenes(name, cls):
    from compseed_lib.config import ModelConfig
    from compseed_lib.generate import seed_noise
    from compseed_lib.miniworld import judge_scene
    from compseed_lib.pipelines import load_pipeline
    from compseed_lib.sources import SHIPPED

    folder = SHIPPED[name]
    record = json.loads((folder / "training_record.json").read_text())
    assert (folder / "README.md").is_file() and record["images_seen"] > 100_000
    size = sum(f.stat().st_size for f in folder.rglob("*.safetensors"))
    assert size <= 40 * 2**20, f"shipped weights are {size / 2**20:.1f} MB (limit 40 MB)"
    pipe, info = load_pipeline(ModelConfig(pipeline=name))
    assert info["pipeline_class"] == cls and info["latent_shape"] == (4, 8, 8)
    images = pipe(["two balls, at night"] * 2, latents=seed_noise([0, 1], (4, 8, 8)), num_inference_steps=10,
                  guidance_scale=4.0, height=32, width=32, output_type="np", **info["call_kwargs"]).images
    judged = [judge_scene((im * 255).round().astype(np.uint8)) for im in images]
    # a trained model draws the background asked for (measured ~99% in the model card)
    assert all(j.background == "at night" for j in judged), [j.background for j in judged]


def test_tiny_training_logs_the_caption_probe_and_text_separation_runs(tiny_model):
    from compseed_lib.miniworld.generator.evaluate import text_separation
    from compseed_lib.pipelines import from_pretrained

    cfg, out = tiny_model
    assert cfg.caption_loss > 0
    history = json.loads((out / "training_record.json").read_text())["loss_history"]
    assert all(len(h) == 4 and np.isfinite(h[3]) and h[3] > 0 for h in history)  # caption loss logged
    table = text_separation(from_pretrained(out))
    assert list(table.differs_in) == ["left vs right", "left vs above", "above vs below", "first object",
                                      "count", "background"]
    # the table measures what it says: recompute one row by hand from the same encoder
    pipe = from_pretrained(out)
    objs, bgs = objects_and_backgrounds()
    texts = [t for a in objs for t in (P.numerical_text(a, 3, bgs[0]), P.numerical_text(a, 4, bgs[0]))]
    ids = pipe.tokenizer(texts, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                         truncation=True, return_tensors="pt").input_ids
    with torch.inference_mode():
        h = pipe.text_encoder(ids)[0].float()
    by_hand = float((h[0::2] - h[1::2]).norm(dim=-1).mean())
    assert table.set_index("differs_in").loc["count", "distance"] == pytest.approx(by_hand, rel=1e-5)
    assert table.set_index("differs_in").loc["count", "pairs"] == len(objs)


def test_evaluation_tables_and_model_card_of_a_two_stage_model(tiny_model, tmp_path):
    from compseed_lib.miniworld.generator import card
    from compseed_lib.miniworld.generator import evaluate as evaluate_model

    cfg, out = tiny_model
    stage2 = TrainConfig(**{**cfg.__dict__, "work_dir": str(tmp_path / "work"), "out_dir": str(tmp_path / "model"),
                            "init_from": str(out), "steps": 2, "probe_scale": 0.0})  # linear probe heads
    model = train(stage2)
    record = json.loads((model / "training_record.json").read_text())
    assert record["images_seen_total"] == (cfg.steps + 2) * cfg.batch
    assert record["init_from_record"]["steps"] == cfg.steps
    assert evaluate_model.main([str(model), "--seeds", "2", "--steps", "2", "--seed-offset", "20000",
                                "--out", str(tmp_path / "eval"), "--run", str(tmp_path / "evalrun")]) == 0
    # through the engine and the judge stage: images in a run's ledger, one judgement per image
    run = Run(tmp_path / "evalrun")
    assert len(run.ledger.images("eval_2steps_cfg4")) == len(run.ledger.judgements("eval_2steps_cfg4")) == 160
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    images = pd.read_csv(tmp_path / "eval" / "images.csv")
    assert summary["seeds"] == 2 and summary["seed_offset"] == 20000
    assert set(images["seed"]) == {20000, 20001} and len(images) == 2 * images["prompt"].nunique()
    assert summary["kind_present"] == pytest.approx(images["present"].mean())  # the card's number, recomputed
    counts = images[images["kind"] == "count"]
    in_range = counts[counts["asked"].between(2, 5)]
    assert summary["count_2_5_exact"] == pytest.approx((in_range["asked"] == in_range["judged"]).mean())
    counting = (tmp_path / "eval" / "counting.csv").read_text().splitlines()
    assert len(counting) == 1 + 5  # header + counts 2..6
    text = card.write_card(model, tmp_path / "eval").read_text()
    for needle in ("stage 1:", "stage 2:", "Per relation", "Text-encoder distance", "left vs right",
                   "sensitivity_ratio: mean", "unnamed background 'on a stone floor'",
                   f"{(cfg.steps + 2) * cfg.batch:,} images seen"):
        assert needle in text, needle
    assert (model / "loss_curve.png").stat().st_size > 1000


def test_relation_sensitivity_ratio_on_constructed_images():
    """The card's sensitivity ratio: same-seed left/right distance over different-seed distance."""
    from compseed_lib.miniworld.generator.evaluate import relation_sensitivity

    sp = [p for p in P.spatial_prompts("miniworld", "train") if p.obj.name == "ball" and p.obj_b.name == "star"]
    left = next(p for p in sp if p.relation == "left")
    right = next(p for p in sp if p.relation == "right")
    seeds = [0, 1, 2]
    img = {s: np.full((4, 4, 3), 10.0 * s) for s in seeds}  # seeds differ by 10 per pixel
    follows = {**{(left.text, s): img[s] for s in seeds}, **{(right.text, s): img[s] + 5 for s in seeds}}
    r = relation_sensitivity(follows, [left, right], seeds)
    assert (r["same_seed"], r["different_seed"]) == (5.0, 10.0)  # ratio 0.5
    ignores = {**{(left.text, s): img[s] for s in seeds}, **{(right.text, s): img[s] for s in seeds}}
    assert relation_sensitivity(ignores, [left, right], seeds)["same_seed"] == 0.0  # ratio 0
    assert np.isnan(relation_sensitivity(follows, [left], seeds)["same_seed"])  # no twin: undefined


def test_pixart_architecture_trains_with_the_same_trainer_and_loads_as_pixart(tiny_model, tmp_path):
    """The architecture is a config choice: the same `train` writes a PixArtAlphaPipeline folder (T5 encoder
    with a tied embedding, PixArt transformer, the VAE of `vae_from` as is) that resumes and samples."""
    from diffusers import PixArtAlphaPipeline

    from compseed_lib.config import GenerateConfig, ModelConfig
    from compseed_lib.generate import generate, make_jobs
    from compseed_lib.pipelines import from_pretrained, load_pipeline

    cfg0, sd_out = tiny_model
    sets = [f"out_dir={tmp_path / 'px'}", f"work_dir={tmp_path / 'w'}", f"vae_from={sd_out}", "caption_loss=0",
            "spec={architecture: pixart}", "steps=4"]
    cfg = load_dataclass(TrainConfig, REPO / "configs/train/miniworld_tiny.yaml", sets)
    train(cfg)
    cfg6 = load_dataclass(TrainConfig, REPO / "configs/train/miniworld_tiny.yaml", sets[:-1])
    out = train(cfg6)  # continues from step 3's checkpoint to 6
    record = json.loads((out / "training_record.json").read_text())
    assert record["steps"] == 6 and set(record["parameters"]) == {"transformer", "text_encoder", "vae"}
    assert [h[0] for h in record["loss_history"]][-1] == 6
    pipe = from_pretrained(out)
    assert isinstance(pipe, PixArtAlphaPipeline) and type(pipe.text_encoder).__name__ == "T5EncoderModel"
    sd_vae, px_vae = from_pretrained(sd_out).vae, pipe.vae
    assert px_vae.config.scaling_factor == sd_vae.config.scaling_factor
    assert all(torch.equal(a, b) for a, b in zip(sd_vae.state_dict().values(), px_vae.state_dict().values()))
    ids = pipe.tokenizer("two balls").input_ids
    assert ids[-1] == pipe.tokenizer.eos_token_id and pipe.tokenizer.bos_token_id not in ids  # T5's way
    p, info = load_pipeline(ModelConfig(pipeline=str(out)))
    df = generate(Run(tmp_path / "run"), "base", p, info, make_jobs(P.load("miniworld", "train", limit=2), [0, 1]),
                  GenerateConfig(steps=2, batch_size=4), progress=False)
    assert len(df) == 8 and set(df["sampler"]) == {"DDIMScheduler"}
    from compseed_lib.miniworld.generator.card import write_card

    card = write_card(out).read_text()
    assert "PixArtTransformer2DModel" in card and "T5EncoderModel" in card and "miniworld_pixart.yaml" in card
    assert "UNet2DConditionModel" not in card and f"that of `{sd_out}`, unchanged" in card
    with pytest.raises(ValueError, match="caption_loss"):
        train(load_dataclass(TrainConfig, REPO / "configs/train/miniworld_tiny.yaml", sets[:-2] + ["caption_loss=0.1"]
                             + [f"work_dir={tmp_path / 'w2'}", "spec={architecture: pixart}"]))
