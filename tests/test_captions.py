"""Caption profiles (miniworld/generator/captions.py): the text paired with each training scene follows
the profile's probabilities within sampling error, each form says what it should, and a web-caption
run records what its captions said."""
from __future__ import annotations

import json
import math
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from compseed_lib import prompts as P
from compseed_lib.config import ConfigError, load_dataclass
from compseed_lib.miniworld.generator import data
from compseed_lib.miniworld.generator.captions import (
    COUNT_FORMS,
    RELATION_FORMS,
    VAGUE_WORDS,
    WEB,
    CaptionProfile,
    apply_profile,
    caption_statistics,
    web_caption,
)
from compseed_lib.miniworld.generator.model import MiniModelSpec, build_tokenizer
from compseed_lib.miniworld.generator.train import TrainConfig, train

REPO = Path(__file__).resolve().parents[1]
N = 6000
COUNT_WORD = {w: n for n, w in P.COUNT_WORDS.items()}
OBJS = P.world_objects("miniworld")
SKEWED = CaptionProfile(count_exact=0.1, count_omitted=0.2, count_vague=0.3, count_wrong=0.4,
                        relation_stated=0.5, relation_omitted=0.1, relation_flipped=0.4, seed=3)


@pytest.fixture(scope="module")
def scenes() -> list[str]:
    return [data.scene(i)[0] for i in range(N)]


def _within(k: int, n: int, p: float, z: float = 4.5) -> bool:
    """k of n successes is within z binomial standard errors of p (exactly 0 or n when p is 0 or 1)."""
    return abs(k - n * p) <= z * math.sqrt(n * p * (1 - p)) + 1e-9


@pytest.mark.parametrize("profile", [WEB, SKEWED, CaptionProfile(count_omitted=1.0, count_exact=0.0)],
                         ids=["web", "skewed", "all-omitted"])
def test_sampled_forms_follow_the_profile_within_sampling_error(scenes, profile):
    captions, forms = apply_profile(scenes, profile)
    spatial = [" of " in c or " under " in c for c in scenes]
    for group, names, mask in (("count", COUNT_FORMS, [not s for s in spatial]), ("relation", RELATION_FORMS, spatial)):
        tally, n = Counter(f for f, m in zip(forms, mask) if m), sum(mask)
        assert n > 2000 and set(tally) <= set(names)
        for form in names:
            p = getattr(profile, f"{group}_{form}")
            assert _within(tally[form], n, p), (group, form, tally[form], n, p)
    stats = {(r["scenes"].split()[0], r["caption"]): r["share"] for r in caption_statistics(scenes, forms)}
    assert abs(stats[("count", "omitted")] - profile.count_omitted) < 0.05


def test_each_form_says_what_it_should(scenes):
    captions, forms = apply_profile(scenes, WEB)
    steps = Counter()
    for exact, said, form in zip(scenes, captions, forms):
        text, _, bg = exact.partition(", ")
        said_text, _, said_bg = said.partition(", ")
        assert said_bg == bg  # the background, named or not, is never touched
        if " of " in text or " under " in text:
            a, rel, b = P.parse_spatial(text)
            if form == "omitted":
                assert said_text == f"{a.singular} and {b.singular}"
                assert not any(p in said_text for p in P.RELATION_PHRASES)
            else:
                a2, rel2, b2 = P.parse_spatial(said_text)
                assert (a2.name, b2.name) == (a.name, b.name)
                assert rel2 == (P.OPPOSITE[rel] if form == "flipped" else rel)
            continue
        count, noun = COUNT_WORD[text.split()[0]], text.split()[-1]
        obj = next(o for o in OBJS if noun in (o.name, o.plural))
        first, last = said_text.split()[0], said_text.split()[-1]
        assert last in (obj.name, obj.plural)  # the same kind of object
        if form == "exact":
            assert said == exact
        elif form == "omitted":
            assert first not in COUNT_WORD and not any(said_text.startswith(v) for v in VAGUE_WORDS)
        elif form == "vague":
            assert first not in COUNT_WORD
            assert any(said_text.startswith(v + " ") for v in VAGUE_WORDS) or (count == 1 and said_text.startswith("a"))
        else:
            said_n = COUNT_WORD[first]
            assert said_n >= 1 and abs(said_n - count) in (1, 2)
            assert last == (obj.name if said_n == 1 else obj.plural)  # "one ball", "two balls"
            steps[abs(said_n - count)] += 1
    assert _within(steps[1], steps[1] + steps[2], 2 / 3)  # off by one twice as often as by two


def test_captions_are_fixed_per_scene_and_differ_between_seeds(scenes):
    a = apply_profile(scenes[:500], WEB)[0]
    assert a == apply_profile(scenes[:500], WEB)[0]
    assert a[17] == web_caption(scenes[17], 17, WEB)[0]
    other = apply_profile(scenes[:500], CaptionProfile(**{**WEB.__dict__, "seed": 1}))[0]
    assert sum(x != y for x, y in zip(a, other)) > 100
    assert apply_profile(scenes, CaptionProfile())[0] == scenes  # exact: the scene's own captions


