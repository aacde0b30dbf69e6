"""Pipelines and generation on real diffusers classes with tiny configs (32 px, 2 steps, one CPU thread):
loading, seed noise, batch independence, resume, corrupt files, settings guard, kill -9, PixArt."""
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from compseed_lib import generate as G
from compseed_lib import prompts
from compseed_lib.config import GenerateConfig, ModelConfig
from compseed_lib.pipelines import latent_shape, load_pipeline
from compseed_lib.sources import ModelLoadError
from compseed_lib.store import Run, sha256_file
from compseed_lib.testing import registered_folder

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]
PROMPTS = prompts.load("miniworld", "train", limit=2)  # 2 counting + 2 spatial prompts
CFG = GenerateConfig(steps=2, guidance=5.0, height=32, width=32, batch_size=4)


@pytest.fixture(scope="module")
def sd(cache):
    return load_pipeline(ModelConfig(pipeline="tiny-sd"))


def _pixels(run: Run, df) -> dict:
    return {(r.prompt_id, r.seed): np.asarray(Image.open(run.root / r.path), dtype=np.int16)
            for r in df.itertuples()}


def test_tiny_sd_builds_once_and_loads_through_from_pretrained(cache, sd):
    pipe, info = sd
    folder = cache / "pipelines" / "tiny-sd"
    assert (folder / "model_index.json").is_file() and not list(folder.parent.glob(".*tmp"))
    assert type(pipe).__name__ == info["pipeline_class"] == "StableDiffusionPipeline"
    assert info["sampler"] == "DDIMScheduler" and info["model"] == "tiny-sd" and info["revision"] is None
    assert (info["device"], info["dtype"], info["generator_device"], info["latent_shape"]) == \
        ("cpu", "float32", "cpu", (4, 8, 8))
    stamp = (folder / "model_index.json").stat().st_mtime_ns
    assert registered_folder("tiny-sd") == folder  # built once: the second call reuses the folder
    assert (folder / "model_index.json").stat().st_mtime_ns == stamp
    # the offline byte-level CLIP tokenizer takes any text, with no unknown tokens
    tok = pipe.tokenizer
    ids = tok("Zwölf Äpfel, 12 🐈!", padding="max_length", max_length=tok.model_max_length).input_ids
    assert len(ids) == 77 and tok.decode(ids, skip_special_tokens=True).replace(" ", "") == "zwölfäpfel,12🐈!"
    # the same folder given as a local path loads the same way
    local, local_info = load_pipeline(ModelConfig(pipeline=str(folder)))
    assert local_info["model"] == str(folder) and type(local.unet) is type(pipe.unet)
    assert torch.equal(local.unet.conv_in.weight, pipe.unet.conv_in.weight)


def test_unknown_models_and_settings_give_clear_errors(cache, tmp_path):
    for name, msg in ((str(tmp_path / "no-such-model"), "no such folder; use a registered name .*tiny-sd"),
                      ("no-such-name", "unknown name; use a registered name .*tiny-sd"),
                      ("no-such-org/no-such-model", "not in the local hub cache and the hub could not be reached")):
        with pytest.raises(ModelLoadError, match=msg) as e:
            load_pipeline(ModelConfig(pipeline=name))
        assert repr(name) in str(e.value)
    for kw, msg in ((dict(device="tpu9"), "unknown device 'tpu9'"), (dict(dtype="float8"), "unknown dtype"),
                    (dict(generator_device="cuda"), "CUDA is not available|needs the pipeline on cuda")):
        if torch.cuda.is_available() and "generator_device" in kw:
            continue
        with pytest.raises(ModelLoadError, match=msg):
            load_pipeline(ModelConfig(pipeline="tiny-sd", **kw))


def test_latent_shape_checks_size(sd):
    pipe, _ = sd
    assert latent_shape(pipe, 32, 48) == (4, 8, 12)
    with pytest.raises(ValueError, match="30x32 must be positive multiples of 4"):
        latent_shape(pipe, 30, 32)


def test_seed_noise_is_per_seed_whatever_the_batch():
    shape = (4, 8, 8)
    batch = G.seed_noise([5, 0, 7, 123456789], shape)
    assert batch.shape == (4, *shape) and batch.dtype == torch.float32
    for i, s in enumerate([5, 0, 7, 123456789]):
        alone = G.seed_noise([s], shape)[0]
        assert torch.equal(batch[i], alone)
        assert torch.equal(alone, torch.randn(shape, generator=torch.Generator().manual_seed(s)))
    assert torch.equal(G.seed_noise([7, 5], shape), batch[[2, 0]])
    assert not torch.equal(batch[0], batch[1])
    assert G.seed_noise([5], shape, dtype=torch.float16).dtype == torch.float16


