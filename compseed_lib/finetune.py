"""Which weights a fine-tune trains: the paper's q/k selection, patterns, transformer blocks, LoRA targets.

The paper fine-tunes only the query and key projections of the self- and cross-attention layers of the
UNet blocks down_blocks.1-2, mid_block and up_blocks.1-2 ("d1d2mu1u2": 46.78M parameters on Stable
Diffusion 2.1). Other selections are module-name patterns; for a transformer denoiser (PixArt-style)
the selection is by block index. LoRA (peft) adapts the same modules instead of training them.

Inputs: a denoiser (`UNet2DConditionModel` or `PixArtTransformer2DModel`), a selection name, regex
patterns, or block indices.
Outputs: the selected parameter names; `freeze_except` leaves only them trainable and returns the count;
`lora_targets` gives peft's `target_modules` for the same projections.

Usage:
    n = freeze_except(unet, "d1d2mu1u2")          # 46,776,320 on SD 2.1's UNet
    names = selected(transformer, blocks=[0, 1, 2])
    LoraConfig(r=8, target_modules=lora_targets(unet, "d1d2mu1u2"))
"""
from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .config import GRID_WEIGHTS, QK_WEIGHTS, SELECTIONS
from .sources import DELTA_FILE, FINETUNE_FILE, TEXT_ENCODER_PREFIX  # the saved format is the loader's

log = logging.getLogger(__name__)
def _patterns(selection: str | Sequence[str]) -> list[str]:
    if isinstance(selection, str):
        if selection not in SELECTIONS:
            raise ValueError(f"unknown selection {selection!r}: use one of {sorted(SELECTIONS)} or a list of "
                             f"regex patterns over parameter names")
        return SELECTIONS[selection]
    if not selection:
        raise ValueError("an empty list of patterns selects nothing")
    for p in selection:
        try:
            re.compile(p)
        except re.error as e:
            raise ValueError(f"bad selection pattern {p!r}: {e}") from None
    return list(selection)


def selected(model: torch.nn.Module, selection: str | Sequence[str] = "d1d2mu1u2",
             blocks: Sequence[int] | None = None) -> list[str]:
    """Names of the parameters a selection picks; `blocks` (transformer models) picks q/k of those blocks."""
    names = [n for n, _ in model.named_parameters()]
    if blocks is not None:
        n_blocks = len(getattr(model, "transformer_blocks", []))
        if not n_blocks:
            raise ValueError(f"{type(model).__name__} has no transformer_blocks: select by pattern instead")
        bad = [b for b in blocks if not 0 <= b < n_blocks]
        if bad:
            raise ValueError(f"blocks {bad} out of range: the model has {n_blocks} transformer blocks")
        wanted = [rf"^transformer_blocks\.{b}\.{QK_WEIGHTS}" for b in blocks]
    else:
        wanted = _patterns(selection)
    regs = [re.compile(p) for p in wanted]
    picked = [n for n in names if any(r.search(n) for r in regs)]
    if not picked:
        raise ValueError(f"selection {selection if blocks is None else blocks!r} matches no parameter of "
                         f"{type(model).__name__} (e.g. {names[:3]})")
    return picked


def freeze_except(model: torch.nn.Module, selection: str | Sequence[str] = "d1d2mu1u2",
                  blocks: Sequence[int] | None = None) -> int:
    """Freeze everything but the selected parameters; returns (and logs) the trainable parameter count."""
    keep = set(selected(model, selection, blocks))
    model.requires_grad_(False)
    n = 0
    for name, p in model.named_parameters():
        if name in keep:
            p.requires_grad_(True)
            n += p.numel()
    log.info("trainable: %d tensors, %.2fM parameters of %.2fM", len(keep), n / 1e6,
             sum(p.numel() for p in model.parameters()) / 1e6)
    return n


def lora_targets(model: torch.nn.Module, selection: str | Sequence[str] = "d1d2mu1u2",
                 blocks: Sequence[int] | None = None) -> list[str]:
    """peft `target_modules`: the full names of the selected projection modules (their '.weight' dropped)."""
    return [n.removesuffix(".weight") for n in selected(model, selection, blocks)]


QKVO_WEIGHTS = r"attn[12]\.(to_[qkv]\.weight|to_out\.0\.(weight|bias))$"


