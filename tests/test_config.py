"""Config loader: defaults, YAML that lists only differences, strict keys and types."""
import pytest

from compseed_lib.chain import check_inputs
from compseed_lib.config import ConfigError, RunConfig, config_from_dict, load_config, validate
from compseed_lib.sources import ModelLoadError


def test_shipped_configs_load_and_pass_checks(monkeypatch):
    """Offline configs pass every check; real-tier ones pass the value checks and, with no key and no hub
    here, stop before any work with a message naming what is missing."""
    from pathlib import Path

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    for path in sorted(Path(__file__).resolve().parents[1].glob("configs/*.yaml")):
        cfg = load_config(path)
        assert cfg.name == path.stem
        validate(cfg)
        if cfg.model.pipeline in ("miniworld", "miniworld-pixart", "tiny-sd", "tiny-pixart"):
            check_inputs(cfg)
        else:
            with pytest.raises((ValueError, RuntimeError), match=f"{cfg.model.pipeline}|OPENAI_API_KEY"):
                check_inputs(cfg)


def test_overrides_and_types(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("generate:\n  steps: 3\n  guidance: 2\n")
    cfg = load_config(path, ["generate.seeds=[4, 5]", "judge.concurrency=2"])
    assert (cfg.generate.steps, cfg.generate.guidance, cfg.generate.seeds) == (3, 2.0, [4, 5])
    assert cfg.judge.concurrency == 2 and cfg.model == RunConfig().model
    assert isinstance(cfg.generate.guidance, float)


@pytest.mark.parametrize("data, message", [
    ({"generate": {"stpes": 3}}, r"unknown config key 'generate.stpes'.*'steps'"),
    ({"generat": {}}, r"unknown config key 'generat'"),
    ({"generate": {"steps": "ten"}}, r"'generate.steps': expected int"),
    ({"generate": {"steps": True}}, r"'generate.steps': expected int"),
    ({"generate": {"seeds": 5}}, r"'generate.seeds': expected a list"),
    ({"model": "tiny-sd"}, r"'model': expected a section"),
])
def test_bad_configs_name_the_key(data, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(data)


@pytest.mark.parametrize("override, message", [
    ("generate.seeds=[1, 1]", r"generate.seeds \[1\]: each seed once"),
    ("generate.seeds=[18446744073709551616]", r"\[0, 2\*\*63\)"),
    ("generate.seeds=[-1]", r"\[0, 2\*\*63\)"),
    ("generate.seeds=[]", "non-empty list"),
    ("generate.height=30", "multiples of 4"),
    ("model.dtype=float8", "model.dtype 'float8'"),
    ("judge.name=gpt-5-imaginary", "gpt-5-imaginary"),
    ("prompts.world=nowhere", "unknown prompt world 'nowhere'"),
    ("prompts.counts=[2, 11]", r"prompts.counts \[2, 11\]: counts the prompt template can write: 1..10"),
    ("prompts.counts=[0]", "prompts.counts"),
    ("prompts.kinds=[]", "prompts.kinds"),
    ("prompts.limit=0", "prompts.limit"),
    ("name=../escape", "name '../escape'"),
    ("model.pipeline=./no/such/folder", "no such folder"),
    ("prompts.world=comp90", "knows only the mini-world objects"),
])
def test_check_inputs_fails_early(override, message):
    with pytest.raises((ValueError, ModelLoadError), match=message):
        check_inputs(config_from_dict({}, [override]))


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("generate: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
