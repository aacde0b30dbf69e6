"""RPG-style regional prompting: a plan splits the image into regions, each with its own prompt, and every
cross-attention layer of the UNet composes the regions' outputs.

A `Plan` is what RPG's planner writes: a split ratio, regional prompts (joined by BREAK in RPG's prompt
string) and base_ratio. Split-ratio grammar: ";" separates rows, "," columns; the first number of a row
is its height, the others its columns' widths; a lone number is a full row. So "1,1,1" is one row of two
equal columns, "1;1" two equal rows, "1,2,1;2,1,1,1" a short row (columns 2:1) over a tall one (three
columns). Regions are numbered in reading order (rows top to bottom, left to right within a row).

How an image is made (`generate_regional`): the pipeline runs as usual on the base prompt (the plain
prompt: its classifier-free-guidance batch, and its text in every layer that is not cross-attention,
e.g. the mini world's pooled text embedding). A `RegionalProcessor`, installed on every cross-attention
layer with `unet.set_attn_processor`, runs the layer's own processor once more per region with that
region's prompt (each encoded alone, as the pipeline encodes a prompt), and for the conditional half of
the batch returns
    base_ratio * out(base prompt) + (1 - base_ratio) * sum_r  m_r * out(region r's prompt)
where m_r is region r's share of each query cell at that layer's resolution (the area of the cell its box
covers: the shares sum to one at every cell, so a coarse 2x2 layer blends neighbouring regions instead of
cutting them). The unconditional half is left alone. The original processors are put back afterwards.
One full region whose prompt is the plain prompt, with base_ratio 0, is therefore the plain pipeline.

Noise is the engine's (`generate.seed_noise`): seed s gives the same initial latents as in the base arm,
so arms compare on the same seeds. UNet pipelines only (SD family, the mini world); a PixArt
transformer is refused.

Usage:
    plan = Plan("1,1,1", 0.3, ("one ball, on the sand", "one ball, on the sand"))
    images = generate_regional(pipe, ["two balls, on the sand"], [plan], seeds=[0, 1], steps=10, guidance=4.0)
    # plans from an LLM (or the kit's rule-based mini-world planner): methods.planner.plan_all(prompts, cfg)
"""
from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from ..attention import cross_attention_layers
from ..generate import seed_draw
from ..pipelines import call_kwargs, denoiser, encode_text, latent_shape, prompt_problems

log = logging.getLogger(__name__)
BREAK = "BREAK"
MAX_REGIONS = 64  # a plan with more regions than this is taken for a planner's mistake


class PlanError(ValueError):
    """A split ratio or plan that cannot be used (the message names the bad input)."""


# ---------------------------------------------------------------------------- the split-ratio grammar
@dataclass(frozen=True)
class Box:
    """One region as fractions of the image: x0 <= x < x1 across, y0 <= y < y1 down."""

    x0: float
    y0: float
    x1: float
    y1: float


def _number(token: str, text: str) -> float:
    try:
        value = float(token)
    except ValueError:
        raise PlanError(f"split ratio {text!r}: {token.strip()!r} is not a number (grammar: ';' separates rows, "
                        f"',' columns, the first number of a row is its height, e.g. '1,1,1' or '1;1')") from None
    if not math.isfinite(value) or value <= 0:
        raise PlanError(f"split ratio {text!r}: every ratio must be a positive number, got {token.strip()!r}")
    return value


def parse_split_ratio(text: str) -> list[Box]:
    """Region boxes of a split-ratio string, in reading order (see the module docstring)."""
    if not isinstance(text, str) or not text.strip():
        raise PlanError(f"split ratio {text!r} is empty: write e.g. '1' (one region), '1,1,1' (two columns) "
                        f"or '1;1' (two rows)")
    rows = []
    for i, row in enumerate(text.split(";")):
        if not row.strip():
            raise PlanError(f"split ratio {text!r}: row {i + 1} is empty")
        numbers = [_number(t, text) for t in row.split(",")]
        rows.append((numbers[0], numbers[1:] or [1.0]))
    total = sum(h for h, _ in rows)
    boxes, y = [], 0.0
    for i, (height, cols) in enumerate(rows):
        y1 = 1.0 if i == len(rows) - 1 else y + height / total
        x, width = 0.0, sum(cols)
        for j, c in enumerate(cols):
            x1 = 1.0 if j == len(cols) - 1 else x + c / width
            boxes.append(Box(x, y, x1, y1))
            x = x1
        y = y1
    return boxes


