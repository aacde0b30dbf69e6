"""The notebooks outside the chain, executed through papermill: the teaching lesson and the seed browser."""
import json
from pathlib import Path

import papermill as pm

REPO = Path(__file__).resolve().parents[1]


def _errors(path: Path) -> list:
    nb = json.loads(path.read_text())
    return [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])
            if o.get("output_type") == "error"]


def test_the_teaching_notebook_runs_live_on_the_mini_world(tmp_path):
    out = tmp_path / "lesson.ipynb"
    pm.execute_notebook(str(REPO / "notebooks" / "teaching_seeds.ipynb"), str(out), cwd=str(REPO),
                        parameters={"n_seeds": 4, "steps": 4}, progress_bar=False)
    assert not _errors(out)
    nb = json.loads(out.read_text())
    images = [o for c in nb["cells"] for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) >= 3  # noise, layout grid, per-seed accuracy
    assert any("best seeds" in "".join(o.get("text", "")) for c in nb["cells"] for o in c.get("outputs", []))


def test_the_seed_browser_notebook_opens_a_run(tmp_path):
    out = tmp_path / "browser.ipynb"
    pm.execute_notebook(str(REPO / "notebooks" / "seed_browser.ipynb"), str(out), cwd=str(REPO),
                        parameters={"runs_root": str(tmp_path / "no-runs-yet"), "run": None}, progress_bar=False)
    assert not _errors(out)
    nb = json.loads(out.read_text())
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {})
               for c in nb["cells"] for o in c.get("outputs", []))


def test_setup_under_compseed_run_imports_no_model_library_and_still_quiets_them(tmp_path):
    """A notebook that loads no model must not pay for torch: `setup()` applies its library settings (progress
    bars off, the torchvision notice filtered) when transformers and diffusers are first imported."""
    import os
    import subprocess
    import sys

    code = """
import sys
from compseed_lib.notebook import DropNotices, setup
setup()
heavy = {"torch", "diffusers", "transformers"} & set(sys.modules)
assert not heavy, heavy
import diffusers.utils.logging as dlog
import transformers.utils.logging as tlog
assert not dlog._tqdm_active and not tlog.is_progress_bar_enabled()
assert any(isinstance(f, DropNotices) for h in tlog.get_logger().handlers for f in h.filters)
print("ok")
"""
    env = {**os.environ, "COMPSEED_EVENTS": str(tmp_path / "events.jsonl")}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-2000:]