def widened(cfg, weights: str):
    """`cfg` (a FinetuneConfig) with another choice of what trains (`finetune.grid.weights`): 'qk' as
    configured; 'qkvo' q, k, v and the output projection of the same blocks; 'attention' every weight of
    every attention layer; 'all' every weight of the denoiser. The paper trains q/k of d1d2mu1u2."""
    import dataclasses

    if weights not in GRID_WEIGHTS:
        raise ValueError(f"unknown weights {weights!r}: use one of {list(GRID_WEIGHTS)}")
    if weights == "qk":
        return cfg
    if weights == "qkvo":
        if cfg.blocks is not None:
            pats = [rf"^transformer_blocks\.{b}\.{QKVO_WEIGHTS}" for b in cfg.blocks]
        else:
            pats = [p.replace(QK_WEIGHTS, QKVO_WEIGHTS) for p in (cfg.patterns or SELECTIONS[cfg.selection])]
    else:
        pats = [r"attn[12]\."] if weights == "attention" else [r".*"]
    return dataclasses.replace(cfg, patterns=pats, blocks=None)


def selection_of(cfg) -> str | list:
    """What a fine-tune config trains, as its record keeps it: the patterns, the blocks or the selection name."""
    return cfg.patterns or (list(cfg.blocks) if cfg.blocks is not None else cfg.selection)


# ---------------------------------------------------------------------------- training
ADAPTER_FILE = FINETUNE_FILE  # marks a fine-tune folder: base model + changed weights (pipelines loads it)


def dataset_fingerprint(dataset_dir: str | Path) -> str | None:
    """Which images with which captions an imagefolder holds: sha256 (16 hex digits) of its
    train/metadata.jsonl; None when it has none."""
    import hashlib

    meta_file = Path(dataset_dir) / "train" / "metadata.jsonl"
    return hashlib.sha256(meta_file.read_bytes()).hexdigest()[:16] if meta_file.is_file() else None


def _encode_dataset(pipe, dataset_dir: str | Path, work: Path, device) -> tuple[torch.Tensor, list[str]]:
    """(latents * scaling_factor, captions) of an imagefolder, encoded once and cached by its metadata."""
    from datasets import load_dataset
    from safetensors import safe_open
    from safetensors.torch import save_file

    meta_file = Path(dataset_dir) / "train" / "metadata.jsonl"
    if not meta_file.is_file():
        raise FileNotFoundError(f"no dataset at {dataset_dir}: {meta_file} is missing (build it first: notebook 05)")
    if not meta_file.read_text().strip():
        raise ValueError(f"dataset {dataset_dir} is empty: every caption was dropped (see its table in tables/, "
                         "notebook 05): nothing to fine-tune on; mine more seeds (mining.top_n) or more prompts")
    key = dataset_fingerprint(dataset_dir)
    cache = work / "latents.safetensors"
    ds = load_dataset("imagefolder", data_dir=str(dataset_dir), split="train")
    captions = list(ds["text"])
    if cache.is_file() and (safe_open(str(cache), "pt").metadata() or {}).get("dataset") == key:
        from safetensors.torch import load_file

        return load_file(str(cache))["latents"], captions
    vae = pipe.vae
    parts = []
    with torch.no_grad():
        for i in range(0, len(ds), 64):
            imgs = ds[i:i + 64]["image"]
            x = torch.stack([torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32)) for im in imgs])
            x = (x.permute(0, 3, 1, 2) / 127.5 - 1).to(device, vae.dtype)  # (B, 3, H, W) in [-1, 1]
            parts.append(vae.encode(x).latent_dist.mean.float().cpu() * vae.config.scaling_factor)
    latents = torch.cat(parts)
    work.mkdir(parents=True, exist_ok=True)
    save_file({"latents": latents.contiguous()}, str(cache), metadata={"dataset": key})
    return latents, captions