def test_make_jobs_order_and_validation():
    jobs = G.make_jobs(PROMPTS[:2], [3, 1])
    assert [(j.prompt.id, j.seed) for j in jobs] == [(PROMPTS[0].id, 3), (PROMPTS[0].id, 1),
                                                     (PROMPTS[1].id, 3), (PROMPTS[1].id, 1)]
    for seeds, msg in (([1, 1], "each seed once"), ([-1], "64-bit seeds"), ([True], "64-bit seeds"),
                       ([1.5], "64-bit seeds"), ([2**63], "64-bit seeds")):
        with pytest.raises(ValueError, match=msg):
            G.make_jobs(PROMPTS, seeds)
    with pytest.raises(ValueError, match="duplicate prompt ids"):
        G.make_jobs([PROMPTS[0], PROMPTS[0]], [0])


def test_image_does_not_depend_on_batch_size_or_order(sd, tmp_path):
    pipe, info = sd
    run = Run(tmp_path / "run")
    jobs = G.make_jobs(PROMPTS[:2], [0, 1])  # 4 jobs, two prompts mixed in one batch
    shuffled = jobs[:]
    random.Random(3).shuffle(shuffled)
    assert shuffled != jobs
    a = _pixels(run, G.generate(run, "b4", pipe, info, jobs, CFG, progress=False))
    one = GenerateConfig(**{**vars(CFG), "batch_size": 1})
    b = _pixels(run, G.generate(run, "b1", pipe, info, jobs, one, progress=False))
    c = _pixels(run, G.generate(run, "shuf", pipe, info, shuffled, CFG, progress=False))
    assert a.keys() == b.keys() == c.keys() and len(a) == 4
    # The noise a seed gets is bit-identical in every batch (test above). The decoded images are not
    # always bit-identical: CPU conv/matmul kernels pick blocking by batch size, so float sums differ in
    # the last bits (measured: at most 2.4e-6 on 0..1 pixels), and that flips the uint8 rounding of about
    # 1 value in 10,000 by one level. So the tightest bound that holds is 1/255 per value, on a tiny
    # fraction of values; anything larger would mean a seed's noise depended on its batch.
    for other in (b, c):
        diffs = np.stack([np.abs(a[k] - other[k]) for k in a])
        assert diffs.max() <= 1 and (diffs > 0).mean() < 1e-3


def test_resume_skips_done_work_and_regenerates_corrupt_files(sd, tmp_path, caplog):
    pipe, info = sd
    run = Run(tmp_path / "run")
    jobs = G.make_jobs(PROMPTS[:3], [0, 1])
    first = G.generate(run, "base", pipe, info, jobs, CFG, progress=False)
    assert len(first) == 6 and set(first["steps"]) == {2} and set(first["sampler"]) == {"DDIMScheduler"}
    assert all(sha256_file(run.root / r.path) == r.sha256 for r in first.itertuples())
    assert all(r.path == f"images/base/{r.prompt_id}_s{r.seed:06d}.png" for r in first.itertuples())
    assert Image.open(run.root / first.path[0]).size == (32, 32)
    mtimes = {p: p.stat().st_mtime_ns for p in (run.root / "images" / "base").iterdir()}
    # a second call makes nothing and leaves rows (timestamps included) and files alone
    again = G.generate(run, "base", pipe, info, jobs, CFG, progress=False)
    assert again.equals(first) and {p: p.stat().st_mtime_ns for p in mtimes} == mtimes
    # a corrupted PNG is regenerated (same pixels: CPU generation is deterministic) and its row fixed
    victim = run.root / first.path[2]
    victim.write_bytes(b"not a png at all")
    run.ledger.add_images([{**first.iloc[3].to_dict(), "sha256": "0" * 64}])  # a row that lies
    stale = victim.with_name(f".{victim.name}.k1ll3d.tmp")  # what a kill inside atomic_write leaves
    other = victim.with_name(".n0000000000_s000000.png.busy.tmp")  # not this call's job: left alone
    stale.write_bytes(b"half")
    other.write_bytes(b"half")
    caplog.clear()
    fixed = G.generate(run, "base", pipe, info, jobs, CFG, progress=False)
    assert not stale.exists() and other.exists()
    other.unlink()
    assert sum("regenerating" in r.getMessage() for r in caplog.records) == 2
    assert fixed.drop(columns="created").equals(first.drop(columns="created"))
    assert sha256_file(victim) == first.sha256[2]
    # shards partition the jobs; together they equal the unsharded stage
    for k in (1, 0):
        G.generate(run, "sharded", pipe, info, jobs, CFG, progress=False, shard=(k, 2))
    sharded = run.ledger.images("sharded")
    assert sharded[["prompt_id", "seed", "sha256"]].equals(first[["prompt_id", "seed", "sha256"]])
    assert G.generate_distributed(run, "sharded", pipe, info, jobs, CFG, progress=False).equals(sharded)


