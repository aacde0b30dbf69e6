"""SD 2.1's shape on a GPU: seconds per image and model FLOPs utilisation (random weights, same FLOPs).

The UNet, VAE and text encoder are built from SD 2.1's published configs (bench/sd21_configs.json, "full";
"tiny" is a small shape for the CPU test) with random weights; one image is text encoding (prompt and
empty prompt), `steps` UNet calls on the CFG batch (both halves in one forward), DDIM steps and a VAE
decode. FLOPs are counted by `torch.utils.flop_counter.FlopCounterMode` on one call of each part, not
guessed; MFU = FLOPs per image / (s per image x the GPU's dense peak for the dtype).

Usage:
    python bench/gpu_sd21.py --dtype bf16 --batch 1 2 4 8 16 [--compile] [--peak-tflops 989]
    python bench/gpu_sd21.py --shape tiny --size 32 --steps 2 --batch 1 --device cpu --dtype fp32 --reps 3
    python bench/gpu_sd21.py --device meta     # the FLOPs of one image only (no GPU, no compute): 220.8 TFLOP
Output: --out (default reports/bench/gpu_sd21.json), which `compseed bench` puts in its table.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from torch.utils.flop_counter import FlopCounterMode
from transformers import CLIPTextConfig, CLIPTextModel

HERE = Path(__file__).resolve().parent
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
PEAK_TFLOPS = {  # dense tensor-core peak, TFLOP/s, per dtype (vendor data sheets; fp32 without TF32)
    "H100": {"bf16": 989, "fp16": 989, "fp32": 67}, "H200": {"bf16": 989, "fp16": 989, "fp32": 67},
    "A100": {"bf16": 312, "fp16": 312, "fp32": 19.5}, "L4": {"bf16": 121, "fp16": 121, "fp32": 30},
    "A10": {"bf16": 125, "fp16": 125, "fp32": 31}}


def build(shape: str, device: str, dtype: torch.dtype, channels_last: bool):
    """(text encoder, UNet, VAE, scheduler) of the shape, random weights (seed 0), eval mode on `device`."""
    cfg = json.loads((HERE / "sd21_configs.json").read_text())[shape]
    torch.manual_seed(0)
    with torch.device("meta") if device == "meta" else contextlib.nullcontext():  # meta: no weights made
        text = CLIPTextModel(CLIPTextConfig(**cfg["text_encoder"]))
        unet = UNet2DConditionModel(**cfg["unet"])
        vae = AutoencoderKL(**cfg["vae"])
    for m in (text, unet, vae):
        m.to(device, dtype).eval().requires_grad_(False)
    if channels_last:
        unet.to(memory_format=torch.channels_last)
        vae.to(memory_format=torch.channels_last)
    sched = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                          prediction_type="v_prediction", clip_sample=False, set_alpha_to_one=False)
    return text, unet, vae, sched, cfg


def make_images(text, unet, vae, sched, batch: int, size: int, steps: int, guidance: float = 7.5) -> torch.Tensor:
    """`batch` images the way a mining loop makes them: CFG in one UNet batch, DDIM, VAE decode."""
    dev, dtype = unet.device, unet.dtype
    ids = torch.randint(0, text.config.vocab_size, (2 * batch, text.config.max_position_embeddings), device=dev)
    states = text(ids)[0]  # (2B, 77, D): empty prompt and prompt
    lat = torch.randn(batch, unet.config.in_channels, size // 8, size // 8, device=dev, dtype=dtype)
    sched.set_timesteps(steps, device=dev)
    for t in sched.timesteps:
        out = unet(torch.cat([lat, lat]), t, encoder_hidden_states=states).sample
        uncond, cond = out.chunk(2)
        lat = sched.step(uncond + guidance * (cond - uncond), t, lat).prev_sample
    return vae.decode(lat / vae.config.scaling_factor).sample


def flops_per_image(text, unet, vae, size: int, steps: int) -> float:
    """FLOPs of one image (batch 1): text encoder once on 2 prompts, `steps` CFG UNet calls, one decode."""
    dev, dtype = unet.device, unet.dtype
    ids = torch.zeros(2, text.config.max_position_embeddings, dtype=torch.long, device=dev)
    lat = torch.zeros(1, unet.config.in_channels, size // 8, size // 8, device=dev, dtype=dtype)
    counts = []
    with torch.inference_mode():
        for fn in (lambda: text(ids)[0],
                   lambda: unet(torch.cat([lat, lat]), 999, encoder_hidden_states=text(ids)[0]).sample,
                   lambda: vae.decode(lat).sample):
            with FlopCounterMode(display=False) as fc:
                fn()
            counts.append(fc.get_total_flops())
    return counts[0] + steps * (counts[1] - counts[0]) + counts[2]


def peak(device: str, dtype: str, given: float | None) -> float | None:
    """The GPU's dense peak TFLOP/s for `dtype` (given, else from its name), or None (CPU, unknown GPU)."""
    if given:
        return given
    if not device.startswith("cuda"):
        return None
    name = torch.cuda.get_device_name(torch.device(device))
    return next((v[dtype] for k, v in PEAK_TFLOPS.items() if k in name), None)


