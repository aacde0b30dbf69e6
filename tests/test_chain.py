"""The notebook chain end to end through the CLI and papermill on the smoke config: what the terminal
shows, one config in force, refusals before any write, one-line failures, notebooks opened from notebooks/."""
import json
import os
import shutil
import time
from pathlib import Path

import pandas as pd
import papermill as pm
import pytest
from conftest import FAKE_KEY
from conftest import cli as _cli

from compseed_lib.chain import CHAIN, check_inputs, notebook_of
from compseed_lib.config import config_from_dict
from compseed_lib.store import Run, atomic_write_bytes, sha256_file

REPO = Path(__file__).resolve().parents[1]
SPURIOUS = ("WARNING papermill", "Unable to parse", "Passed unknown parameter", "IPKernelApp", "torchvision",
            "KeyboardInterrupt", "Traceback")


@pytest.fixture(scope="module")
def chain_run(smoke_chain):
    return smoke_chain


def test_the_judge_key_appears_in_no_notebook_report_table_ledger_or_log(chain_run):
    root, _, report, stderr = chain_run
    assert (report / "02_judge.ipynb").is_file() and (root / "runs" / "smoke" / "ledger.sqlite").is_file()
    files = [p for p in root.rglob("*") if p.is_file()]
    assert len(files) > 50
    leaked = [str(p.relative_to(root)) for p in files if FAKE_KEY.encode() in p.read_bytes()]
    assert not leaked and FAKE_KEY not in stderr
    assert "COMPSEED_FAKE_KEY" in (root / "runs" / "smoke" / "config.yaml").read_text()  # the variable's name only


def test_chain_executes_every_notebook_and_fills_the_run(chain_run):
    root, _, report, _ = chain_run
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
    assert len(images) == n_prompts * len(cfg.generate.seeds) == 10 * 2  # 5 + 5 prompts x 2 seeds
    for row in images.itertuples():
        assert sha256_file(run.root / row.path) == row.sha256
    judged = run.ledger.judgements("base")
    assert len(judged) == len(images) and set(judged["judge_model"]) == {"miniworld-exact"}
    for table in ("seed_accuracy", "top_seeds", "reliability_split_half"):
        assert (run.root / "tables" / f"{table}.csv").is_file(), table
    figures = sorted(p.name for p in (report / "figures").glob("*.png"))
    assert any(f.startswith("01_base_grid") for f in figures) and any("seed_accuracy" in f for f in figures)
    # 08 shows the run's arms beside the paper's gain, with the direction each went
    nb = json.loads((report / "08_paper_figures.ipynb").read_text())
    shown = json.dumps([o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])])
    assert (run.root / "tables" / "evaluation.csv").is_file()
    assert "paper (q/k, SD 2.1)" in shown and "counting: direction" in shown


def test_terminal_shows_live_progress_and_log_lines_at_their_level(chain_run):
    *_, stderr = chain_run
    lines = stderr.replace("\r", "\n").splitlines()
    assert any(line.startswith("generate base:") and "20/20" in line for line in lines), stderr
    assert any(line.startswith("judge base:") and "20/20" in line for line in lines), stderr
    assert any(" INFO compseed_lib.generate: stage base: generated 20" in line for line in lines), stderr
    assert any(" INFO compseed_lib.judge.stage: judge base: 20 answered, 0 unknown" in line and "0 failed" in line
               for line in lines), stderr
    for noise in SPURIOUS:
        assert noise not in stderr, (noise, stderr)


# ~20 s: two notebooks through papermill, each starting a kernel that imports torch and diffusers.
def test_rerun_reproduces_without_new_rows(chain_run):
    root, sets, _, _ = chain_run
    run = Run.open(root / "runs" / "smoke")
    before_images, before_judged = run.ledger.images(), run.ledger.judgements()
    res = _cli("run", "configs/smoke.yaml", *sets, "--reports", str(root / "reports2"),
               "--only", "01_generate,02_judge")
    assert res.returncode == 0, res.stderr
    after_images, after_judged = run.ledger.images(), run.ledger.judgements()
    pd.testing.assert_frame_equal(before_images, after_images)
    pd.testing.assert_frame_equal(before_judged.drop(columns="created"), after_judged.drop(columns="created"))