def region_weights(boxes: Sequence[Box], h: int, w: int) -> torch.Tensor:
    """(R, h, w): the share of each cell of an h x w grid that each box covers (sums to 1 per cell for the
    boxes of a split ratio)."""
    def cover(lo: float, hi: float, n: int) -> torch.Tensor:  # (n,) overlap of [lo, hi) with each cell, in cells
        edges = torch.arange(n + 1, dtype=torch.float64) / n
        return ((torch.minimum(edges[1:], torch.tensor(hi)) - torch.maximum(edges[:-1], torch.tensor(lo)))
                .clamp(min=0) * n)

    out = torch.stack([cover(b.y0, b.y1, h)[:, None] * cover(b.x0, b.x1, w)[None, :] for b in boxes])
    return (out / out.sum(0, keepdim=True).clamp(min=1e-12)).float()  # exact partition of one per cell


# ---------------------------------------------------------------------------- plans
@dataclass(frozen=True)
class Plan:
    """A regional plan: split ratio, base_ratio in [0, 1], one prompt per region (reading order)."""

    split_ratio: str
    base_ratio: float
    prompts: tuple[str, ...]

    @property
    def boxes(self) -> list[Box]:
        """The regions' boxes."""
        return parse_split_ratio(self.split_ratio)

    @property
    def text(self) -> str:
        """RPG's regional prompt string: the regional prompts joined by BREAK."""
        return f" {BREAK} ".join(self.prompts)

    @classmethod
    def single(cls, prompt: str) -> Plan:
        """The plain prompt as a plan: one full region, no base blend (images equal the plain pipeline's)."""
        return cls("1", 0.0, (prompt,))

    @classmethod
    def from_text(cls, split_ratio: str, text: str, base_ratio: float = 0.0) -> Plan:
        """A plan from RPG's form: regional prompts joined by BREAK; checked."""
        return check_plan(cls(split_ratio, base_ratio, tuple(p.strip() for p in text.split(BREAK))))


def check_plan(plan: Plan) -> Plan:
    """The plan itself if usable; PlanError naming what is wrong (grammar, counts, ratios, prompts)."""
    boxes = parse_split_ratio(plan.split_ratio)
    prompts = plan.prompts
    if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
        raise PlanError(f"plan {plan.split_ratio!r}: regional prompts must be a list of strings, got {prompts!r}")
    if len(boxes) > MAX_REGIONS:
        raise PlanError(f"split ratio {plan.split_ratio!r} makes {len(boxes)} regions (at most {MAX_REGIONS})")
    if len(prompts) != len(boxes):
        raise PlanError(f"split ratio {plan.split_ratio!r} makes {len(boxes)} region(s) but the plan has "
                        f"{len(prompts)} regional prompt(s)")
    empty = [i for i, p in enumerate(prompts) if not p.strip() or BREAK in p]
    if empty:
        raise PlanError(f"plan {plan.split_ratio!r}: regional prompt(s) {empty} are empty or still contain {BREAK}")
    r = plan.base_ratio
    if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 <= r <= 1:
        raise PlanError(f"plan {plan.split_ratio!r}: base_ratio must be a number in [0, 1], got {r!r}")
    return plan


def plan_from_json(obj) -> Plan:
    """A checked plan from a planner's JSON object {split_ratio, base_ratio, regional_prompts} (a list, or
    one BREAK-joined string)."""
    if not isinstance(obj, dict):
        raise PlanError(f"a plan must be a JSON object, got {type(obj).__name__}")
    missing = [k for k in ("split_ratio", "base_ratio", "regional_prompts") if k not in obj]
    if missing:
        raise PlanError(f"plan lacks {missing} (it has {sorted(obj)})")
    prompts = obj["regional_prompts"]
    if isinstance(prompts, str):
        prompts = [p.strip() for p in prompts.split(BREAK)]
    if not isinstance(prompts, list):
        raise PlanError(f"regional_prompts must be a list of strings, got {type(prompts).__name__}")
    ratio = obj["split_ratio"]
    if isinstance(ratio, (int, float)) and not isinstance(ratio, bool):
        ratio = f"{ratio:g}"
    return check_plan(Plan(ratio, obj["base_ratio"], tuple(prompts)))


