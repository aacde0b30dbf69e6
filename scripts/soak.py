"""Kill -9 soak: kill a small run at random moments across generation, judging, dataset building and
fine-tuning, restart it each time, and compare the end result with an uninterrupted run.

    python scripts/soak.py --kills 24 --out reports/soak/soak.json

The worker (`--worker DIR`) runs the stages in order on the tiny random SD and the exact judge: generate
(6 prompts x 4 seeds), judge, build the self-generated dataset from fixed top seeds (generated, judged, the
opposite relation asked, rectified, exported), fine-tune q/k on it (checkpoints every 2 steps), each stage
resumable as in `compseed run`. It writes the stage it is in to DIR/phase, so every kill is attributed.
The soak kills it at random moments until a life finishes on its own, compares, and starts another
round until `--kills` kills are placed; each round is compared with a clean run and must show:
0 images lost, 0 ledger rows duplicated or missing, every image byte-identical, the dataset's metadata
identical, the fine-tune's weights within 1e-5 (CPU kernels may sum in another order after a restart).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PHASES = ("generate", "judge", "dataset", "finetune", "done")


def worker(root: Path) -> None:
    """The run being killed: every stage resumable, in order."""
    import pandas as pd
    import torch

    torch.set_num_threads(1)
    from compseed_lib import dataset as D
    from compseed_lib import finetune as F
    from compseed_lib import generate as G
    from compseed_lib import pipelines
    from compseed_lib import prompts as P
    from compseed_lib.config import FinetuneConfig, load_config
    from compseed_lib.judge import judge_stage
    from compseed_lib.store import Run, atomic_write_text

    def phase(name: str) -> None:
        atomic_write_text(root / "phase", name)

    cfg = load_config(REPO / "configs" / "smoke.yaml", ["generate.batch_size=2", "generate.seeds=[0, 1, 2, 3]"])
    ps = P.load("miniworld", "train", kinds=("count",), limit=3) + \
        P.load("miniworld", "train", kinds=("spatial",), limit=3)
    run = Run(root / "run")
    pipe, info = pipelines.load_pipeline(cfg.model)
    phase("generate")
    G.generate(run, "base", pipe, info, G.make_jobs(ps, cfg.generate.seeds), cfg.generate, progress=False)
    phase("judge")
    judge_stage(run, "base", ps, cfg.judge, progress=False)
    phase("dataset")
    top = pd.DataFrame([dict(category=c, seed=s, rank=r) for c in sorted({p.category for p in ps})
                        for r, s in enumerate((7, 3), start=1)])
    table = D.build_dataset(run, pipe, info, ps, D.dataset_jobs(ps, top), cfg, progress=False)
    D.export_imagefolder(run, table, run.root / "dataset")
    phase("finetune")
    F.train("tiny-sd", run.root / "dataset", FinetuneConfig(method="qk", steps=40, batch=4, lr=1e-2, warmup=1,
                                                            checkpoint_every=2),
            run.root / "finetune" / "work", run.root / "finetune" / "out", "cpu", False)
    phase("done")


def _phase(root: Path) -> str:
    try:
        return (root / "phase").read_text().strip() or "start"
    except FileNotFoundError:
        return "start"


def _spawn(root: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, __file__, "--worker", str(root)], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _finish(root: Path) -> None:
    proc = _spawn(root)
    _, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"worker in {root} failed:\n{err.decode(errors='replace')[-3000:]}")


def _compare(killed: Path, clean: Path) -> dict:
    """What differs between the killed-and-restarted run and the uninterrupted one."""
    from safetensors.torch import load_file

    from compseed_lib.store import Run

    def rows(root: Path, sql: str) -> list:
        return [tuple(r) for r in Run(root / "run").ledger.query(sql).values.tolist()]

    out = {}
    img_sql = "SELECT stage, prompt_id, seed, sha256 FROM images"
    a, b = rows(killed, img_sql), rows(clean, img_sql)
    out["images"] = len(b)
    out["images_lost"] = len(set(b) - set(a))
    out["images_different_or_extra"] = len(set(a) - set(b))
    out["image_rows_duplicated"] = len(a) - len(set((s, p, k) for s, p, k, _ in a))
    files_ok = all((killed / "run" / Path(r[0])).is_file() for r in Run(killed / "run").ledger.query(
        "SELECT path FROM images").values.tolist())
    out["image_files_present"] = bool(files_ok)
    j_sql = "SELECT stage, prompt_id, seed, question, image_sha256, parsed_answer FROM judgements"
    a, b = rows(killed, j_sql), rows(clean, j_sql)
    out["judgements"] = len(b)
    out["judgements_lost"] = len(set(b) - set(a))
    out["judgements_different_or_extra"] = len(set(a) - set(b))
    meta = "run/dataset/train/metadata.jsonl"
    out["dataset_metadata_identical"] = (killed / meta).read_bytes() == (clean / meta).read_bytes()
    x = load_file(str(killed / "run" / "finetune" / "out" / "delta.safetensors"))
    y = load_file(str(clean / "run" / "finetune" / "out" / "delta.safetensors"))
    out["finetune_max_abs_difference"] = max(float((x[k] - y[k]).abs().max()) for k in y) if x.keys() == y.keys() \
        else float("inf")
    leftovers = [str(p.relative_to(killed)) for p in (killed / "run").rglob("*")
                 if p.name.endswith(".tmp") or p.name.startswith(".tmp")]
    out["temp_files_left"] = len(leftovers)
    return out


def _wait_for_work(root: Path, proc: subprocess.Popen, since: float, timeout: float = 120.0) -> None:
    """Until this life of the worker has loaded everything and entered a stage (or ended)."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            if (root / "phase").stat().st_mtime >= since:
                return
        except FileNotFoundError:
            pass
        time.sleep(0.01)