# ~25 s: a refused run, then two notebooks that generate a new stage through papermill.
def test_change_that_alters_finished_images_is_refused_before_anything_is_written(chain_run):
    root, sets, _, _ = chain_run
    recorded = (root / "runs" / "smoke" / "config.yaml").read_bytes()
    res = _cli("run", "configs/smoke.yaml", *sets, "--set", "generate.steps=3", "--only", "02_judge",
               "--reports", str(root / "refused"))
    assert res.returncode == 1
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("compseed: error:") and "stage 'base' holds 20 images" in last
    assert "steps 2 -> 3" in last and "--stage NAME" in last and "--set name=smoke-2" in last
    assert (root / "runs" / "smoke" / "config.yaml").read_bytes() == recorded
    assert not (root / "refused").exists()
    # the CLI option the message names works: the new settings go to a new stage, the old one is kept
    res = _cli("run", "configs/smoke.yaml", *sets, "--set", "generate.steps=3", "--stage", "steps3",
               "--only", "00_prompts,01_generate", "--reports", str(root / "steps3"))
    assert res.returncode == 0, res.stderr
    run = Run.open(root / "runs" / "smoke")
    assert set(run.ledger.images("steps3")["steps"]) == {3} and set(run.ledger.images("base")["steps"]) == {2}
    assert run.config().generate.steps == 3  # recorded once the run accepted it


def test_finetune_command_reuses_finished_arms_and_names_bad_ones(chain_run):
    root, sets, _, _ = chain_run
    res = _cli("finetune", "configs/smoke.yaml", *sets, "--arm", "qk", "--arm", "lora")
    assert res.returncode == 0 and "qk: " in res.stdout and "lora: " in res.stdout, res.stderr
    assert "already at" in res.stderr
    res = _cli("finetune", "configs/smoke.yaml", *sets, "--arm", "base")
    assert res.returncode == 2 and res.stderr.strip().endswith("choose from ['lora', 'qk', 'qk_ceiling', "
                                                               "'qk_random_seeds', 'qk_unrectified']")


def test_a_fine_tune_trained_again_drops_the_evaluation_images_of_the_one_before(smoke_copy):
    """Other settings train an arm again into the same folder; the images its evaluation stage holds came from
    the fine-tune before, so they go (07_evaluate makes them again), and no other arm's images change."""
    runs, sets = smoke_copy
    run = Run.open(runs / "smoke")
    before, lora = run.ledger.images("eval_qk"), run.ledger.images("eval_lora")
    assert len(before) and len(lora)
    again = [*sets, "--set", "finetune.lr=0.00123", "--arm", "qk"]
    res = _cli("finetune", "configs/smoke.yaml", *again)
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"dropped {len(before)} images of stage eval_qk" in res.stderr
    assert run.ledger.images("eval_qk").empty and run.ledger.judgements("eval_qk").empty
    assert not (run.root / "images" / "eval_qk").exists()
    assert run.ledger.images("eval_lora").equals(lora)
    res = _cli("finetune", "configs/smoke.yaml", *again)  # the same settings again: kept, nothing dropped
    assert res.returncode == 0 and "already at" in res.stderr and "dropped" not in res.stderr, res.stderr[-2000:]


# ~15 s: a judge server and the 02_judge notebook through papermill.
def test_every_stage_runs_under_the_config_given_now(chain_run):
    """`--only 02_judge --set judge...` reaches the judge notebook (it used to read the old config): a live
    server asked for a model it does not serve fails inside 02_judge, naming that model."""
    from compseed_lib.judge.registry import start_local_server

    root, sets, _, _ = chain_run
    with start_local_server() as live:
        res = _cli("run", "configs/smoke.yaml", *sets, "--only", "02_judge", "--set", "judge.model=other-judge",
                   "--set", f"judge.base_url={live}", "--reports", str(root / "judge_url"), timeout=300)
    assert res.returncode == 1
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("compseed: error: 02_judge failed: JudgeUnavailable") and "other-judge" in last, res.stderr
    assert "Traceback" not in res.stderr
    assert (root / "judge_url" / "smoke" / "02_judge.ipynb").is_file()  # the executed notebook is kept
    assert Run.open(root / "runs" / "smoke").config().judge.model == "other-judge"