def test_web_captions_are_in_the_tokenizer_and_the_probe_reads_what_they_state(scenes):
    captions, forms = apply_profile(scenes[:2000], WEB)
    tok = build_tokenizer(MiniModelSpec.tiny())
    for c in set(captions):
        assert tok.unk_token_id not in tok(c).input_ids, c
    labels = data.caption_labels(captions)
    for c, f, lab in zip(captions, forms, labels):
        text = c.partition(", ")[0]
        if f in ("omitted",) and " and " in text:
            assert lab[0] == 0 and lab[1] > 0 and lab[2] > 0
        elif f in ("omitted", "vague"):
            assert lab[3] == 0 and lab[1] > 0
        elif f in ("exact", "wrong"):
            assert lab[3] == COUNT_WORD[text.split()[0]]


@pytest.mark.parametrize("sets, message", [
    (["captions={count_exact: 0.5}"], r"count_exact \+ count_omitted \+ count_vague \+ count_wrong must sum to 1"),
    (["captions={relation_flipped: 1.5, relation_stated: -0.5}"], r"captions.relation_stated must be a probability"),
    (["captions=webby"], r"captions must be one of \['exact', 'web'\]"),
    (["captions={count_exactly: 1.0}"], r"unknown config key 'captions.count_exactly'"),
])
def test_a_bad_profile_names_the_key(sets, message):
    with pytest.raises((ValueError, ConfigError), match=message):
        cfg = load_dataclass(TrainConfig, REPO / "configs/train/miniworld_tiny.yaml", sets)
        cfg.caption_profile()


def test_the_twin_configs_differ_from_their_clean_reference_only_in_captions_and_paths():
    """Same architecture and budget as the clean-caption model of each stage; what may differ: the captions,
    where it writes, which earlier stage it continues, the VAE it takes as trained, and its thread count."""
    import yaml

    pairs = [("miniworld_pixart.yaml", "miniworld_pixart_web.yaml"), ("miniworld.yaml", "miniworld_web.yaml")]
    pairs += [(f"miniworld_stage{i}.yaml", f"miniworld_web_stage{i}.yaml") for i in (2, 3, 4)]
    free = {"out_dir", "work_dir", "init_from", "init_from_config", "threads"}
    for clean, web in pairs:
        a = yaml.safe_load((REPO / "configs/train" / clean).read_text())
        b = yaml.safe_load((REPO / "configs/train" / web).read_text())
        assert b.pop("captions") == "web" and a.get("captions", "exact") == "exact"
        if b.get("vae_from") != a.get("vae_from"):  # stage 1 of the SD twin: the clean model's VAE, as is
            assert b.pop("vae_from") == "models/miniworld" and clean == "miniworld.yaml"
            a.pop("vae_steps"), b.pop("vae_steps"), a.pop("vae_batch"), b.pop("vae_batch")
        assert {k: v for k, v in a.items() if k not in free} == {k: v for k, v in b.items() if k not in free}, web
        assert load_dataclass(TrainConfig, REPO / "configs/train" / web).caption_profile() == WEB
    chain = yaml.safe_load((REPO / "configs/train/miniworld_web_stage4.yaml").read_text())
    assert chain["out_dir"] == "models/miniworld-web"


def test_a_web_caption_run_records_its_captions_and_its_card_shows_them(tmp_path):
    """A tiny web-caption training run (seconds): the record holds the profile and the caption table the
    card prints; the probe trains on what the web captions state."""
    from compseed_lib.miniworld.generator.card import write_card

    cfg = load_dataclass(TrainConfig, REPO / "configs/train/miniworld_tiny.yaml",
                         [f"out_dir={tmp_path / 'm'}", f"work_dir={tmp_path / 'w'}", "captions=web", "steps=2",
                          "n_scenes=400"])
    out = train(cfg, "configs/train/miniworld_tiny.yaml")
    rec = json.loads((out / "training_record.json").read_text())
    assert rec["caption_profile"]["count_omitted"] == WEB.count_omitted
    assert rec["config_file"] == "configs/train/miniworld_tiny.yaml"
    shares = {(r["scenes"].split()[0], r["caption"]): r["share"] for r in rec["caption_statistics"]}
    assert abs(sum(shares[("count", f)] for f in COUNT_FORMS) - 1) < 1e-9
    assert 0.3 < shares[("relation", "omitted")] < 0.8
    card = write_card(out).read_text()
    assert "## Captions" in card and "Teaching CLIP to Count" in card and "count word right, when stated" in card
    assert re.search(r"\| count \(\d+\) \| omitted \| 0\.\d{3} \|", card)
    clean = load_dataclass(TrainConfig, REPO / "configs/train/miniworld_tiny.yaml",
                           [f"out_dir={tmp_path / 'c'}", f"work_dir={tmp_path / 'w2'}", "steps=2", "n_scenes=400"])
    assert "Exact captions" in write_card(train(clean)).read_text()
    assert np.isclose(json.loads((tmp_path / "c" / "training_record.json").read_text())
                      ["caption_statistics"][0]["share"], 1.0)