def _progress(root: Path) -> tuple:
    """How far a run has got: image files, judgement rows, fine-tune checkpoint."""
    run = root / "run"
    n_img = len(list((run / "images").rglob("*.png"))) if (run / "images").is_dir() else 0
    n_judged = 0
    if (run / "ledger.sqlite").is_file():
        from compseed_lib.store import Run

        n_judged = int(Run(run).ledger.query("SELECT COUNT(*) AS n FROM judgements")["n"].iloc[0])
    cks = sorted((run / "finetune" / "work" / "checkpoints").glob("step_*"))
    return n_img, n_judged, cks[-1].name if cks else "", (run / "dataset").is_dir()


def soak(kills: int, work: Path, seed: int, max_wait: float) -> dict:
    """Rounds of: kill the worker at random moments (each life: once it has entered a stage, after
    uniform(0, w) s) until a life finishes on its own, then compare with a clean run; until `kills`
    kills are placed. w starts at `max_wait` and grows by half after a life that made no progress (a
    stage whose start-up outlasts w, such as the judge server's, would otherwise never be passed)."""
    import shutil

    rng = random.Random(seed)
    shutil.rmtree(work, ignore_errors=True)
    clean = work / "clean"
    clean.mkdir(parents=True)
    _finish(clean)
    by_phase: dict[str, int] = {}
    rounds, t0, done = [], time.time(), 0
    while done < kills:
        killed = work / f"killed_{len(rounds)}"
        killed.mkdir(parents=True)
        in_round, wait = 0, max_wait
        while True:
            since, before = time.time(), _progress(killed)
            proc = _spawn(killed)
            _wait_for_work(killed, proc, since)
            time.sleep(rng.uniform(0.0, wait))
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace")
                proc.stderr.close()
                if proc.returncode != 0:
                    raise SystemExit(f"worker failed:\n{err[-3000:]}")
                break  # this life finished the run
            where = _phase(killed)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            proc.stderr.close()
            done, in_round = done + 1, in_round + 1
            wait = max_wait if _progress(killed) != before else wait * 1.5
            by_phase[where] = by_phase.get(where, 0) + 1
            print(f"kill {done} (round {len(rounds)}) during {where}", flush=True)
        rounds.append({"kills": in_round, **_compare(killed, clean)})
        print(json.dumps(rounds[-1]), flush=True)
    ok = all(r["images_lost"] == 0 and r["images_different_or_extra"] == 0 and r["image_rows_duplicated"] == 0
             and r["judgements_lost"] == 0 and r["judgements_different_or_extra"] == 0
             and r["dataset_metadata_identical"] and r["finetune_max_abs_difference"] <= 1e-5
             and r["temp_files_left"] == 0 and r["image_files_present"] for r in rounds)
    return {"ok": ok, "kills": done, "kills_by_phase": by_phase, "rounds": rounds, "seed": seed,
            "max_wait_seconds": max_wait, "seconds": round(time.time() - t0, 1),
            "images_per_run": rounds[0]["images"], "judgements_per_run": rounds[0]["judgements"],
            "finetune_max_abs_difference": max(r["finetune_max_abs_difference"] for r in rounds)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--kills", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-wait", type=float, default=2.0, help="a kill lands up to this many seconds after a life "
                                                                 "has entered a stage")
    ap.add_argument("--work", default="runs/_soak")
    ap.add_argument("--out", default="reports/soak/soak.json")
    args = ap.parse_args(argv)
    if args.worker:
        worker(Path(args.worker))
        return 0
    result = soak(args.kills, Path(args.work), args.seed, args.max_wait)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
