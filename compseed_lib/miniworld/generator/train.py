"""Train a mini-world generator from scratch.

`compseed train-miniworld configs/train/miniworld_stage4.yaml` runs the shipped SD-shaped model's four
training runs in order (each config's init_from_config names the one before; a run whose output exists
is not repeated); configs/train/miniworld.yaml alone is stage 1.
`compseed train-miniworld configs/train/miniworld_pixart.yaml` trains the PixArt-alpha-shaped one: the
architecture is the config's `spec.architecture`, the trainer is this one.

The steps of one run, each resumable (finished work is found on disk and skipped):
  1. render `n_scenes` training scenes (data.py) into work_dir/scenes/
  2. train the AutoencoderKL on them -> work_dir/vae/ (save_pretrained)
  3. encode every scene once -> work_dir/latents.safetensors, and set the VAE's scaling_factor
     (a run continued from `init_from` keeps that model's VAE and scaling_factor)
  4. train the denoiser (UNet or PixArt transformer) + text encoder on the latents (v-prediction on a
     zero-terminal-SNR schedule, 10% caption dropout for classifier-free guidance, EMA) in the kit's shared loop
     (`compseed_lib.training.Trainer`): checkpoint every `checkpoint_every` steps to
     work_dir/checkpoints/step_NNNNNNN/ (safetensors only), resume from the latest;
     with `caption_loss` > 0 a training-only probe (CaptionProbe) must also read the caption's
     structure (relation, kinds, count, background) off the text encoder's EOS state, which keeps
     words that the diffusion loss alone leaves indistinct (left/right) apart
  5. export the EMA weights as a StableDiffusionPipeline / PixArtAlphaPipeline folder -> out_dir, with
     training_record.json

A batch at step s is drawn from a generator seeded by (seed, s), so a resumed run sees the same
batches as an uninterrupted one. Same code on a laptop CPU (threads=1) and a GPU (device=cuda).
"""
from __future__ import annotations

import copy
import dataclasses
import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ...config import load_dataclass
from ...store import atomic_write_text
from ...training import (
    LoopConfig,
    Trainer,
    batch_generator,
    latest_checkpoint,
    load_optimizer,
    load_weights,
    save_optimizer,
)
from . import data
from .captions import PRESETS, CaptionProfile, apply_profile, caption_statistics
from .model import (
    MiniModelSpec,
    assemble_pipeline,
    build_denoiser,
    build_schedulers,
    build_text_encoder,
    build_tokenizer,
    build_vae,
    count_parameters,
)

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    out_dir: str = "models/miniworld"  # the shipped pipeline folder
    work_dir: str = "runs/_train_miniworld"  # scenes, latents, checkpoints
    tiny: bool = False  # MiniModelSpec.tiny(): for tests
    spec: dict = field(default_factory=dict)  # overrides of MiniModelSpec fields
    seed: int = 0
    device: str = "auto"
    threads: int = 1  # keep torch threads <= free cores: a contended thread slows everything
    n_scenes: int = 200_000
    vae_steps: int = 3000
    vae_batch: int = 64
    vae_lr: float = 1e-3
    kl_weight: float = 1e-6
    steps: int = 20_000
    batch: int = 64
    lr: float = 3e-4
    warmup: int = 500
    ema_decay: float = 0.999
    cond_drop: float = 0.1  # captions replaced by "" so classifier-free guidance works
    caption_loss: float = 0.0  # weight of the CaptionProbe cross-entropy added to the diffusion loss
    probe_scale: float = 0.0  # 0: linear probe heads; > 0: cosine heads with this fixed logit scale
    spatial_weight: float = 1.0  # sampling weight of spatial scenes relative to counting scenes
    captions: str | CaptionProfile = "exact"  # what each scene's caption says: a preset of captions.PRESETS
    #                                           ("exact", "web") or the probabilities (captions.CaptionProfile)
    unnamed_background: str = "default"  # data.UNNAMED: what a spatial caption naming no background shows
    init_from: str | None = None  # a pipeline folder (e.g. models/miniworld) to continue from: its VAE is
    #                               kept as is, its UNet and text encoder start the UNet stage
    vae_from: str | None = None  # a pipeline folder whose trained VAE (and latent scale) this run uses as is
    init_from_config: str | None = None  # the training config that writes init_from: run first when
    #                                      init_from is missing, so the last stage's config runs them all
    weight_decay: float = 0.01  # AdamW, UNet stage
    grad_clip: float = 1.0  # max gradient norm, UNet stage
    encode_batch: int = 256  # scenes per VAE call when encoding latents
    checkpoint_every: int = 500  # UNet steps; the VAE saves every 4x as many of its steps
    keep_checkpoints: int = 2
    log_every: int = 50

    def caption_profile(self) -> CaptionProfile:
        if isinstance(self.captions, CaptionProfile):
            return self.captions.check()
        if self.captions not in PRESETS:
            raise ValueError(f"captions must be one of {sorted(PRESETS)} or a section of "
                             f"CaptionProfile fields, got {self.captions!r}")
        return PRESETS[self.captions]

    def loop(self) -> LoopConfig:
        """The shared training loop's settings for the UNet stage."""
        return LoopConfig(steps=self.steps, lr=self.lr, warmup=self.warmup, weight_decay=self.weight_decay,
                          grad_clip=self.grad_clip, ema_decay=self.ema_decay, seed=self.seed,
                          checkpoint_every=self.checkpoint_every, keep_checkpoints=self.keep_checkpoints,
                          log_every=self.log_every)


