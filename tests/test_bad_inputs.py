"""The bad-input corpus: each wrong input a person might type gives one clear line naming it, a nonzero exit,
and no partial files; inputs the kit can still use but would silently lose words of give a warning naming them.

Damaged image files in a run directory are covered where they are handled: test_generate (regenerated on
resume), test_judge (named, never judged), test_chain (one line and the advice works).
"""
import contextlib
import io
import logging
import shutil
from pathlib import Path

import pytest

from compseed_lib import cli

REPO = Path(__file__).resolve().parents[1]
SMOKE = str(REPO / "configs" / "smoke.yaml")
WORLD = REPO / "prompt_dataset" / "miniworld"

# id: (arguments after `compseed`, files of a prompt world to write (None: none), text the message must hold)
CASES = {
    "misspelled config key": (["run", SMOKE, "--set", "generat.steps=3"], None, "unknown config key 'generat'"),
    "wrong type": (["run", SMOKE, "--set", "generate.steps=ten"], None, "'generate.steps': expected int, got 'ten'"),
    "invalid yaml": (["run", "bad.yaml"], None, "bad.yaml: not valid YAML"),
    "unknown --set key": (["run", SMOKE, "--set", "colour=red"], None, "unknown config key 'colour'"),
    "missing config file": (["run", "nope.yaml"], None, "config file not found: nope.yaml"),
    "model path that does not exist": (["run", SMOKE, "--set", "model.pipeline=./no/such/model"], None,
                                       "model.pipeline './no/such/model': no such folder"),
    "judge url on a closed port": (["run", SMOKE, "--set", "judge.base_url=http://127.0.0.1:9/v1"], None,
                                   "judge server at http://127.0.0.1:9/v1 is not reachable"),
    "negative seed": (["run", SMOKE, "--set", "generate.seeds=[3, -1]"], None, "generate.seeds [-1]"),
    "non-integer seed": (["run", SMOKE, "--set", "generate.seeds=[1.5]"], None,
                         "'generate.seeds[0]': expected int, got 1.5"),
    "count below the template": (["run", SMOKE, "--set", "prompts.counts=[0, 2]"], None, "prompts.counts [0, 2]"),
    "count above the template": (["run", SMOKE, "--set", "prompts.counts=[11]"], None, "prompts.counts [11]"),
    "empty prompt list": (["run", SMOKE, "--set", "prompts.limit=0"], None, "prompts.limit 0"),
    "unknown prompt kind": (["run", SMOKE, "--set", "prompts.kinds=[colour]"], None, "prompts.kinds ['colour']"),
    "stage with a path": (["run", SMOKE, "--stage", "../elsewhere"], None, "bad stage '../elsewhere'"),
    "unknown step": (["run", SMOKE, "--only", "08_figures"], None, "unknown step(s) ['08_figures']"),
    "size the VAE cannot take": (["run", SMOKE, "--set", "generate.height=30"], None, "generate.height/width 30x32"),
    "zero batch": (["run", SMOKE, "--set", "generate.batch_size=0"], None, "generate.batch_size 0"),
    "unknown dtype": (["run", SMOKE, "--set", "model.dtype=float8"], None, "model.dtype 'float8'"),
    "unknown judge": (["run", SMOKE, "--set", "judge.name=gpt-5-turbo"], None, "unknown judge 'gpt-5-turbo'"),
    "judge key not in the environment": (["run", SMOKE, "--set", "judge.name=gpt-4o"], None,
                                         "needs an API key in the environment variable OPENAI_API_KEY"),
    "evaluation seeds that were mined": (["run", SMOKE, "--set", "evaluate.seeds=[0, 1]"], None,
                                         "evaluate.seeds [0, 1]: must be disjoint"),
    "unknown fine-tune selection": (["run", SMOKE, "--set", "finetune.selection=everything"], None,
                                    "finetune.selection 'everything'"),
    "fine-tune pattern that is no regex": (["run", SMOKE, "--set", "finetune.patterns=['attn(']"], None,
                                           "finetune.patterns 'attn('"),
    "unknown fine-tune method": (["run", SMOKE, "--set", "finetune.method=dora"], None, "finetune.method 'dora'"),
    "malformed line in an object file": (["run", SMOKE, "--set", "prompts.world=WORLD"],
                                         {"objects_train.txt": "ball, a ball, balls\nstar a star stars\n"},
                                         "objects_train.txt:2: expected 'name, singular with article, plural'"),
    "object name with a path separator": (["run", SMOKE, "--set", "prompts.world=WORLD"],
                                          {"objects_train.txt": "ball, a ball, balls\nst/ar, a st/ar, st/ars\n"},
                                          "objects_train.txt:2: bad object name 'st/ar'"),
    "unsupported relation word": (["run", SMOKE, "--set", "prompts.world=WORLD"],
                                  {"spatial_prompts_train.txt": "a ball on the left of a star\na ball beside a star\n"},
                                  "spatial_prompts_train.txt:2: cannot parse spatial prompt 'a ball beside a star'"),
    "malformed spatial line": (["run", SMOKE, "--set", "prompts.world=WORLD"],
                               {"spatial_prompts_train.txt": "ball left star\n"},
                               "spatial_prompts_train.txt:1: cannot parse spatial prompt 'ball left star'"),
    "world with no prompts": (["run", SMOKE, "--set", "prompts.world=WORLD"], {"objects_train.txt": ""},
                              "has no count prompts"),
    "fine-tune of a run that does not exist": (["finetune", SMOKE, "--set", "name=never-run"], None, "never-run"),
    "mining prompts too few for the dataset": (["run", SMOKE, "--set", "dataset.prompts=all", "--set",
                                                "prompts.limit=3", "--set", "evaluate.arms=[base, qk]"], None,
                                               "prompts.limit: the 6 mining prompts leave categories"),
    "mining prompts too few for the top-seed arm": (["run", SMOKE, "--set", "prompts.limit=3"], None,
                                                    "of the held-out prompts without mined seeds"),
    "unknown grid weights": (["run", SMOKE, "--set", "dataset.validation=0.25", "--set",
                              "finetune.grid={weights: [qk, heads]}"], None, "finetune.grid.weights"),
}