def test_a_judge_url_on_a_closed_port_is_refused_before_any_notebook(chain_run):
    root, sets, _, _ = chain_run
    recorded = (root / "runs" / "smoke" / "config.yaml").read_bytes()
    closed = "http://127.0.0.1:9/v1"
    t0 = time.monotonic()
    res = _cli("run", "configs/smoke.yaml", *sets, "--only", "02_judge", "--set", f"judge.base_url={closed}",
               "--reports", str(root / "closed"), timeout=120)
    assert res.returncode == 1 and time.monotonic() - t0 < 60
    assert f"judge server at {closed} is not reachable" in res.stderr.strip().splitlines()[-1]
    assert not (root / "closed").exists() and (root / "runs" / "smoke" / "config.yaml").read_bytes() == recorded


# ~35 s: three notebook runs through papermill (the failure, then the advised regeneration and judging).
def test_damaged_image_ends_in_one_line_and_the_advice_works(chain_run):
    root, sets, _, _ = chain_run
    run = Run.open(root / "runs" / "smoke")
    row = run.ledger.images("base").iloc[3]
    path = run.root / row["path"]
    good = path.read_bytes()
    atomic_write_bytes(path, good[: len(good) // 2])
    res = _cli("run", "configs/smoke.yaml", *sets, "--only", "02_judge", "--reports", str(root / "damaged"))
    assert res.returncode == 1
    last = res.stderr.strip().splitlines()[-1]
    assert "02_judge failed: CorruptImageError" in last and path.name in last and "compseed run <config>" in last
    assert "Traceback" not in res.stderr
    res = _cli("run", "configs/smoke.yaml", *sets, "--only", "01_generate,02_judge", "--reports", str(root / "fixed"))
    assert res.returncode == 0, res.stderr
    assert sha256_file(path) == run.ledger.images("base").iloc[3]["sha256"]


def _notebook(path: Path, code: str) -> None:
    nb = {"cells": [{"cell_type": "code", "execution_count": None, "id": "p", "metadata": {"tags": ["parameters"]},
                     "outputs": [], "source": 'run_dir = "runs/x"\nstage = "base"'},
                    {"cell_type": "code", "execution_count": None, "id": "c", "metadata": {}, "outputs": [],
                     "source": code}],
          "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
          "nbformat": 4, "nbformat_minor": 5}
    path.write_text(json.dumps(nb))


def test_a_finished_notebook_leaves_no_process_behind(chain_run, tmp_path):
    """A notebook's kernel is killed with its process group once its last cell has run (chain._execute):
    a process a cell started and left running ends with it."""
    from compseed_lib.interrupt import alive

    root, sets, _, _ = chain_run
    books = tmp_path / "notebooks"
    books.mkdir()
    for name in {notebook_of(step) for step in CHAIN}:
        shutil.copy(REPO / "notebooks" / f"{name}.ipynb", books)
    pid_file = tmp_path / "child.pid"
    _notebook(books / "01_generate.ipynb", "import subprocess, sys\n"
              "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'])\n"
              f"open({str(pid_file)!r}, 'w').write(str(child.pid))")
    res = _cli("run", "configs/smoke.yaml", *sets, "--only", "01_generate", "--reports", str(tmp_path / "r"),
               env={"COMPSEED_NOTEBOOKS": str(books)}, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    child = int(pid_file.read_text())
    deadline = time.time() + 10
    while alive(child) and time.time() < deadline:
        time.sleep(0.1)
    assert not alive(child)


def test_dead_kernel_ends_in_one_line(chain_run, tmp_path):
    root, sets, _, _ = chain_run
    books = tmp_path / "notebooks"
    books.mkdir()
    for name in {notebook_of(step) for step in CHAIN}:
        shutil.copy(REPO / "notebooks" / f"{name}.ipynb", books)
    _notebook(books / "01_generate.ipynb", "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")
    res = _cli("run", "configs/smoke.yaml", *sets, "--only", "01_generate", "--reports", str(tmp_path / "r"),
               env={"COMPSEED_NOTEBOOKS": str(books)}, timeout=300)
    assert res.returncode == 1
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("compseed: error: 01_generate failed: the notebook's kernel died"), res.stderr
    assert "out of memory" in last and (tmp_path / "r" / "smoke" / "01_generate.ipynb").is_file()
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize("args, message", [
    (["--set", "generate.stpes=3"], "unknown config key 'generate.stpes'"),
    (["--set", "generate.seeds=[18446744073709551616]"], "[0, 2**63)"),
    (["--set", "prompts.counts=[2, 12]"], "prompts.counts [2, 12]"),
    (["--set", "prompts.world=comp90"], "knows only the mini-world objects"),
    (["--set", "prompts.world=EMPTY"], "has no spatial prompts"),
    (["--set", "model.pipeline=./nowhere/model"], "no such folder"),
    (["--set", "model.pipeline=BROKEN"], "lacks the component folder(s) ['unet']"),
    (["--set", "judge.name=gpt-4o"], "OPENAI_API_KEY"),
    (["--only", "03_mine_seeds"], "run 02_judge first"),
    (["--stage", "../up"], "bad stage '../up'"),
])
def test_bad_input_leaves_no_run_and_no_report(tmp_path, args, message):
    empty = tmp_path / "world"
    empty.mkdir()
    for f in (REPO / "prompt_dataset" / "miniworld").glob("*.txt"):
        shutil.copy(f, empty)
    (empty / "spatial_prompts_train.txt").write_text("# nothing yet\n")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline",
                                                         "unet": ["diffusers", "UNet2DConditionModel"]}))
    args = [a.replace("EMPTY", str(empty)).replace("BROKEN", str(broken)) for a in args]
    res = _cli("run", "configs/smoke.yaml", "--set", f"runs_dir={tmp_path / 'runs'}", *args,
               "--reports", str(tmp_path / "reports"), env={"OPENAI_API_KEY": ""}, timeout=120)
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert lines[-1].startswith("compseed: error:") and message in lines[-1], res.stderr
    assert "Traceback" not in res.stderr and sum("error" in line.lower() for line in lines) == 1, res.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "reports").exists()