def main(argv: list[str] | None = None) -> dict:
    """Measure each (dtype, batch) and write the JSON; returns it."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", choices=["full", "tiny"], default="full")
    p.add_argument("--size", type=int, default=768)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--batch", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    p.add_argument("--dtype", nargs="+", choices=list(DTYPES), default=["bf16", "fp16"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--no-channels-last", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile the UNet")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--peak-tflops", type=float, help="the device's dense peak for the dtype (else from its name)")
    p.add_argument("--out", default=str(HERE.parent / "reports" / "bench" / "gpu_sd21.json"))
    a = p.parse_args(argv)
    if a.size % 8 or a.reps < 1:
        p.error(f"--size {a.size} must be a multiple of 8 and --reps {a.reps} >= 1")
    torch.backends.cuda.matmul.allow_tf32 = True
    if a.device == "meta":  # shapes only: the FLOPs of one image, counted without computing anything
        text, unet, vae, _, _ = build(a.shape, "meta", DTYPES[a.dtype[0]], False)
        tflop = flops_per_image(text, unet, vae, a.size, a.steps) / 1e12
        print(f"{tflop:.1f} TFLOP per {a.size} px image, {a.steps} CFG steps ({a.shape} shape)")
        return {"shape": a.shape, "size": a.size, "steps": a.steps, "tflop_per_image": tflop}
    rows, tflop = [], None
    for name in a.dtype:
        text, unet, vae, sched, _ = build(a.shape, a.device, DTYPES[name], not a.no_channels_last)
        tflop = flops_per_image(text, unet, vae, a.size, a.steps) / 1e12
        if a.compile:
            unet = torch.compile(unet)
        for b in a.batch:
            def once(text=text, unet=unet, vae=vae, sched=sched, b=b) -> float:
                if a.device.startswith("cuda"):
                    torch.cuda.synchronize()
                t = time.perf_counter()
                with torch.inference_mode():
                    make_images(text, unet, vae, sched, b, a.size, a.steps)
                if a.device.startswith("cuda"):
                    torch.cuda.synchronize()
                return (time.perf_counter() - t) / b

            once()  # warm-up (cuDNN autotune, compile)
            times = [once() for _ in range(a.reps)]
            s = statistics.median(times)
            pk = peak(a.device, name, a.peak_tflops)
            rows.append({"dtype": name, "batch": b, "compile": a.compile, "channels_last": not a.no_channels_last,
                         "s_per_image": {"median": s, "min": min(times), "max": max(times), "n": len(times)},
                         "mfu": tflop / (s * pk) if pk else None, "peak_tflops": pk})
    result = {"device": torch.cuda.get_device_name(0) if a.device.startswith("cuda") else a.device,
              "shape": a.shape, "size": a.size, "steps": a.steps, "tflop_per_image": tflop,
              "peak_tflops": rows[-1]["peak_tflops"], "attention": "SDPA (diffusers AttnProcessor2_0)",
              "torch": torch.__version__, "rows": rows}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=1) + "\n")
    for r in rows:
        print(f"{r['dtype']} batch {r['batch']}: {r['s_per_image']['median']:.3f} s/image"
              + (f", MFU {100 * r['mfu']:.1f}%" if r["mfu"] else ""))
    return result


if __name__ == "__main__":
    main()