class CaptionProbe(torch.nn.Module):
    """Heads from the text encoder's pooled (EOS) state to the caption labels (data.LABEL_FIELDS).

    Training only: it is not part of the exported pipeline. Its loss is the mean cross-entropy.
    With `scale` = 0 the heads are linear, and a tiny separation satisfies them (measured: "left" vs
    "right" stayed ~1 apart in states of norm ~12 and the UNet did not learn them, while "above" vs
    "below", ~4 apart, was learned). With `scale` > 0 they are cosine classifiers with that fixed
    logit scale: a label can only be read with confidence if it owns a real share of the state's
    direction, so every label field, the relation included, is kept well apart.
    """

    def __init__(self, dim: int, sizes: tuple[int, ...] = data.LABEL_SIZES, scale: float = 0.0):
        super().__init__()
        self.scale = scale
        self.heads = torch.nn.ModuleList(torch.nn.Linear(dim, n, bias=not scale) for n in sizes)

    def logits(self, pooled: torch.Tensor) -> list[torch.Tensor]:
        if not self.scale:
            return [h(pooled) for h in self.heads]
        x = F.normalize(pooled, dim=-1)
        return [self.scale * x @ F.normalize(h.weight, dim=-1).T for h in self.heads]

    def forward(self, pooled: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return sum(F.cross_entropy(z, labels[:, i]) for i, z in enumerate(self.logits(pooled))) / len(self.heads)


def _device(name: str) -> torch.device:
    return torch.device("cuda" if name == "auto" and torch.cuda.is_available() else
                        "cpu" if name == "auto" else name)


def _spec(cfg: TrainConfig) -> MiniModelSpec:
    arch = cfg.spec.get("architecture", "unet")
    base = MiniModelSpec.tiny(arch) if cfg.tiny else MiniModelSpec(architecture=arch)
    unknown = set(cfg.spec) - set(asdict(base))
    if unknown:
        raise ValueError(f"unknown model spec key(s) {sorted(unknown)}: valid are {sorted(asdict(base))}")
    return MiniModelSpec(**{**asdict(base), **cfg.spec}).check()


def _to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1)  # (B, 3, H, W) in [-1, 1]


# ---------------------------------------------------------------------------- stage 2: VAE
def train_vae(cfg: TrainConfig, spec: MiniModelSpec, images: np.ndarray, dev: torch.device):
    """Train the AutoencoderKL (L1 + MSE + small KL) up to `vae_steps`, resuming from work_dir/vae."""
    from diffusers import AutoencoderKL

    folder = Path(cfg.work_dir) / "vae"
    state_path = folder / "train_state.json"
    done = json.loads(state_path.read_text())["step"] if state_path.is_file() else 0
    if (folder / "config.json").is_file() and not state_path.is_file():
        done = cfg.vae_steps  # a VAE saved without a training state is taken as finished
    if (folder / "config.json").is_file() and done >= cfg.vae_steps:
        return AutoencoderKL.from_pretrained(folder).to(dev)
    torch.manual_seed(cfg.seed)
    vae = (AutoencoderKL.from_pretrained(folder) if done else build_vae(spec)).to(dev)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr)
    if (folder / "optimizer.safetensors").is_file():
        load_optimizer(opt, folder / "optimizer.safetensors")
    bar = tqdm(range(done, cfg.vae_steps), initial=done, total=cfg.vae_steps, desc="vae")
    for step in bar:
        g = batch_generator(LoopConfig(seed=cfg.seed, seed_offset=0), step)
        idx = torch.randint(len(images), (cfg.vae_batch,), generator=g).numpy()
        x = _to_tensor(images[idx]).to(dev)
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample(generator=None)).sample
        loss = F.l1_loss(rec, x) + F.mse_loss(rec, x) + cfg.kl_weight * post.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % cfg.log_every == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
        if (step + 1) % (cfg.checkpoint_every * 4) == 0 or step + 1 == cfg.vae_steps:
            vae.save_pretrained(folder)  # weights first, then the state that says how far they got
            save_optimizer(opt, folder / "optimizer.safetensors")
            atomic_write_text(state_path, json.dumps({"step": step + 1, "loss": loss.item()}))
    return vae