def _text_states(pipe, captions: list[str], device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Frozen text states (and PixArt's padding mask, else None) of every caption, the empty caption last
    (for caption dropout)."""
    from .pipelines import encode_text

    states, mask = encode_text(pipe, captions + [""], device)
    return states.float().cpu(), (None if mask is None else mask.cpu())


def train(model: str, dataset_dir: str | Path, cfg, work_dir: str | Path, out_dir: str | Path,
          device: str = "auto", progress: bool = True) -> Path:
    """Fine-tune `model`'s selected weights (q/k or LoRA, `cfg`: a FinetuneConfig) on an imagefolder;
    resumable; writes `out_dir` (base model name + the changed weights, EMA) and returns it."""
    from diffusers import DDPMScheduler

    from .config import ModelConfig, check_finetune
    from .pipelines import denoise, denoiser, load_pipeline, text_ids
    from .training import LoopConfig, Trainer

    # 1. Check inputs, load the base model and encode the data once
    check_finetune(cfg)
    work = Path(work_dir)
    pipe, info = load_pipeline(ModelConfig(pipeline=str(model), device=device, dtype="float32"))
    dev = torch.device(info["device"])
    latents, captions = _encode_dataset(pipe, dataset_dir, work, dev)
    states, masks = _text_states(pipe, captions, dev)  # row -1: the empty caption
    net = denoiser(pipe)
    sched = DDPMScheduler.from_config(pipe.scheduler.config)
    # 2. What trains: the selected q/k weights, or a LoRA on the same modules
    sel = cfg.patterns or cfg.selection
    names = selected(net, sel, cfg.blocks)
    if cfg.method == "qk":
        n_train = freeze_except(net, sel, cfg.blocks)
        module = net
    else:
        from peft import LoraConfig, get_peft_model

        net.requires_grad_(False)
        torch.manual_seed(cfg.seed)  # peft draws the adapters' first weights from torch's global generator
        module = get_peft_model(net, LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_rank,
                                                target_modules=lora_targets(net, sel, cfg.blocks)))
        n_train = sum(p.numel() for p in module.parameters() if p.requires_grad)
        log.info("LoRA rank %d on %d projections: %.2fM trainable parameters", cfg.lora_rank, len(names),
                 n_train / 1e6)
    params = [p for p in module.parameters() if p.requires_grad]
    modules = {"denoiser": module}
    te_names, ids = [], None
    if cfg.text_encoder:  # the text encoder's selected weights train too: captions are encoded at each step
        te = pipe.text_encoder
        try:
            te_names = selected(te, cfg.text_encoder)
        except ValueError as e:
            raise ValueError(f"finetune.text_encoder: {e}") from None
        log.info("the text encoder trains too")
        freeze_except(te, cfg.text_encoder)
        modules["text_encoder"] = te
        params += [p for p in te.parameters() if p.requires_grad]
        ids = text_ids(pipe, captions + [""], dev)[0]  # the empty caption last, as in `states`
    loop = Trainer(modules, ema=list(modules), params=params, work_dir=work, device=dev,
                   cfg=LoopConfig(steps=cfg.steps, lr=cfg.lr, warmup=cfg.warmup, ema_decay=cfg.ema_decay,
                                  seed=cfg.seed, grad_accum=cfg.grad_accum, mixed_precision=cfg.mixed_precision,
                                  checkpoint_every=cfg.checkpoint_every, log_every=max(1, cfg.steps // 20)))
    loop.resume()

    # 3. The loss of one batch: the denoiser's own objective (epsilon or v) on the cached latents
    def loss_fn(step: int, g: torch.Generator, m: dict) -> tuple[torch.Tensor, dict]:
        idx = torch.randint(len(latents), (cfg.batch,), generator=g)
        z0 = latents[idx].to(dev)
        idx[torch.rand(cfg.batch, generator=g) < cfg.cond_drop] = len(states) - 1  # the empty caption
        mask = None if masks is None else masks[idx].to(dev)
        if ids is None:
            cond = states[idx].to(dev)
        else:
            cond = m["text_encoder"](ids[idx], attention_mask=mask)[0]  # PixArt's padding mask, else None
        noise = torch.randn(z0.shape, generator=g).to(dev)
        t = torch.randint(0, sched.config.num_train_timesteps, (cfg.batch,), generator=g).to(dev)
        zt = sched.add_noise(z0, noise, t)
        target = sched.get_velocity(z0, noise, t) if sched.config.prediction_type == "v_prediction" else noise
        pred = denoise(m["denoiser"], zt, t, cond, mask)
        loss = torch.nn.functional.mse_loss(pred.float(), target.float())
        return loss, {"loss": loss.item()}

    # 4. Train (on CPU with the kit's share of the cores, as generation), then keep the EMA weights
    from .runtime import torch_threads

    with torch_threads(None, info["device"]):
        history = loop.run(loss_fn, desc=f"finetune {cfg.method}", progress=progress)
    loop.use_ema()
    if cfg.method == "lora":
        net = module.merge_and_unload()  # LoRA folded into the projections: the same delta format as q/k
    # 5. Save the changed weights beside the base model's name
    net_params = dict(net.named_parameters())
    tensors = {k: net_params[k] for k in names}
    if te_names:
        te_params = dict(pipe.text_encoder.named_parameters())
        tensors.update({f"{TEXT_ENCODER_PREFIX}{k}": te_params[k] for k in te_names})
    return save_delta(tensors, out_dir, base=str(model),
                      record={**settings_record(cfg), "dataset": dataset_fingerprint(dataset_dir),
                              "trainable_parameters": sum(p.numel() for p in params),
                              "changed_parameters": sum(t.numel() for t in tensors.values()), "steps": loop.step,
                              "images": len(captions), "history": history})


def settings_record(cfg) -> dict:
    """What decides a fine-tune's result, as its record keeps it (a finished fine-tune whose record differs
    from the wanted settings is trained again)."""
    return {"method": cfg.method, "lr": cfg.lr, "batch": cfg.batch, "warmup": cfg.warmup,
            "ema_decay": cfg.ema_decay, "seed": cfg.seed, "wanted_steps": cfg.steps,
            "text_encoder": cfg.text_encoder, "selection": selection_of(cfg)}


def finished_with(out_dir: str | Path, cfg, dataset_dir: str | Path | None = None) -> bool:
    """True when `out_dir` holds a finished fine-tune made with `cfg`'s settings (and, given `dataset_dir`, on
    that dataset as it is now; a record from before datasets were recorded is taken as made on it)."""
    import json

    path = Path(out_dir) / ADAPTER_FILE
    if not path.is_file():
        return False
    record = json.loads(path.read_text())
    if dataset_dir is not None and record.get("dataset") not in (None, dataset_fingerprint(dataset_dir)):
        return False
    if "wanted_steps" not in record:  # recorded before the settings were: method and steps are all it says
        return record.get("method") == cfg.method and record.get("steps") == cfg.steps
    return all(record.get(k) == v for k, v in settings_record(cfg).items())


def keep_or_clear(out_dir: str | Path, cfg, dataset_dir: str | Path) -> bool:
    """True when `out_dir` holds a finished fine-tune of `cfg`'s settings on `dataset_dir` as it is now: keep it.
    False: it must be trained; a finished one made otherwise (other settings, another dataset) is removed
    first with its work folder (`out_dir`'s parent), so training starts afresh instead of resuming another
    fine-tune's checkpoints. An unfinished one is left to resume."""
    import shutil

    out_dir = Path(out_dir)
    if finished_with(out_dir, cfg, dataset_dir):
        return True
    if (out_dir / ADAPTER_FILE).is_file():
        log.info("the fine-tune at %s was made with other settings or on another dataset: training it again", out_dir)
        shutil.rmtree(out_dir.parent)
    return False


def trained(run, model: str, dataset_dir: str | Path, cfg, out_dir: str | Path, stage: str | Sequence[str],
            device: str = "auto", progress: bool = True) -> Path:
    """The fine-tune at `out_dir` of `cfg`'s settings on `dataset_dir`: kept when it is finished so, else
    trained (an unfinished one resumes). When it is trained, the images of `stage` (one or several) in `run` are
    dropped: any there were made by the fine-tune that folder held before (a stage knows its model by the
    folder's path)."""
    if keep_or_clear(out_dir, cfg, dataset_dir):
        log.info("fine-tune already at %s", out_dir)
        return Path(out_dir)
    for st in [stage] if isinstance(stage, str) else stage:
        dropped = run.drop_stage(st)
        if dropped:
            log.info("dropped %d images of stage %s: they were made by the fine-tune trained before", dropped, st)
    return train(model, dataset_dir, cfg, Path(out_dir).parent / "work", out_dir, device=device, progress=progress)


def save_delta(tensors: dict[str, torch.Tensor], out_dir: str | Path, base: str, record: dict) -> Path:
    """Write `out_dir`: the changed tensors by parameter name (safetensors; the text encoder's under
    TEXT_ENCODER_PREFIX) and `compseed_finetune.json` naming the base model; atomically (a temp folder renamed
    into place)."""
    import json
    import shutil

    from safetensors.torch import save_file

    out = Path(out_dir)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / DELTA_FILE))
    (tmp / ADAPTER_FILE).write_text(json.dumps({"base": base, **record}, indent=1, default=str))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


