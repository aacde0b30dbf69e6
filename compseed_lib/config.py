"""Run configuration: one dataclass of defaults per stage; a YAML file lists only what differs.

Inputs: `configs/<name>.yaml` (nested sections matching the dataclasses below) and optional
`key.sub=value` overrides. Unknown keys and wrong types fail with a message naming the key
(nanoGPT's configurator, without exec).

Usage:
    cfg = load_config("configs/mini.yaml", overrides=["generate.steps=2"])
    cfg.generate.steps, cfg.to_dict()
"""
from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml


class ConfigError(ValueError):
    """A config file or override is wrong; the message names the key."""


@dataclass
class PromptConfig:
    world: str = "miniworld"  # 'miniworld', 'comp90' or a folder in the same form
    split: str = "train"  # prompts the seeds are mined on
    kinds: list[str] = field(default_factory=lambda: ["count", "spatial"])
    counts: list[int] = field(default_factory=lambda: [2, 3, 4, 5, 6])
    limit: int | None = None  # the seeds are mined on at most this many prompts per kind, a sample spread over
    #                           every factor and pair of factors (prompts.balanced); None: all


@dataclass
class ModelConfig:
    pipeline: str = "tiny-sd"  # registry name (see generate.PIPELINES), hub id or local folder
    revision: str | None = None
    device: str = "auto"  # auto: cuda if present, else cpu
    dtype: str = "auto"  # auto: float16 on cuda, float32 on cpu
    generator_device: str = "cpu"  # 'cuda' reproduces seeds mined the original way


@dataclass
class GenerateConfig:
    seeds: list[int] = field(default_factory=lambda: list(range(16)))
    steps: int = 20
    guidance: float = 7.5
    height: int = 32
    width: int = 32
    batch_size: int = 16
    threads: int | None = None  # torch CPU threads while generating; None: half the cores (runtime.default_threads)
    compile: bool = False  # torch.compile the denoiser (a one-off compile per process; pays off on long runs)


@dataclass
class JudgeConfig:
    name: str = "miniworld-local"  # registry name (see judge.JUDGES)
    base_url: str | None = None  # overrides the registry's endpoint
    model: str | None = None
    api_key_env: str | None = None  # name of the environment variable holding the key, never the key
    concurrency: int | None = None  # requests in flight; None: judge.client.default_concurrency (8 for the
                                    # kit's own CPU judge on loopback, 32 for a judge server or API)
    timeout: float = 60.0
    max_retries: int = 4


@dataclass
class MiningConfig:
    top_n: int = 3  # seeds kept per category (paper: 3 per count)
    k: int = 3  # top-k for the cross-half check
    n_permutations: int = 2000
    split_seed: int = 0


@dataclass
class DatasetConfig:
    prompts: str = "all"  # 'all': every prompt of the training split (every object on every background at
    #                       every count; every pair under every relation), as the paper builds its dataset;
    #                       'mining': only the prompts the seeds were mined on (prompts.limit)
    per_prompt: int | None = None  # top seeds used per training prompt (None: all `mining.top_n`)
    seed_choice: str = "best"  # which of them: the category's best, or 'random' among its top_n for each
    #                            prompt (the paper: one image per prompt, a random pick of the top 3)
    random_seed_base: int = 100_000  # the random-seed control draws from [base, base + 100_000)
    validation: float = 0.0  # share of the training prompts (per kind) kept out of every dataset: the prompts
    #                          fine-tune settings are chosen on (finetune.grid); 0: no validation split


@dataclass
class EvalConfig:
    seeds: list[int] = field(default_factory=lambda: list(range(1000, 1016)))  # disjoint from mining seeds
    arms: list[str] = field(default_factory=lambda: ["base", "top_seeds", "qk", "lora", "qk_random_seeds",
                                                     "qk_unrectified"])
    n_bootstrap: int = 2000
    judge: str | None = None  # a judge registry name for evaluation only (paper: gpt-4o); None: the run's judge
    judge_base_url: str | None = None  # that judge's endpoint when not the registry's (a proxy; a rehearsal)
    in_distribution: int = 0  # also score every arm on this many of the datasets' own training prompts per kind
    #                           (a balanced sample) under the evaluation seeds: held-out seeds, in distribution