def _adopt_vae(cfg: TrainConfig) -> None:
    """Copy the VAE of `vae_from` (else `init_from`) into work_dir/vae, marked as trained to `vae_steps`."""
    key = "vae_from" if cfg.vae_from else "init_from"
    src = Path(getattr(cfg, key)) / "vae"
    if not (src / "config.json").is_file():
        raise FileNotFoundError(f"{key} {getattr(cfg, key)!r} has no vae/ folder with config.json")
    shutil.copytree(src, Path(cfg.work_dir) / "vae")
    atomic_write_text(Path(cfg.work_dir) / "vae" / "train_state.json", json.dumps({"step": cfg.vae_steps}))


# ---------------------------------------------------------------------------- stage 3: latents
@torch.no_grad()
def encode_latents(cfg: TrainConfig, vae, images: np.ndarray, dev: torch.device) -> torch.Tensor:
    """Posterior means of every scene, cached as safetensors; sets vae.config.scaling_factor."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    path = Path(cfg.work_dir) / "latents.safetensors"
    state = Path(cfg.work_dir) / "vae" / "train_state.json"
    meta = {"vae_step": str(json.loads(state.read_text())["step"]) if state.is_file() else "final",
            "scenes": data.scene_cache_key(Path(cfg.work_dir) / "scenes"), "n": str(len(images))}
    if path.is_file() and (safe_open(str(path), "pt").metadata() or {}) == meta:
        z = load_file(str(path))["latents"].float()
    else:  # no cache, or one encoded from other scenes or by an earlier state of the VAE
        parts = [vae.encode(_to_tensor(images[i:i + cfg.encode_batch]).to(dev)).latent_dist.mean.cpu()
                 for i in tqdm(range(0, len(images), cfg.encode_batch), desc="encode")]
        z = torch.cat(parts)
        save_file({"latents": z.half().contiguous()}, str(path), metadata=meta)
    set_latent_scale(cfg, vae, z)
    return z


def set_latent_scale(cfg: TrainConfig, vae, latents: torch.Tensor | None = None) -> None:
    """scaling_factor = 1 / std of the scenes' latents (read from the cache when not given); a run
    continued from `init_from` keeps the scale its UNet was trained at, one using `vae_from` that VAE's."""
    if cfg.init_from or cfg.vae_from:
        return
    if latents is None:
        from safetensors.torch import load_file

        latents = load_file(str(Path(cfg.work_dir) / "latents.safetensors"))["latents"].float()
    vae.register_to_config(scaling_factor=float(1.0 / latents.std()))


# ---------------------------------------------------------------------------- stage 4: UNet + text
def train_prior_stage(cfg: TrainConfig) -> None:
    """If `init_from` is not there yet, train it from `init_from_config` (and so on, back to stage 1)."""
    if not cfg.init_from or (Path(cfg.init_from) / "model_index.json").is_file():
        return
    if not cfg.init_from_config:
        raise FileNotFoundError(f"init_from {cfg.init_from!r} is not a pipeline folder, and no "
                                "init_from_config says how to train it")
    prior = load_dataclass(TrainConfig, cfg.init_from_config)
    if Path(prior.out_dir) != Path(cfg.init_from):
        raise ValueError(f"init_from_config {cfg.init_from_config!r} writes {prior.out_dir!r}, "
                         f"not init_from {cfg.init_from!r}")
    log.info("%s is missing: training it first from %s", cfg.init_from, cfg.init_from_config)
    train(prior, cfg.init_from_config)


