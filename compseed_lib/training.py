"""One training loop for every model the kit trains: the mini-world generator today, q/k and LoRA
fine-tuning next. On `accelerate` (one CPU process by default, `accelerate launch` for many GPUs with
the same file), with EMA, safetensors checkpoints kept to a retention limit, resume after kill -9, a
loss record, and per-step seeds.

The loop's steps are named functions a caller can read and test one by one:
  `lr_at(step)`        linear warmup, then constant (EMA smooths the end)
  `batch_generator`    a torch.Generator seeded by (seed, step): a resumed run draws the batches an
                       uninterrupted one would have drawn
  `Trainer.step`       forward (the caller's `loss_fn`), backward, clip, optimizer step, EMA update
  `Trainer.save` / `Trainer.resume`  checkpoints as safetensors (module weights, EMA shadows, optimizer
                       state) plus state.json, written to a temp folder and renamed into place whole

Inputs: modules to train (name -> nn.Module), which of them keep an EMA, the parameters to optimise,
a `LoopConfig`, and `loss_fn(step, generator, modules) -> (loss, {metric: float})`.
Outputs: the trained modules (EMA weights copied in with `use_ema()`), `history` rows
[step, mean loss, seconds, *mean metrics], checkpoints under `work_dir/checkpoints/step_NNNNNNN/`.

Usage:
    loop = Trainer({"unet": unet}, ema=["unet"], params=unet.parameters(), cfg=LoopConfig(steps=1000),
                   work_dir="runs/_train")
    loop.resume()
    loop.run(loss_fn)        # loss_fn(step, generator, modules) -> (loss tensor, {"loss": 0.05, "caption": 0.12})
    loop.use_ema()
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)
CHECKPOINT_PREFIX = "step_"
LossFn = Callable[[int, torch.Generator, dict], tuple[torch.Tensor, dict]]


@dataclass
class LoopConfig:
    """Settings of the shared loop (the model-specific ones live in each trainer's config)."""

    steps: int = 1000
    lr: float = 3e-4
    warmup: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    seed: int = 0
    seed_offset: int = 10_000_019  # per-step generators: seed * 1_000_003 + seed_offset + step
    grad_accum: int = 1  # micro-batches per optimizer step (effective batch = batch * grad_accum * processes)
    mixed_precision: str = "no"  # accelerate's: 'no', 'fp16', 'bf16' (on GPU)
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 50


def _all_trainable(m: torch.nn.Module) -> bool:
    return all(p.requires_grad for p in m.parameters())


def _trainable(m: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The parameters a module trains (all of them, or a fine-tune's selection)."""
    return [p for p in m.parameters() if p.requires_grad]


def _state(m: torch.nn.Module) -> dict[str, torch.Tensor]:
    """What a checkpoint keeps of a module: its whole state when all of it trains, else the trained tensors
    (a q/k fine-tune of SD 2.1 saves 47M numbers, not 865M)."""
    if _all_trainable(m):
        return m.state_dict()
    return {n: p for n, p in m.named_parameters() if p.requires_grad}


def _tied_aliases(m: torch.nn.Module) -> set[str]:
    """State-dict names that share storage with an earlier name (T5's encoder.embed_tokens = shared)."""
    seen, tied = set(), set()
    for name, t in m.state_dict(keep_vars=True).items():
        key = (t.data_ptr(), t.shape)
        (tied.add(name) if key in seen else seen.add(key))
    return tied


def save_weights(m: torch.nn.Module, path: str | Path) -> None:
    """What `_state` keeps of `m` as safetensors, each shared tensor once."""
    from safetensors.torch import save_file

    tied = _tied_aliases(m)
    save_file({k: v.detach().cpu().contiguous() for k, v in _state(m).items() if k not in tied}, str(path))


def load_weights(m: torch.nn.Module, path: str | Path, strict: bool = True) -> None:
    """Load safetensors weights into `m`; a name missing from the file is allowed only where it shares
    storage with one that is there (tied embeddings), or everywhere when not `strict`."""
    from safetensors.torch import load_file

    missing, unexpected = m.load_state_dict(load_file(str(path)), strict=False)
    tied = _tied_aliases(m)
    missing = [k for k in missing if k not in tied]
    if strict and (missing or unexpected):
        raise RuntimeError(f"{path}: weights do not fit the model (missing {missing[:5]}, "
                           f"unexpected {unexpected[:5]})")


def lr_at(cfg: LoopConfig, step: int) -> float:
    """Learning rate of optimizer step `step` (0-based): linear warmup, then constant."""
    return cfg.lr * min(1.0, (step + 1) / max(1, cfg.warmup))


def batch_generator(cfg: LoopConfig, step: int) -> torch.Generator:
    """The generator a step draws its batch, noise and timesteps from: a function of (seed, step) only."""
    return torch.Generator().manual_seed(cfg.seed * 1_000_003 + cfg.seed_offset + step)


# ---------------------------------------------------------------------------- optimizer state (no pickle)
def save_optimizer(opt: torch.optim.Optimizer, path: Path) -> None:
    """Optimizer state as safetensors: '<param index>.<key>' tensors."""
    from safetensors.torch import save_file

    params = [p for g in opt.param_groups for p in g["params"]]
    tensors = {f"{i}.{k}": v.detach().cpu().contiguous() if torch.is_tensor(v) else torch.tensor(v)
               for i, p in enumerate(params) for k, v in opt.state.get(p, {}).items()}
    save_file(tensors, str(path))


def load_optimizer(opt: torch.optim.Optimizer, path: Path) -> None:
    """Inverse of save_optimizer."""
    from safetensors.torch import load_file

    params = [p for g in opt.param_groups for p in g["params"]]
    for key, value in load_file(str(path)).items():
        i, k = key.split(".", 1)
        p = params[int(i)]
        opt.state.setdefault(p, {})[k] = value.to(p.device) if k != "step" else value


def latest_checkpoint(ck_dir: Path) -> Path | None:
    """The newest complete checkpoint folder (temp folders of a killed save are never complete)."""
    found = sorted(Path(ck_dir).glob(f"{CHECKPOINT_PREFIX}*"))
    return found[-1] if found else None


class Trainer:
    """The shared loop: modules, their EMAs, one AdamW, checkpoints and a loss record."""

    def __init__(self, modules: dict[str, torch.nn.Module], ema: Iterable[str], params: Iterable,
                 cfg: LoopConfig, work_dir: str | Path, device: str | torch.device | None = None):
        from accelerate import Accelerator
        from diffusers.training_utils import EMAModel

        self.cfg = cfg
        self.accelerator = Accelerator(gradient_accumulation_steps=cfg.grad_accum,
                                       mixed_precision=cfg.mixed_precision,
                                       cpu=device is not None and torch.device(device).type == "cpu")
        self.device = self.accelerator.device
        self.raw = {k: m.to(self.device) for k, m in modules.items()}  # unwrapped: saved, EMA'd, exported
        self.params = [p for p in params]
        opt = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.opt = self.accelerator.prepare(opt)
        # what loss_fn calls: the modules themselves in one process, DDP-wrapped under `accelerate launch`
        names = [k for k, m in self.raw.items() if any(p.requires_grad for p in m.parameters())]
        wrapped = self.accelerator.prepare(*[self.raw[k] for k in names]) if self.accelerator.num_processes > 1 \
            else [self.raw[k] for k in names]
        self.modules = {**self.raw, **dict(zip(names, wrapped if isinstance(wrapped, (list, tuple)) else [wrapped]))}
        self.ema = {k: EMAModel(_trainable(self.raw[k]), decay=cfg.ema_decay) for k in ema}
        self.ck_dir = Path(work_dir) / "checkpoints"
        self.step, self.history = 0, []
        self._running: list[list[float]] = []

    # -------------------------------------------------------------- checkpoints
    def save(self) -> Path | None:
        """Everything a resume needs, in a temp folder renamed into place only when whole; old ones pruned.
        Under `accelerate launch` the main process writes, the others wait."""
        from safetensors.torch import save_file

        self.accelerator.wait_for_everyone()
        if not self.accelerator.is_main_process:
            return None
        self.ck_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.ck_dir / f".tmp_{CHECKPOINT_PREFIX}{self.step:07d}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for name, m in self.raw.items():
            save_weights(m, tmp / f"{name}.safetensors")
        for name, ema in self.ema.items():
            save_file({str(i): p.detach().cpu().contiguous() for i, p in enumerate(ema.shadow_params)},
                      str(tmp / f"ema_{name}.safetensors"))
        save_optimizer(self.opt, tmp / "optimizer.safetensors")
        (tmp / "state.json").write_text(json.dumps({"step": self.step, "history": self.history}))
        final = self.ck_dir / f"{CHECKPOINT_PREFIX}{self.step:07d}"
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for old in sorted(self.ck_dir.glob(f"{CHECKPOINT_PREFIX}*"))[:-self.cfg.keep_checkpoints]:
            shutil.rmtree(old)
        for stale in self.ck_dir.glob(f".tmp_{CHECKPOINT_PREFIX}*"):  # left by a kill during an older save
            shutil.rmtree(stale, ignore_errors=True)
        return final

    def resume(self) -> bool:
        """Load the newest checkpoint if there is one; True when the run continues from it."""
        from safetensors.torch import load_file

        latest = latest_checkpoint(self.ck_dir)
        if latest is None:
            return False
        for name, m in self.raw.items():
            path = latest / f"{name}.safetensors"
            if path.is_file():
                load_weights(m, path, strict=_all_trainable(m))
        for name, ema in self.ema.items():
            shadow = load_file(str(latest / f"ema_{name}.safetensors"))
            ema.shadow_params = [shadow[str(i)].to(self.device) for i in range(len(ema.shadow_params))]
        load_optimizer(self.opt, latest / "optimizer.safetensors")
        state = json.loads((latest / "state.json").read_text())
        self.step, self.history = state["step"], state["history"]
        for ema in self.ema.values():
            ema.optimization_step = self.step
        log.info("resumed from %s", latest)
        return True

    # -------------------------------------------------------------- one step
    def set_lr(self) -> float:
        """Apply the schedule for the current step."""
        lr = lr_at(self.cfg, self.step)
        for group in self.opt.param_groups:
            group["lr"] = lr
        return lr

    def optimizer_step(self, loss: torch.Tensor) -> None:
        """Backward, clip to `grad_clip`, step, zero the gradients (accelerate handles accumulation)."""
        self.accelerator.backward(loss)
        if self.accelerator.sync_gradients and self.cfg.grad_clip:
            self.accelerator.clip_grad_norm_(self.params, self.cfg.grad_clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)

    def ema_step(self) -> None:
        """Move every EMA towards its module's current weights."""
        for name, ema in self.ema.items():
            ema.step(_trainable(self.raw[name]))

    def step_once(self, loss_fn: LossFn) -> tuple[float, dict]:
        """One optimizer step: `grad_accum` micro-batches, each drawn from its own (seed, step) generator.
        `loss_fn(step, generator, modules)` returns (the loss to minimise, {metric: float}); a metric named
        'loss' is what the loss record shows (e.g. the diffusion loss without auxiliary terms)."""
        self.set_lr()
        total, metrics = 0.0, {}
        for micro in range(self.cfg.grad_accum):
            g = batch_generator(self.cfg, self.step * self.cfg.grad_accum + micro if self.cfg.grad_accum > 1
                                else self.step)
            with self.accelerator.accumulate(*self.modules.values()):
                with self.accelerator.autocast():
                    loss, extra = loss_fn(self.step, g, self.modules)
                self.optimizer_step(loss)
            total += extra.pop("loss", loss.item()) / self.cfg.grad_accum
            for k, v in extra.items():
                metrics[k] = metrics.get(k, 0.0) + v / self.cfg.grad_accum
        self.ema_step()
        self.step += 1
        return total, metrics

    # -------------------------------------------------------------- the loop
    def run(self, loss_fn: LossFn, desc: str = "train",
            progress: bool = True) -> list:
        """Train to `cfg.steps`, logging every `log_every` and checkpointing every `checkpoint_every`."""
        from .progress import bar as progress_bar

        t0 = time.time() - (self.history[-1][2] if self.history else 0.0)  # the clock runs across resumes
        metric_names: list[str] = []
        with progress_bar(total=self.cfg.steps - self.step, desc=desc, unit="step",
                          disable=not progress or self.step >= self.cfg.steps) as bar:
            while self.step < self.cfg.steps:
                loss, metrics = self.step_once(loss_fn)
                metric_names = metric_names or sorted(metrics)
                self._running.append([loss] + [metrics[k] for k in metric_names])
                bar.update(1)
                if self.step % self.cfg.log_every == 0 or self.step == self.cfg.steps:
                    means = np.mean(np.asarray(self._running), axis=0)
                    self.history.append([self.step, float(means[0]), round(time.time() - t0, 1)]
                                        + [round(float(m), 4) for m in means[1:]])
                    self._running = []
                if self.step % self.cfg.checkpoint_every == 0 or self.step == self.cfg.steps:
                    self.save()
        return self.history

    def use_ema(self) -> None:
        """Copy every EMA's weights into its module (for export)."""
        for name, ema in self.ema.items():
            ema.copy_to(_trainable(self.raw[name]))