@dataclass
class GridConfig:
    """Fine-tune settings tried on the validation prompts (q/k on the top-seed dataset); the most accurate
    is used for every fine-tuned arm. Never chosen on the evaluation prompts or seeds."""

    steps: list[int] = field(default_factory=lambda: [100, 200, 400])
    lr: list[float] = field(default_factory=lambda: [1e-4, 3e-4, 1e-3])
    weights: list[str] = field(default_factory=lambda: ["qk"])  # which weights train (finetune.WEIGHTS): 'qk'
    #   the configured selection; 'qkvo' q/k/v/out of the same blocks; 'attention' every attention weight;
    #   'all' every weight of the denoiser
    seeds: list[int] = field(default_factory=lambda: list(range(2000, 2016)))  # disjoint from mining and evaluation


@dataclass
class FinetuneConfig:
    method: str = "qk"  # 'qk': train the selected q/k weights; 'lora': a peft LoRA on the same modules
    selection: str = "d1d2mu1u2"  # a SELECTIONS name (the paper's); see `patterns` / `blocks`
    patterns: list[str] | None = None  # regexes over parameter names, instead of `selection`
    blocks: list[int] | None = None  # transformer denoisers: q/k of these blocks
    text_encoder: list[str] | None = None  # regexes over the text encoder's parameter names: these train too
    #                                      (method qk only; the paper keeps the text encoder frozen)
    steps: int = 200
    batch: int = 16
    grad_accum: int = 1  # effective batch = batch * grad_accum * processes (paper: 128)
    lr: float = 1e-4  # paper: 1.28e-4 at effective batch 128
    warmup: int = 20
    ema_decay: float = 0.99  # short runs: a 0.999 EMA would barely leave the base weights
    cond_drop: float = 0.1  # captions dropped so classifier-free guidance keeps working
    lora_rank: int = 8
    mixed_precision: str = "no"  # 'fp16' / 'bf16' on GPU
    checkpoint_every: int = 50
    seed: int = 0
    grid: GridConfig | None = None  # `grid: {}` for the defaults; needs dataset.validation > 0


@dataclass
class MethodsConfig:
    """The comparison of neighbouring methods (notebook 09, compare.py); a run without this section skips it."""

    arms: list[str] = field(default_factory=lambda: ["base", "top_seeds", "qk", "regional", "guided", "best_of_n",
                                                     "top_seeds_guided"])
    planner: str = "miniworld-planner"  # judge registry name of the regional planner (gpt-4o, a vLLM server, ...)
    base_ratio: float | None = None  # regional: share of the base prompt in every region; None: the planner's
    guidance_scale: float = 300.0  # InfSplign latent step per unit of loss gradient (methods/guidance.py)
    guidance_start: int = 0  # first guided denoising step
    guidance_end: int | None = None  # first unguided step; None: half the steps
    best_of_n: int = 4  # candidate seeds per (prompt, evaluation seed) slot: the slot's seed and N - 1 more
    seed_stride: int = 1_000_000  # candidate k of slot s is seed s + k * seed_stride
    timing_probe: int = 16  # images rendered to time an arm whose images another notebook made
    grid_prompts: int = 4  # example grids: prompts (half counting, half spatial) ...
    grid_seeds: int = 6  # ... and evaluation seeds shown for every arm


