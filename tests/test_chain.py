"""The notebook chain end to end through papermill, on the smoke config, and the CLI's errors."""
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from compseed_lib.chain import CHAIN, run_chain
from compseed_lib.store import Run, sha256_file

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def chain_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("chain")
    overrides = [f"runs_dir={root / 'runs'}", "name=smoke"]
    report = run_chain(REPO / "configs" / "smoke.yaml", overrides=overrides, report_root=root / "reports")
    return root, overrides, report


def test_chain_executes_every_notebook_and_fills_the_run(chain_run):
    root, _, report = chain_run
    for name in CHAIN:
        nb = json.loads((report / f"{name}.ipynb").read_text())
        errors = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])
                  if o.get("output_type") == "error"]
        assert not errors, (name, errors)
        injected = [c for c in nb["cells"] if "injected-parameters" in c.get("metadata", {}).get("tags", [])]
        assert injected, f"{name}: papermill did not inject parameters"
    run = Run.open(root / "runs" / "smoke")
    images = run.ledger.images("base")
    cfg = run.config()
    n_prompts = len(pd.read_csv(run.root / "tables" / "prompts.csv"))
    assert len(images) == n_prompts * len(cfg.generate.seeds) == 6 * 2
    for row in images.itertuples():
        assert sha256_file(run.root / row.path) == row.sha256
    judged = run.ledger.judgements("base")
    assert len(judged) == len(images) and set(judged["judge_model"]) == {"miniworld-exact"}
    for table in ("seed_accuracy", "top_seeds", "reliability_split_half"):
        assert (run.root / "tables" / f"{table}.csv").is_file(), table
    figures = sorted(p.name for p in (report / "figures").glob("*.png"))
    assert any(f.startswith("01_base_grid") for f in figures) and any("seed_accuracy" in f for f in figures)


def test_rerun_reproduces_without_new_rows(chain_run):
    root, overrides, _ = chain_run
    run = Run.open(root / "runs" / "smoke")
    before_images, before_judged = run.ledger.images(), run.ledger.judgements()
    run_chain(REPO / "configs" / "smoke.yaml", overrides=overrides, report_root=root / "reports2",
              notebooks=["01_generate", "02_judge"])
    after_images, after_judged = run.ledger.images(), run.ledger.judgements()
    pd.testing.assert_frame_equal(before_images, after_images)
    pd.testing.assert_frame_equal(before_judged.drop(columns="created"), after_judged.drop(columns="created"))


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "compseed_lib.cli", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=120)


def test_cli_bad_inputs_give_one_clear_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("generate:\n  stpes: 3\n")
    for args, message in (((str(bad),), "unknown config key 'generate.stpes'"),
                          (("configs/nope.yaml",), "config file not found"),
                          (("configs/smoke.yaml", "--set", "model.pipeline=no/such-model",
                            "--set", f"runs_dir={tmp_path}"), "no/such-model")):
        res = _cli("run", *args)
        assert res.returncode != 0
        assert message in res.stderr, res.stderr
        assert "Traceback" not in res.stderr, res.stderr