def test_stage_with_other_settings_is_refused(sd, tmp_path):
    pipe, info = sd
    run = Run(tmp_path / "run")
    jobs = G.make_jobs(PROMPTS[:1], [0])
    G.generate(run, "base", pipe, info, jobs, CFG, progress=False)
    for change, asked in (({"steps": 3}, "steps=3"), ({"guidance": 1.0}, "guidance=1.0"),
                          ({"width": 64}, "width=64")):
        with pytest.raises(ValueError, match=rf"stage 'base' in .*run was generated with .*; "
                                             rf"you asked for {asked}: write to a new stage "
                                             rf"\(compseed run <config> --stage NAME\)"):
            G.generate(run, "base", pipe, info, jobs, GenerateConfig(**{**vars(CFG), **change}))
    with pytest.raises(ValueError, match="model=tiny-sd; you asked for model=other"):
        G.generate(run, "base", pipe, {**info, "model": "other"}, jobs, CFG)
    with pytest.raises(ValueError, match="bad stage"):
        G.generate(run, "../x", pipe, info, jobs, CFG)
    assert len(run.ledger.images("base")) == 1


KILL_SCRIPT = textwrap.dedent("""
    import sys, torch
    torch.set_num_threads(1)
    from compseed_lib import generate as G, pipelines, prompts
    from compseed_lib.config import GenerateConfig, ModelConfig
    from compseed_lib.store import Run
    pipe, info = pipelines.load_pipeline(ModelConfig(pipeline="tiny-sd"))
    jobs = G.make_jobs(prompts.load("miniworld", "train", limit=3), [0, 1])
    cfg = GenerateConfig(steps=8, batch_size=1)
    G.generate(Run(sys.argv[1]), "base", pipe, info, jobs, cfg, progress=False)
""")