@dataclass
class RunConfig:
    name: str = "mini"
    runs_dir: str = "runs"
    prompts: PromptConfig = field(default_factory=PromptConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    mining: MiningConfig = field(default_factory=MiningConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    evaluate: EvalConfig = field(default_factory=EvalConfig)
    methods: MethodsConfig | None = None  # `methods: {}` for the defaults

    def to_dict(self) -> dict:
        """Plain nested dict (for YAML and notebook parameters)."""
        return dataclasses.asdict(self)

    @property
    def run_dir(self) -> Path:
        """`runs_dir/name`."""
        return Path(self.runs_dir) / self.name


DEVICES = ("auto", "cpu", "cuda", "mps")  # and cuda:N
# Evaluation arms: the base model on the evaluation seeds and on the mined top seeds, fine-tunes, controls.
ARMS = ("base", "top_seeds", "qk", "lora", "qk_random_seeds", "qk_unrectified", "qk_ceiling")
# Neighbouring methods on the same held-out prompts (compare.py): RPG, InfSplign, best-of-N, top seeds + InfSplign.
METHOD_ARMS = ("regional", "guided", "best_of_n", "top_seeds_guided")
DTYPES = ("auto", "float32", "float16", "bfloat16")
GENERATOR_DEVICES = ("cpu", "cuda")
MAX_SEED = 2**63 - 1  # the ledger stores seeds as signed 64-bit integers
_SAFE = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")


# Named parameter selections for fine-tuning (finetune.selection): regexes over the denoiser's parameter
# names. The configuration names them; `finetune` applies them.
QK_WEIGHTS = r"attn[12]\.to_[qk]\.weight$"
GRID_WEIGHTS = ("qk", "qkvo", "attention", "all")  # what finetune.grid.weights may name (finetune.widened)
SELECTIONS: dict[str, list[str]] = {
    # the paper's: q and k of self- (attn1) and cross-attention (attn2) in d1, d2, mid, u1, u2
    "d1d2mu1u2": [rf"^down_blocks\.[12]\..*{QK_WEIGHTS}", rf"^mid_block\..*{QK_WEIGHTS}",
                  rf"^up_blocks\.[12]\..*{QK_WEIGHTS}"],
    "all_qk": [rf".*{QK_WEIGHTS}"],  # q and k of every attention layer (UNet or transformer)
}


@dataclass
class GuidanceConfig:
    """Settings of the attention-loss guidance (InfSplign's published loss constants by default)."""

    scale: float = 20.0  # latent step per unit of loss gradient (0: the plain pipeline)
    start: int = 0  # first guided denoising step (0-based, inclusive)
    end: int | None = None  # first unguided step after the window; None: half the steps
    iterations: int = 1  # gradient updates per guided step
    layers: tuple[str, ...] | None = None  # block prefixes for the spatial term; None: up-blocks / late blocks
    presence_layers: tuple[str, ...] | None = None  # None: `layers`
    balance_layers: tuple[str, ...] | None = None  # None: `layers`
    resolution: int | None = None  # map grid; None: the latent's height, at most 32
    alpha: float = 0.75
    margin: float = 0.25
    w_spatial: float = 1.0
    w_presence: float = 0.5
    w_balance: float = 0.5
    presence_min: float = 0.5  # peak share of the prompt's words an object's map should reach


def eval_judge(cfg: RunConfig) -> JudgeConfig:
    """The judge of the evaluation: `evaluate.judge` by registry name (its own endpoint, or
    `evaluate.judge_base_url`, and its own key), else the run's."""
    if cfg.evaluate.judge is None:
        return cfg.judge
    return dataclasses.replace(cfg.judge, name=cfg.evaluate.judge, base_url=cfg.evaluate.judge_base_url, model=None,
                               api_key_env=None)


def check_guidance(cfg: GuidanceConfig, steps: int) -> tuple[int, int]:
    """The guided window [start, end) for `steps` denoising steps; errors name the bad field."""
    if not isinstance(cfg, GuidanceConfig):
        raise TypeError(f"cfg must be a GuidanceConfig, got {type(cfg).__name__}")
    end = steps // 2 if cfg.end is None else cfg.end
    checks = [(cfg.scale >= 0, f"scale {cfg.scale} must be >= 0"),
              (0 <= cfg.start < end <= steps, f"step window start={cfg.start}, end={end} must satisfy "
                                               f"0 <= start < end <= steps ({steps})"),
              (isinstance(cfg.iterations, int) and cfg.iterations >= 1, f"iterations {cfg.iterations} must be >= 1"),
              (cfg.alpha > 0, f"alpha {cfg.alpha} must be > 0"),
              (0 <= cfg.margin < 1, f"margin {cfg.margin} must be in [0, 1)"),
              (min(cfg.w_spatial, cfg.w_presence, cfg.w_balance) >= 0, "loss weights must be >= 0"),
              (0 <= cfg.presence_min <= 1, f"presence_min {cfg.presence_min} must be in [0, 1]"),
              (cfg.resolution is None or cfg.resolution >= 2, f"resolution {cfg.resolution} must be >= 2")]
    for ok, msg in checks:
        if not ok:
            raise ValueError(f"GuidanceConfig: {msg}")
    return cfg.start, end


def _bad(key: str, value, want: str) -> ConfigError:
    return ConfigError(f"{key} {value!r}: {want}")


def check_seeds(seeds, key: str = "generate.seeds") -> list[int]:
    """Seeds must be distinct integers in [0, 2**63) (the ledger stores them as signed 64-bit)."""
    wrong = [s for s in seeds if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s <= MAX_SEED]
    if not len(seeds) or wrong:
        raise _bad(key, wrong[:5] if wrong else list(seeds),
                   "a non-empty list of integers in [0, 2**63) (64-bit seeds)")
    dup = sorted({s for s in seeds if list(seeds).count(s) > 1})
    if dup:
        raise _bad(key, dup[:5], "each seed once (these repeat)")
    return list(seeds)


def check_generate(g: GenerateConfig, seeds: bool = True) -> GenerateConfig:
    """Values of the generate section (image size against the model's VAE: `sources.check_size`);
    `seeds=False` when the caller's jobs carry their own seeds."""
    if seeds:
        check_seeds(g.seeds)
    for key in ("steps", "batch_size", "height", "width"):
        value = getattr(g, key)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise _bad(f"generate.{key}", value, "must be a positive integer")
    if g.guidance < 0:
        raise _bad("generate.guidance", g.guidance, "must be >= 0")
    if g.threads is not None and (isinstance(g.threads, bool) or not isinstance(g.threads, int) or g.threads < 1):
        raise _bad("generate.threads", g.threads, "a positive number of CPU threads, or null for half the cores")
    if not isinstance(g.compile, bool):
        raise _bad("generate.compile", g.compile, "true or false")
    return g


def check_model(m: ModelConfig) -> ModelConfig:
    """Values of the model section (whether the model exists: `sources.check_source`)."""
    if m.device not in DEVICES and not (m.device.startswith("cuda:") and m.device[5:].isdigit()):
        raise _bad("model.device", m.device, f"use one of {list(DEVICES)} or cuda:N")
    if m.dtype not in DTYPES:
        raise _bad("model.dtype", m.dtype, f"use one of {list(DTYPES)}")
    if m.generator_device not in GENERATOR_DEVICES:
        raise _bad("model.generator_device", m.generator_device, f"use one of {list(GENERATOR_DEVICES)}")
    if not m.pipeline.strip():
        raise _bad("model.pipeline", m.pipeline, "a registered name, a local folder or a hub id")
    return m


def check_judge(j: JudgeConfig) -> JudgeConfig:
    """Values of the judge section (its name and key: `judge.registry`)."""
    if j.concurrency is not None and j.concurrency < 1:
        raise _bad("judge.concurrency", j.concurrency, "must be >= 1")
    if j.max_retries < 0:
        raise _bad("judge.max_retries", j.max_retries, "must be >= 0")
    if j.timeout <= 0:
        raise _bad("judge.timeout", j.timeout, "must be positive")
    if j.base_url is not None and not j.base_url.startswith(("http://", "https://")):
        raise _bad("judge.base_url", j.base_url, "must start with http:// or https://")
    if j.api_key_env is not None and not j.api_key_env.isidentifier():
        raise ConfigError("judge.api_key_env must be the NAME of an environment variable (e.g. OPENAI_API_KEY), "
                          "never the key itself")
    return j


def check_prompts(p: PromptConfig) -> PromptConfig:
    """Values of the prompts section (whether its files parse: `chain.preflight`)."""
    from .prompts import COUNT_WORDS, SPLITS

    if p.split not in SPLITS:
        raise _bad("prompts.split", p.split, f"use one of {list(SPLITS)}")
    if not p.kinds or set(p.kinds) - {"count", "spatial"}:
        raise _bad("prompts.kinds", p.kinds, "a non-empty list of 'count' and/or 'spatial'")
    if "count" in p.kinds:
        outside = [c for c in p.counts if c not in COUNT_WORDS]
        if not p.counts or outside:
            raise _bad("prompts.counts", p.counts, f"counts the prompt template can write: "
                                                   f"{min(COUNT_WORDS)}..{max(COUNT_WORDS)}")
        if len(set(p.counts)) != len(p.counts):
            raise _bad("prompts.counts", p.counts, "each count once")
    if p.limit is not None and p.limit < 1:
        raise _bad("prompts.limit", p.limit, "at least 1 prompt per kind (or null for all)")
    return p


def check_finetune(f: FinetuneConfig) -> FinetuneConfig:
    """Values of the finetune section (whether the selection matches the model: `finetune.selected`)."""
    if f.method not in ("qk", "lora"):
        raise _bad("finetune.method", f.method, "use 'qk' or 'lora'")
    for key in ("steps", "batch", "grad_accum", "checkpoint_every", "lora_rank"):
        if getattr(f, key) < 1:
            raise _bad(f"finetune.{key}", getattr(f, key), "must be >= 1")
    if not 0 <= f.cond_drop < 1 or not 0 < f.ema_decay < 1 or f.lr <= 0:
        raise ConfigError(f"finetune: cond_drop in [0, 1), ema_decay in (0, 1), lr > 0 (got {f.cond_drop}, "
                          f"{f.ema_decay}, {f.lr})")
    if f.mixed_precision not in ("no", "fp16", "bf16"):
        raise _bad("finetune.mixed_precision", f.mixed_precision, "use 'no', 'fp16' or 'bf16'")
    if f.patterns is None and f.blocks is None and f.selection not in SELECTIONS:
        raise _bad("finetune.selection", f.selection, f"use one of {sorted(SELECTIONS)}, or finetune.patterns "
                                                      f"(regexes over parameter names) / finetune.blocks")
    for pattern in f.patterns or []:
        try:
            re.compile(pattern)
        except re.error as e:
            raise _bad("finetune.patterns", pattern, f"not a regular expression ({e})") from None
    if f.blocks is not None and (not f.blocks or any(not isinstance(b, int) or b < 0 for b in f.blocks)):
        raise _bad("finetune.blocks", f.blocks, "a non-empty list of transformer block indices >= 0")
    if f.text_encoder is not None:
        if not f.text_encoder or f.method != "qk":
            raise _bad("finetune.text_encoder", f.text_encoder, "a non-empty list of regexes over the text encoder's "
                                                                "parameter names, with finetune.method 'qk'")
        for pattern in f.text_encoder:
            try:
                re.compile(pattern)
            except (re.error, TypeError) as e:
                raise _bad("finetune.text_encoder", pattern, f"not a regular expression ({e})") from None
    return f


def check_grid(cfg: RunConfig) -> None:
    """finetune.grid: settings to try, validation seeds apart from the mining and evaluation seeds."""
    g = cfg.finetune.grid
    if cfg.dataset.validation <= 0:
        raise _bad("finetune.grid", "set", "needs validation prompts: set dataset.validation (e.g. 0.25)")
    if not g.steps or any(not isinstance(s, int) or s < 1 for s in g.steps):
        raise _bad("finetune.grid.steps", g.steps, "a non-empty list of step counts >= 1")
    if not g.lr or any(lr <= 0 for lr in g.lr):
        raise _bad("finetune.grid.lr", g.lr, "a non-empty list of learning rates > 0")
    if not g.weights or set(g.weights) - set(GRID_WEIGHTS):
        raise _bad("finetune.grid.weights", g.weights, f"a non-empty list of {list(GRID_WEIGHTS)}")
    check_seeds(g.seeds, "finetune.grid.seeds")
    overlap = sorted(set(g.seeds) & (set(cfg.generate.seeds) | set(cfg.evaluate.seeds)))
    if overlap:
        raise _bad("finetune.grid.seeds", overlap[:5], "must be disjoint from the mining seeds (generate.seeds) "
                                                       "and the evaluation seeds (evaluate.seeds)")


def validate(cfg: RunConfig) -> RunConfig:
    """Every check of a config's values that needs no file, model or network; `ConfigError` names the key.

    The one place for value rules: each section has its check, which the stage code calls too.
    Resources (prompt files, the model folder, the judge's key) are checked by `chain.preflight`.
    """
    if not cfg.name or not set(cfg.name) <= _SAFE or cfg.name.startswith(".") or ".." in cfg.name:
        raise _bad("name", cfg.name, "use letters, digits, '_', '-', '.' (it becomes a folder name)")
    check_prompts(cfg.prompts)
    check_generate(cfg.generate)
    check_model(cfg.model)
    check_judge(cfg.judge)
    check_finetune(cfg.finetune)
    if cfg.dataset.per_prompt is not None and cfg.dataset.per_prompt < 1:
        raise _bad("dataset.per_prompt", cfg.dataset.per_prompt, "at least 1 (or null for every top seed)")
    if cfg.dataset.seed_choice not in ("best", "random"):
        raise _bad("dataset.seed_choice", cfg.dataset.seed_choice, "'best' or 'random'")
    if cfg.dataset.prompts not in ("all", "mining"):
        raise _bad("dataset.prompts", cfg.dataset.prompts, "'all' (every training prompt) or 'mining' (the "
                                                           "prompts the seeds were mined on)")
    if cfg.evaluate.in_distribution < 0:
        raise _bad("evaluate.in_distribution", cfg.evaluate.in_distribution, "a number of prompts per kind >= 0")
    check_seeds(cfg.evaluate.seeds, "evaluate.seeds")
    overlap = sorted(set(cfg.evaluate.seeds) & set(cfg.generate.seeds))
    if overlap:
        raise _bad("evaluate.seeds", overlap[:5], "must be disjoint from the mining seeds (generate.seeds)")
    if not 0 <= cfg.dataset.validation < 1:
        raise _bad("dataset.validation", cfg.dataset.validation, "a share of the training prompts in [0, 1)")
    if cfg.finetune.grid is not None:
        check_grid(cfg)
    unknown = sorted(set(cfg.evaluate.arms) - set(ARMS))
    if unknown or not cfg.evaluate.arms:
        raise _bad("evaluate.arms", unknown or cfg.evaluate.arms, f"a non-empty list of {list(ARMS)}")
    if "qk_ceiling" in cfg.evaluate.arms and cfg.prompts.world != "miniworld":
        raise _bad("evaluate.arms", "qk_ceiling", "the ceiling arm trains on rendered ground-truth scenes: "
                                                 "the mini world only (prompts.world: miniworld)")
    for key in ("top_n", "k", "n_permutations"):
        if getattr(cfg.mining, key) < 1:
            raise _bad(f"mining.{key}", getattr(cfg.mining, key), "must be >= 1")
    if cfg.methods is not None:
        check_methods(cfg.methods, cfg)
    return cfg


def check_methods(m: MethodsConfig, cfg: RunConfig) -> MethodsConfig:
    """Values of the methods section: known arms (fine-tunes only those 06 trains), ratios, the guided
    window, best-of-N candidate seeds disjoint from the mining and evaluation seeds."""
    unknown = sorted(set(m.arms) - set(ARMS) - set(METHOD_ARMS))
    if unknown or "base" not in m.arms or len(set(m.arms)) != len(m.arms):
        raise _bad("methods.arms", unknown or m.arms, f"each arm once, 'base' included, from "
                                                      f"{list(ARMS) + list(METHOD_ARMS)}")
    untrained = [a for a in m.arms if a in ARMS and a not in ("base", "top_seeds") and a not in cfg.evaluate.arms]
    if untrained:
        raise _bad("methods.arms", untrained, "fine-tuned arms must also be in evaluate.arms (06 trains those)")
    if m.base_ratio is not None and not 0 <= m.base_ratio <= 1:
        raise _bad("methods.base_ratio", m.base_ratio, "a number in [0, 1], or null for the planner's")
    try:
        check_guidance(GuidanceConfig(scale=m.guidance_scale, start=m.guidance_start, end=m.guidance_end),
                     cfg.generate.steps)
    except ValueError as e:
        raise ConfigError(f"methods.guidance_*: {e}") from None
    for key in ("best_of_n", "seed_stride", "timing_probe", "grid_prompts", "grid_seeds"):
        value = getattr(m, key)
        if isinstance(value, bool) or value < 1:
            raise _bad(f"methods.{key}", value, "must be >= 1")
    if "best_of_n" in m.arms:
        others = set(cfg.generate.seeds) | set(cfg.evaluate.seeds)
        cand = {s + k * m.seed_stride for s in cfg.evaluate.seeds for k in range(1, m.best_of_n)}
        clash = sorted(cand & others)
        if clash or max(cand, default=0) > MAX_SEED:
            raise _bad("methods.seed_stride", m.seed_stride, f"best-of-N candidate seeds (evaluation seed + k * "
                                                             f"stride) must be new seeds below 2**63; {clash[:3]} "
                                                             f"are mining or evaluation seeds")
    return m


def _coerce(value, tp, key: str):
    """Check `value` against type hint `tp`; ints pass for floats, nothing else is converted."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        sections = [a for a in args if dataclasses.is_dataclass(a)]
        if isinstance(value, dict) and len(sections) == 1:  # an optional section: its own key errors
            return _coerce(value, sections[0], key)
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError:
                pass
        raise ConfigError(f"config key {key!r}: {value!r} is not {tp}")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"config key {key!r}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config key {key!r}: expected a section (mapping), got {value!r}")
        return _build(tp, value, key + ".")
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float) and isinstance(value, bool) or not isinstance(value, tp):
        raise ConfigError(f"config key {key!r}: expected {tp.__name__}, got {value!r}")
    return value


def _build(cls, data: dict, prefix: str = ""):
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ConfigError(f"unknown config key {prefix + sorted(unknown)[0]!r}; "
                          f"valid keys{' in ' + prefix.rstrip('.') if prefix else ''}: {sorted(names)}")
    return cls(**{k: _coerce(v, hints[k], prefix + k) for k, v in data.items()})


def _set(d: dict, dotted: str, value) -> None:
    *path, last = dotted.split(".")
    for p in path:
        d = d.setdefault(p, {})
        if not isinstance(d, dict):
            raise ConfigError(f"override {dotted!r}: {p!r} is not a section")
    d[last] = value


def apply_overrides(data: dict, overrides: list[str] | dict | None) -> dict:
    """Set `key.sub=value` overrides (values parsed as YAML) into a nested dict, in place."""
    items = overrides.items() if isinstance(overrides, dict) else (
        o.split("=", 1) if "=" in o else (o, None) for o in overrides or [])
    for k, v in items:
        if v is None:
            raise ConfigError(f"override {k!r} must look like key.sub=value")
        _set(data, k, yaml.safe_load(v) if isinstance(v, str) else v)
    return data


def config_from_dict(data: dict | None, overrides: list[str] | dict | None = None) -> RunConfig:
    """Build a RunConfig from a nested dict plus `key=value` (YAML-parsed values) overrides."""
    return _build(RunConfig, apply_overrides(dict(data or {}), overrides))


def load_config(path: str | Path, overrides: list[str] | dict | None = None) -> RunConfig:
    """Read `configs/<name>.yaml`; the run name defaults to the file's stem."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    data.setdefault("name", path.stem)
    try:
        return config_from_dict(data, overrides)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def load_dataclass(cls, path: str | Path, overrides: list[str] | dict | None = None):
    """Any config dataclass from a YAML file plus `key=value` overrides, with the same strict checks."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    try:
        return _build(cls, apply_overrides(data, overrides))
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