def test_verbose_flag_adds_the_traceback(tmp_path):
    res = _cli("-v", "run", "configs/smoke.yaml", "--set", f"runs_dir={tmp_path}", "--set", "prompts.counts=[2, 12]")
    assert res.returncode == 1 and "Traceback" in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith("compseed: error: prompts.counts [2, 12]")


def test_counts_outside_the_generators_training_warn(caplog):
    check_inputs(config_from_dict({"model": {"pipeline": "miniworld"}, "prompts": {"counts": [2, 8]}}))
    assert any("[8] lie outside what miniworld was trained on (1 to 6)" in r.getMessage() for r in caplog.records)


def test_notebook_opened_from_notebooks_folder_runs_with_its_defaults(tmp_path):
    """JupyterLab starts a kernel in notebooks/: default paths must resolve against the project root."""
    proj = tmp_path / "project"
    shutil.copytree(REPO / "configs", proj / "configs")
    shutil.copytree(REPO / "notebooks", proj / "notebooks")
    env_root = os.environ.pop("COMPSEED_ROOT", None)
    try:
        pm.execute_notebook(str(proj / "notebooks" / "00_prompts.ipynb"), str(tmp_path / "out.ipynb"),
                            cwd=str(proj / "notebooks"), kernel_name="python3", progress_bar=False)
    finally:
        if env_root is not None:
            os.environ["COMPSEED_ROOT"] = env_root
    assert (proj / "runs" / "mini" / "config.yaml").is_file()
    assert (proj / "runs" / "mini" / "tables" / "prompts.csv").is_file()
    assert not (proj / "notebooks" / "runs").exists()


def test_the_run_leaves_an_html_report_with_key_numbers_links_and_thumbnails(chain_run):
    *_, report, _ = chain_run
    index = (report / "index.html").read_text()
    for name in CHAIN:
        assert (report / f"{name}.html").is_file() and f"href='{name}.html'" in index
    assert "seed reliability (all)" in index and "layout: same seed r" in index and "qk: count" in index
    thumbs = sorted((report / "thumbs").glob("*.png"))
    assert thumbs and all(f"thumbs/{t.name}" in index for t in thumbs)
    paper = sorted((report / "figures" / "paper").glob("*.png"))  # notebook 08's figures, each with its pdf
    assert paper and all(f"href='figures/paper/{p.name}'" in index and f"figures/paper/{p.stem}.pdf" in index
                         for p in paper)
    for name in CHAIN:  # each stage page is titled by its notebook, not "Notebook"
        assert f"<title>{name}</title>" in (report / f"{name}.html").read_text()
    from PIL import Image

    assert all(max(Image.open(t).size) <= 240 for t in thumbs)