@pytest.mark.slow
def test_kill_9_mid_stage_then_resume_gives_every_image_once(sd, cache, tmp_path):
    pipe, info = sd
    jobs = G.make_jobs(prompts.load("miniworld", "train", limit=3), [0, 1])
    assert len(jobs) == 12
    stage_dir = tmp_path / "run" / "images" / "base"
    env = {**os.environ, "COMPSEED_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(tmp_path / "run")], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while len(list(stage_dir.glob("*.png"))) < 2:
        assert proc.poll() is None, f"ended before it could be killed: {proc.stderr.read()[-2000:]}"
        assert time.monotonic() < deadline, "no images after 60 s"
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL and len(list(stage_dir.glob("*.png"))) < 12
    # restart and finish
    cfg = GenerateConfig(steps=8, batch_size=1)
    run = Run(tmp_path / "run")
    df = G.generate(run, "base", pipe, info, jobs, cfg, progress=False)
    files = sorted(p.name for p in stage_dir.iterdir())
    assert len(df) == len(jobs) and files == sorted(Path(r.path).name for r in df.itertuples())
    assert len(files) == len(jobs) and not [f for f in files if f.endswith(".tmp") or f.startswith(".")]
    assert set(zip(df.prompt_id, df.seed, strict=True)) == {(j.prompt.id, j.seed) for j in jobs}
    assert all(sha256_file(run.root / r.path) == r.sha256 for r in df.itertuples())
    # and the killed-then-resumed stage equals one made in a single pass
    clean = G.generate(run, "clean", pipe, info, jobs, cfg, progress=False)
    assert list(clean.sha256) == list(df.sha256)


def test_tiny_pixart_generates_offline(cache, tmp_path):
    """tiny-pixart: PixArtAlphaPipeline with a T5 encoder and an offline character-level T5Tokenizer."""
    pipe, info = load_pipeline(ModelConfig(pipeline="tiny-pixart"))
    assert (info["pipeline_class"], type(pipe.tokenizer).__name__) == ("PixArtAlphaPipeline", "T5Tokenizer")
    assert info["call_kwargs"]["use_resolution_binning"] is False
    run = Run(tmp_path / "run")
    cfg = GenerateConfig(steps=2, guidance=4.5, height=32, width=48, batch_size=2)
    df = G.generate(run, "pixart", pipe, info, G.make_jobs(PROMPTS[:1], [0, 1]), cfg, progress=False)
    assert len(df) == 2 and set(df["sampler"]) == {"DPMSolverMultistepScheduler"}
    images = [Image.open(run.root / p) for p in df.path]
    assert all(im.size == (48, 32) and im.mode == "RGB" for im in images)
    assert not np.array_equal(np.asarray(images[0]), np.asarray(images[1]))  # seeds matter


def test_loader_rewords_broken_files_but_not_out_of_memory(tmp_path, monkeypatch):
    """A damaged pipeline folder gets a message naming it; an error that is not about files (out of
    memory) keeps its own type instead of being dressed up as a loading problem."""
    import shutil

    import torch

    from compseed_lib import pipelines
    from compseed_lib.config import ModelConfig

    folder = tmp_path / "pipe"
    shutil.copytree(registered_folder("tiny-sd"), folder)
    (folder / "unet" / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match=r"folder pipeline '.*pipe' does not load"):
        load_pipeline(ModelConfig(pipeline=str(folder)))

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(pipelines, "from_pretrained", oom)
    with pytest.raises(torch.OutOfMemoryError):
        load_pipeline(ModelConfig(pipeline="tiny-sd"))


DISTRIBUTED_SCRIPT = """
import sys
import torch
from compseed_lib import generate as G, prompts
from compseed_lib.config import GenerateConfig, ModelConfig
from compseed_lib.pipelines import load_pipeline
from compseed_lib.store import Run
torch.set_num_threads(1)
pipe, info = load_pipeline(ModelConfig(pipeline="tiny-sd"))
jobs = G.make_jobs(prompts.load("miniworld", "train", limit=2), [0, 1, 2])
G.generate_distributed(Run(sys.argv[1]), "dist", pipe, info, jobs,
                       GenerateConfig(steps=2, guidance=5.0, batch_size=4), progress=False)
"""


def test_generate_distributed_under_accelerate_launch_with_two_processes(sd, cache, tmp_path):
    """Two CPU processes under `accelerate launch` share one run directory: every image once, each the
    same as a single process makes it."""
    script = tmp_path / "gen.py"
    script.write_text(DISTRIBUTED_SCRIPT)
    env = {**os.environ, "COMPSEED_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2",
                          "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                          str(script), str(tmp_path / "run")], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    run = Run(tmp_path / "run")
    dist = run.ledger.images("dist")
    jobs = G.make_jobs(prompts.load("miniworld", "train", limit=2), [0, 1, 2])
    assert len(dist) == len(jobs) == 12 and not dist.duplicated(["prompt_id", "seed"]).any()
    assert not list((run.root / "ledger-parts").glob("*.sqlite"))  # each shard's part merged, then removed
    pipe, info = sd
    single = G.generate(run, "single", pipe, info, jobs, GenerateConfig(steps=2, guidance=5.0, batch_size=4),
                        progress=False)
    keys = ["prompt_id", "seed", "prompt", "kind", "category", "target", "model", "steps", "height"]
    assert dist[keys].equals(single[keys])  # the merged ledger is the one-process ledger, key by key
    a, b = _pixels(run, dist), _pixels(run, single)
    assert a.keys() == b.keys() and all(np.abs(a[k] - b[k]).max() <= 1 for k in a)  # float kernels: <= 1/255


def test_shard_parts_merge_by_key_and_resume(sd, tmp_path):
    """A shard writes its own ledger part; the next launch merges what a killed one left, makes the rest."""
    pipe, info = sd
    run = Run(tmp_path / "run")
    jobs = G.make_jobs(PROMPTS[:2], [0, 1, 2])
    part = run.part_ledger(1, 2)
    made = G.generate(run, "s", pipe, info, jobs, CFG, progress=False, shard=(1, 2), ledger=part)
    assert len(made) == 3 and run.ledger.images("s").empty  # rows in the part only
    again = G.generate(run, "s", pipe, info, jobs, CFG, progress=False, shard=(1, 2), ledger=part)
    assert again.drop(columns="created").equals(made.drop(columns="created"))  # resumed: nothing new
    merged = G.generate_distributed(run, "s", pipe, info, jobs, CFG, progress=False)
    assert len(merged) == 6 and not list((run.root / "ledger-parts").glob("*.sqlite"))
    assert merged.set_index(["prompt_id", "seed"]).loc[list(zip(made.prompt_id, made.seed)), "sha256"].tolist() \
        == made.sha256.tolist()