def train(cfg: TrainConfig, config_file: str | None = None) -> Path:
    """One training run, after any earlier stage it continues from; returns the exported folder.
    `config_file` (the YAML it came from) goes into the training record, for the model card."""
    train_prior_stage(cfg)
    dev, spec, work = _device(cfg.device), _spec(cfg), Path(cfg.work_dir)
    t_start = time.time()
    # 1. scenes
    data.build_scene_cache(work / "scenes", cfg.n_scenes, spec.image_size, unnamed=cfg.unnamed_background,
                           workers=cfg.threads)  # one process per training thread
    images, scene_captions = data.load_scene_cache(work / "scenes", cfg.n_scenes)
    captions, forms = apply_profile(scene_captions, cfg.caption_profile())  # the images never change
    caption_record = {**_caption_record(cfg, scene_captions, forms), "config_file": config_file}
    # 2.-3. autoencoder and latents
    if (cfg.init_from or cfg.vae_from) and not (work / "vae" / "config.json").is_file():
        _adopt_vae(cfg)
    vae = train_vae(cfg, spec, images, dev)
    latents = encode_latents(cfg, vae, images, dev) * vae.config.scaling_factor
    # 4. UNet and text encoder
    tokenizer = build_tokenizer(spec)
    token_ids = tokenizer(captions + [""], padding="max_length", max_length=spec.max_tokens,
                          truncation=True, return_tensors="pt").input_ids
    empty_ids = token_ids[-1]
    labels = torch.from_numpy(data.caption_labels(captions))
    is_spatial = labels[:, 0] > 0
    weights = torch.where(is_spatial, cfg.spatial_weight, 1.0).double()
    if spec.architecture == "pixart" and cfg.caption_loss > 0:
        raise ValueError("caption_loss needs the text encoder's pooled state, which the pixart architecture's "
                         "T5 encoder has not: set caption_loss: 0")
    torch.manual_seed(cfg.seed)
    net = spec.denoiser
    text_encoder, unet = build_text_encoder(spec, tokenizer).to(dev), build_denoiser(spec).to(dev)
    probe = CaptionProbe(spec.text_dim, scale=cfg.probe_scale).to(dev)
    if cfg.init_from:  # warm start; a checkpoint of this run, if any, still wins below
        for module, part in ((unet, net), (text_encoder, "text_encoder")):
            load_weights(module, next((Path(cfg.init_from) / part).glob("*.safetensors")))
    noise_sched, _ = build_schedulers(spec)
    params = list(unet.parameters()) + list(text_encoder.parameters())
    if cfg.caption_loss > 0:
        params += list(probe.parameters())
    loop = Trainer({net: unet, "text_encoder": text_encoder, "caption_probe": probe},
                   ema=[net, "text_encoder"], params=params, cfg=cfg.loop(), work_dir=work,
                   device=dev)
    loop.resume()
    log.info("%s %.2fM, text encoder %.2fM parameters", net, count_parameters(unet) / 1e6,
             count_parameters(text_encoder) / 1e6)
    pad_id = tokenizer.pad_token_id

    def loss_fn(step: int, g: torch.Generator, m: dict) -> tuple[torch.Tensor, dict]:
        """v-prediction (or epsilon) loss on a batch drawn from `g`, plus the caption probe's."""
        idx = (torch.randint(len(latents), (cfg.batch,), generator=g) if cfg.spatial_weight == 1.0
               else torch.multinomial(weights, cfg.batch, replacement=True, generator=g))
        z0 = latents[idx].to(dev)
        ids, lab = token_ids[idx].clone(), labels[idx].clone()
        drop = torch.rand(cfg.batch, generator=g) < cfg.cond_drop
        ids[drop], lab[drop] = empty_ids, 0
        noise = torch.randn(z0.shape, generator=g).to(dev)
        t = torch.randint(0, noise_sched.config.num_train_timesteps, (cfg.batch,), generator=g).to(dev)
        zt = noise_sched.add_noise(z0, noise, t)
        target = noise_sched.get_velocity(z0, noise, t) if spec.prediction_type == "v_prediction" else noise
        ids = ids.to(dev)
        if net == "transformer":  # as PixArtAlphaPipeline: padding masked in the encoder and cross-attention
            mask = (ids != pad_id).long()
            hidden = m["text_encoder"](ids, attention_mask=mask)[0]
            pred = m[net](zt, encoder_hidden_states=hidden, timestep=t, encoder_attention_mask=mask,
                          added_cond_kwargs={"resolution": None, "aspect_ratio": None}, return_dict=False)[0]
        else:
            hidden, pooled = m["text_encoder"](ids)[:2]
            pred = m[net](zt, t, hidden).sample
        loss = mse = F.mse_loss(pred.float(), target.float())
        metrics = {"loss": mse.item()}
        if cfg.caption_loss > 0:
            aux = m["caption_probe"](pooled.float(), lab.to(dev))
            metrics["caption"] = aux.item()
            loss = loss + cfg.caption_loss * aux
        return loss, metrics

    history = loop.run(loss_fn, desc=net)
    # 5. export EMA weights
    loop.use_ema()
    return export(cfg, spec, text_encoder.cpu(), vae.cpu(), unet.cpu(), history,
                  time.time() - t_start, caption_record)