# ---------------------------------------------------------------------------- the attention processor
class RegionalState:
    """What the processors of one pipeline call share: per image, the regions' text states, boxes and
    base_ratio (set by `generate_regional` before each call)."""

    def __init__(self):
        self.states: torch.Tensor | None = None  # (n, R, T, D): regional prompt states, padded to R regions
        self.boxes: list[list[Box]] = []  # per image
        self.base_ratio: torch.Tensor | None = None  # (n,)
        self.latent_hw: tuple[int, int] = (0, 0)
        self._weights: dict[tuple[int, int], torch.Tensor] = {}

    def set(self, states: torch.Tensor, boxes: list[list[Box]], base_ratio: Sequence[float],
            latent_hw: tuple[int, int]) -> None:
        """Regions of the next call's images (states (n, R, T, D), a box list per image)."""
        self.states, self.boxes, self.latent_hw = states, boxes, latent_hw
        self.base_ratio = torch.tensor(list(base_ratio), dtype=states.dtype, device=states.device)
        self._weights = {}

    def weights(self, queries: int) -> torch.Tensor:
        """(n, R, h, w) region shares at a layer with `queries` cells on the latent's aspect ratio."""
        lh, lw = self.latent_hw
        f = math.sqrt(lh * lw / queries)
        h, w = round(lh / f), round(lw / f)
        if h * w != queries:
            raise ValueError(f"cannot lay {queries} attention queries on a grid of the latent's shape {lh}x{lw}")
        if (h, w) not in self._weights:
            n_regions = self.states.shape[1]
            per = [torch.cat([region_weights(b, h, w), torch.zeros(n_regions - len(b), h, w)]) for b in self.boxes]
            self._weights[(h, w)] = torch.stack(per).to(self.states.device, self.states.dtype)
        return self._weights[(h, w)]


class RegionalProcessor:
    """Runs the layer's own processor for the base prompt and for each region, and composes them (see the
    module docstring); self-attention and calls without regions go to the layer's processor untouched."""

    def __init__(self, original, state: RegionalState):
        self.original, self.state = original, state

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, *args, **kwargs):
        out = self.original(attn, hidden_states, encoder_hidden_states, attention_mask, *args, **kwargs)
        st = self.state
        if encoder_hidden_states is None or st.states is None:
            return out
        n, n_regions = st.states.shape[:2]
        batch = hidden_states.shape[0]
        if batch not in (n, 2 * n):
            raise RuntimeError(f"regional attention was set for {n} images but a layer got a batch of {batch}")
        x = hidden_states[batch - n:]  # the conditional half: diffusers concatenates [uncond, cond]
        xr = x.repeat_interleave(n_regions, dim=0)  # (n * R, ...) each image once per region
        ctx = st.states.flatten(0, 1)  # (n * R, T, D)
        mask = None if attention_mask is None else attention_mask[batch - n:].repeat_interleave(n_regions, dim=0)
        out_r = self.original(attn, xr, ctx, mask, *args, **kwargs).unflatten(0, (n, n_regions))  # (n, R, ...)
        queries = out_r.shape[2] if out_r.ndim == 4 else out_r.shape[-2] * out_r.shape[-1]
        w = st.weights(queries)  # (n, R, h, w)
        w = w.flatten(2).unsqueeze(-1) if out_r.ndim == 4 else w.unsqueeze(2)  # (n, R, Q, 1) or (n, R, 1, h, w)
        regional = (w * out_r).sum(1)
        r = st.base_ratio.view(n, *([1] * (regional.ndim - 1)))
        mixed = r * out[batch - n:] + (1 - r) * regional
        return mixed if batch == n else torch.cat([out[:batch - n], mixed])