@pytest.mark.parametrize("argv, files, message", list(CASES.values()), ids=list(CASES))
def test_bad_input_gives_one_line_naming_it_a_nonzero_exit_and_no_files(argv, files, message, tmp_path,
                                                                         monkeypatch, cache):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    (tmp_path / "bad.yaml").write_text("prompts: [\n  world: miniworld\n")
    if files is not None:
        world = tmp_path / "world"
        shutil.copytree(WORLD, world)
        for name, text in files.items():
            (world / name).write_text(text)
        argv = [a.replace("WORLD", str(world)) for a in argv]
    before = sorted(p for p in tmp_path.rglob("*"))
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = cli.main(argv)
    text = err.getvalue()
    errors = [line for line in text.splitlines() if line.startswith("compseed: error:")]
    assert code != 0 and len(errors) == 1 and message in errors[0], text[-2000:]
    assert "Traceback" not in text
    assert sorted(p for p in tmp_path.rglob("*")) == before  # nothing written: no run, no report, no lock


def test_the_corpus_is_at_least_twenty_cases():
    assert len(CASES) >= 20


# ---------------------------------------------------------------------------- warned, not refused
@pytest.mark.parametrize("text, words", [
    ("three dogs, on the sand", ["dogs"]),  # a kind the mini world does not have
    ("three balsl, at night", ["balsl"]),  # a typo
    ("a ball on the left of a zebra", ["zebra"]),
])
def test_a_word_the_generator_does_not_know_is_named(text, words, tmp_path, caplog):
    from compseed_lib import generate as G
    from compseed_lib.config import GenerateConfig, ModelConfig
    from compseed_lib.pipelines import load_pipeline
    from compseed_lib.prompts import Obj, Prompt, prompt_id
    from compseed_lib.store import Run

    pipe, info = load_pipeline(ModelConfig(pipeline="miniworld"))
    p = Prompt(id=prompt_id("count", text), text=text, kind="count", obj=Obj("ball", "a ball", "balls"),
               split="train", world="custom", count=3)
    with caplog.at_level(logging.WARNING, logger="compseed_lib.generate"):
        G.generate(Run(tmp_path / "run"), "base", pipe, info, G.make_jobs([p], [0]), GenerateConfig(steps=2),
                   progress=False)
    warned = [r.getMessage() for r in caplog.records if "does not know" in r.getMessage()]
    assert len(warned) == 1 and str(words) in warned[0] and repr(text) in warned[0]


def test_a_prompt_longer_than_the_text_window_names_what_is_cut_off():
    from compseed_lib.config import ModelConfig
    from compseed_lib.pipelines import load_pipeline, prompt_problems

    pipe, _ = load_pipeline(ModelConfig(pipeline="miniworld"))
    ok = "a ball on the left of a star, on the sand"
    long = "a ball on the left of a star and a box under the star and a tent, at night"
    assert prompt_problems(pipe, [ok, "two balls, in the snow"]) == []
    (msg,) = prompt_problems(pipe, [long])
    assert "window of 16 tokens" in msg and "'and a tent , at night' is cut off" in msg  # BOS + 14 words + EOS