def _caption_record(cfg: TrainConfig, scene_captions: list[str], forms: list[str]) -> dict:
    """The profile and the caption statistics of the scenes this run trains on (for the card)."""
    return {"caption_profile": asdict(cfg.caption_profile()),
            "caption_statistics": caption_statistics(scene_captions, forms)}


def export(cfg: TrainConfig, spec: MiniModelSpec, text_encoder, vae, unet, history, seconds,
           caption_record: dict | None = None):
    """Save the pipeline (safetensors) and its training record into out_dir, atomically. The tokenizer
    is built fresh from the spec: one that has tokenized a padded batch keeps that padding in its file."""
    out = Path(cfg.out_dir)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    # fp16 on disk: half the bytes in git; loaders upcast (pipelines.from_pretrained), and a run continued
    # from it trains in float32 (load_state_dict copies into float32 weights)
    halves = [copy.deepcopy(m).half() for m in (text_encoder, vae, unet)]
    pipe = assemble_pipeline(spec, build_tokenizer(spec), *halves)
    pipe.save_pretrained(tmp, safe_serialization=True)
    record = {"config": asdict(cfg), "spec": asdict(spec), "steps": cfg.steps,
              "images_seen": cfg.steps * cfg.batch, "vae_images_seen": cfg.vae_steps * cfg.vae_batch,
              "parameters": {spec.denoiser: count_parameters(unet), "text_encoder": count_parameters(text_encoder),
                             "vae": count_parameters(vae)},
              "wall_seconds_this_session": round(seconds, 1), "torch": torch.__version__,
              "threads": cfg.threads, "device": str(_device(cfg.device)),
              **(caption_record or {}), "loss_history": history}
    prior = Path(cfg.init_from or "") / "training_record.json"
    if cfg.init_from and prior.is_file():  # a continued run: keep the lineage and the running totals
        before = json.loads(prior.read_text())
        record["init_from_record"] = before
        record["images_seen_total"] = record["images_seen"] + before.get("images_seen_total",
                                                                         before["images_seen"])
    atomic_write_text(tmp / "training_record.json", json.dumps(record, indent=1))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


def export_checkpoint(cfg: TrainConfig, checkpoint: str | Path | None = None,
                      config_file: str | None = None) -> Path:
    """Export the EMA weights of a checkpoint (default: the latest) without training further."""
    from diffusers import AutoencoderKL
    from safetensors.torch import load_file

    spec, work = _spec(cfg), Path(cfg.work_dir)
    ck = Path(checkpoint) if checkpoint else latest_checkpoint(work / "checkpoints")
    if ck is None or not (ck / "state.json").is_file():
        raise FileNotFoundError(f"no checkpoint to export in {work / 'checkpoints'}")
    tokenizer = build_tokenizer(spec)
    text_encoder, unet = build_text_encoder(spec, tokenizer), build_denoiser(spec)
    for module, name in ((unet, f"ema_{spec.denoiser}"), (text_encoder, "ema_text_encoder")):
        shadow = load_file(str(ck / f"{name}.safetensors"))
        for i, p in enumerate(module.parameters()):
            p.data.copy_(shadow[str(i)])
    vae = AutoencoderKL.from_pretrained(work / "vae")
    set_latent_scale(cfg, vae)
    state = json.loads((ck / "state.json").read_text())
    cfg = dataclasses.replace(cfg, steps=state["step"])
    scene_captions = data.load_scene_captions(work / "scenes", cfg.n_scenes)  # the images are not needed
    forms = apply_profile(scene_captions, cfg.caption_profile())[1]
    return export(cfg, spec, text_encoder, vae, unet, state["history"], 0.0,
                  {**_caption_record(cfg, scene_captions, forms), "config_file": config_file})


def main(argv: list[str] | None = None) -> int:
    """CLI: compseed train-miniworld CONFIG [--set key=value ...]."""
    import argparse

    ap = argparse.ArgumentParser(prog="compseed train-miniworld", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", help="a YAML file of TrainConfig fields (configs/train/miniworld.yaml)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a field")
    ap.add_argument("--export-only", action="store_true",
                    help="export the EMA weights of the latest checkpoint to out_dir and stop")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = load_dataclass(TrainConfig, args.config, args.set)
    from ...runtime import set_torch_threads

    set_torch_threads(cfg.threads)  # the CLI decides process-wide settings, not train()
    out = export_checkpoint(cfg, config_file=args.config) if args.export_only else train(cfg, args.config)
    print(f"model written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