def check_unet(pipe) -> None:
    """Refuse a pipeline without a UNet (regional prompting composes the UNet's cross-attention layers)."""
    net = denoiser(pipe)
    if getattr(pipe, "unet", None) is None:
        raise ValueError(f"regional prompting needs a UNet (SD-family pipeline); {type(pipe).__name__} denoises "
                         f"with a {type(net).__name__}")
    if not cross_attention_layers(net):
        raise ValueError(f"{type(net).__name__} of {type(pipe).__name__} has no cross-attention layers to compose")


@contextmanager
def regional_attention(pipe) -> Iterator[RegionalState]:
    """Install a RegionalProcessor on every cross-attention layer of the UNet; the original processors are
    put back on exit. Set the regions of each call with `state.set(...)` (generate_regional does)."""
    check_unet(pipe)
    net = pipe.unet
    state = RegionalState()
    before = dict(net.attn_processors)
    wanted = set(cross_attention_layers(net))
    net.set_attn_processor({k: RegionalProcessor(p, state) if k in wanted else p for k, p in before.items()})
    try:
        yield state
    finally:
        net.set_attn_processor(before)


# ---------------------------------------------------------------------------- generation
def _text(prompt) -> str:
    return prompt if isinstance(prompt, str) else prompt.text  # a str or a prompts.Prompt


def generate_regional(pipe, prompts: Sequence, plans: Sequence, seeds: Sequence[int], steps: int = 10,
                      guidance: float = 4.0, height: int | None = None, width: int | None = None,
                      batch_size: int = 8, generator_device: str = "cpu") -> list:
    """PIL images of every (prompt, seed), prompt-major (the order of `generate.make_jobs`), each prompt
    drawn with its plan (a Plan, a planner result with `.plan`, or None for the plain prompt) on the
    engine's per-seed noise."""
    # 1. Check inputs before any pipeline work
    check_unet(pipe)
    if len(plans) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(plans)} plans: give one plan (or None) per prompt")
    texts = [_text(p) for p in prompts]
    plans = [check_plan(getattr(p, "plan", p)) if p is not None else Plan.single(t) for p, t in zip(plans, texts,
                                                                                                     strict=True)]
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    size = int(pipe.unet.config.sample_size) * int(getattr(pipe, "vae_scale_factor", 8))
    height, width = height or size, width or size
    shape = latent_shape(pipe, height, width)
    device, dtype = pipe.device, pipe.dtype
    # 2. Encode each distinct regional prompt once, alone
    unique = list(dict.fromkeys(p for plan in plans for p in plan.prompts))
    for problem in prompt_problems(pipe, unique):  # a planner's words the text encoder does not know
        log.warning("regional %s", problem)
    encoded = dict(zip(unique, encode_text(pipe, unique, device)[0].to(dtype), strict=True))
    # 3. Batches of (prompt, seed) jobs, prompt-major; each image gets its plan's regions
    jobs = [(i, s) for i in range(len(texts)) for s in seeds]
    extra = call_kwargs(pipe)
    images = []
    with regional_attention(pipe) as state:
        for k in range(0, len(jobs), batch_size):
            batch = jobs[k:k + batch_size]
            batch_plans = [plans[i] for i, _ in batch]
            n_regions = max(len(p.prompts) for p in batch_plans)
            states = torch.stack([torch.stack([encoded[q] for q in p.prompts]
                                              + [encoded[p.prompts[0]]] * (n_regions - len(p.prompts)))
                                  for p in batch_plans])  # (n, R, T, D); padded regions get weight 0
            state.set(states, [p.boxes for p in batch_plans], [float(p.base_ratio) for p in batch_plans],
                      tuple(shape[1:]))
            drawn = [seed_draw(s, shape, generator_device) for _, s in batch]
            latents = torch.stack([noise for noise, _ in drawn]).to(device, dtype)  # (n, C, h, w)
            with torch.inference_mode():
                images += pipe(prompt=[texts[i] for i, _ in batch], latents=latents,
                               generator=[g for _, g in drawn], num_inference_steps=steps, guidance_scale=guidance,
                               height=height, width=width, output_type="pil", **extra).images
    return images
