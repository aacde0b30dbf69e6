"""The mini-world generators, built from configs: Stable Diffusion in miniature (architecture "unet") and
PixArt-alpha in miniature (architecture "pixart").

Components (all genuine diffusers/transformers classes, so `StableDiffusionPipeline.from_pretrained`
loads the saved folder and nothing downstream special-cases it):
  tokenizer     a word-level `PreTrainedTokenizerFast` over the mini world's words (tokenizers' WordLevel)
  text_encoder  `CLIPTextModel` from a small `CLIPTextConfig`
  vae           `AutoencoderKL`: 32x32x3 images <-> 8x8x4 latents (3 blocks: 2 downsamples)
  unet          `UNet2DConditionModel` with SD's block layout: cross-attention in down_blocks.0-2,
                mid_block and up_blocks.1-3, so the paper's "d1d2mu1u2" names exist and hold attention
  scheduler     DDPM for training, DDIM (trailing spacing) for sampling; v-prediction on a
                zero-terminal-SNR schedule, which lets the prompt (not the seed) set the image mean

The "pixart" architecture swaps two parts and the pipeline class, keeping tokenizer words, VAE, latents
and sampler:
  text_encoder  `T5EncoderModel` (relative position buckets, no pooled output; EOS-terminated ids, no BOS)
  transformer   `PixArtTransformer2DModel`: DiT blocks (self-attention, cross-attention to the text, MLP)
                on 2x2 latent patches, timestep through adaLN-single
  pipeline      `PixArtAlphaPipeline` (resolution binning off: pipelines.call_kwargs)

Usage:
    spec = MiniModelSpec()                     # or MiniModelSpec.tiny(), MiniModelSpec.pixart(), ...
    tok = build_tokenizer(spec); te = build_text_encoder(spec, tok); vae = build_vae(spec)
    net = build_denoiser(spec)                 # UNet2DConditionModel or PixArtTransformer2DModel
    pipe = assemble_pipeline(spec, tok, te, vae, net); pipe.save_pretrained(folder)
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ... import prompts as P
from .captions import WORDS as WEB_WORDS

SPECIALS = ["[PAD]", "[UNK]", "<|startoftext|>", "<|endoftext|>"]
ARCHITECTURES = ("unet", "pixart")


@dataclass
class MiniModelSpec:
    """Sizes of every component; `tiny()` is the test configuration."""

    architecture: str = "unet"  # "unet" (SD-style) or "pixart" (PixArt-alpha-style)
    image_size: int = 32
    vae_channels: list[int] = field(default_factory=lambda: [16, 32, 64])
    latent_channels: int = 4
    unet_channels: list[int] = field(default_factory=lambda: [64, 128, 128, 128])
    unet_layers_per_block: int = 1
    unet_heads: int = 4
    text_dim: int = 128
    text_layers: int = 3
    text_heads: int = 4
    max_tokens: int = 16
    num_train_timesteps: int = 1000
    prediction_type: str = "v_prediction"
    zero_terminal_snr: bool = True
    # architecture "pixart" only
    dit_layers: int = 8
    dit_heads: int = 4
    dit_head_dim: int = 32
    patch_size: int = 2

    @classmethod
    def tiny(cls, architecture: str = "unet") -> MiniModelSpec:
        """A few-thousand-parameter version for tests (same block layout)."""
        return cls(architecture=architecture, vae_channels=[8, 16, 16], unet_channels=[16, 16, 32, 32],
                   unet_heads=2, text_dim=32, text_layers=1, text_heads=2, dit_layers=2, dit_heads=2,
                   dit_head_dim=8)

    @classmethod
    def pixart(cls) -> MiniModelSpec:
        """The shipped PixArt-alpha-shaped generator's sizes."""
        return cls(architecture="pixart")

    @property
    def denoiser(self) -> str:
        """The pipeline component that denoises: "unet" or "transformer"."""
        return "transformer" if self.architecture == "pixart" else "unet"

    def check(self) -> MiniModelSpec:
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"model spec architecture must be one of {ARCHITECTURES}, got {self.architecture!r}")
        return self

    def to_json(self) -> str:
        """JSON for the model card and the training record."""
        return json.dumps(asdict(self), indent=2)


def vocabulary(prompt_dir: str | Path | None = None) -> list[str]:
    """Every word the mini world's prompts and captions use (sorted, specials first)."""
    world = prompt_dir or "miniworld"
    words: set[str] = set()
    for o in P.world_objects(world):
        words.update(o.singular.lower().split() + o.plural.lower().split())
    for bg in P.world_backgrounds(world):
        words.update(bg.lower().split())
    for phrase in P.RELATION_PHRASES:
        words.update(phrase.split())
    words.update(P.COUNT_WORDS.values())
    words.update({",", "a", "an", "and", "the"})
    words.update(WEB_WORDS)  # what web-like training captions add ("some balls", "a few stars")
    return SPECIALS + sorted(words)


def build_tokenizer(spec: MiniModelSpec, prompt_dir: str | Path | None = None):
    """Word-level fast tokenizer: lower-cases, splits on spaces and punctuation, wraps in BOS/EOS
    (CLIP's way) or, for "pixart", ends with EOS only (T5's way; pad id 0)."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(vocabulary(prompt_dir))}
    tok = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                 pre_tokenizers.Punctuation()])
    bos, eos = vocab["<|startoftext|>"], vocab["<|endoftext|>"]
    single = "$A <|endoftext|>" if spec.architecture == "pixart" else "<|startoftext|> $A <|endoftext|>"
    tok.post_processor = processors.TemplateProcessing(
        single=single, special_tokens=[("<|startoftext|>", bos), ("<|endoftext|>", eos)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=spec.max_tokens,
                                   bos_token="<|startoftext|>", eos_token="<|endoftext|>",
                                   pad_token="[PAD]", unk_token="[UNK]")


def build_text_encoder(spec: MiniModelSpec, tokenizer):
    """A small CLIPTextModel (its pooled output is the EOS token, as in CLIP) or, for "pixart", a small
    T5EncoderModel."""
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    if spec.architecture == "pixart":
        return T5EncoderModel(T5Config(
            vocab_size=len(tokenizer), d_model=spec.text_dim, d_kv=spec.text_dim // spec.text_heads,
            d_ff=4 * spec.text_dim, num_layers=spec.text_layers, num_heads=spec.text_heads,
            relative_attention_num_buckets=8, relative_attention_max_distance=spec.max_tokens,
            feed_forward_proj="gated-gelu", pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.pad_token_id))
    cfg = CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=spec.text_dim,
                         intermediate_size=4 * spec.text_dim, num_hidden_layers=spec.text_layers,
                         num_attention_heads=spec.text_heads, max_position_embeddings=spec.max_tokens,
                         projection_dim=spec.text_dim, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    return CLIPTextModel(cfg)


def build_vae(spec: MiniModelSpec):
    """AutoencoderKL with len(vae_channels)-1 downsamples (32 px -> 8x8 latents by default)."""
    from diffusers import AutoencoderKL

    n = len(spec.vae_channels)
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=spec.latent_channels,
                         down_block_types=["DownEncoderBlock2D"] * n, up_block_types=["UpDecoderBlock2D"] * n,
                         block_out_channels=list(spec.vae_channels), layers_per_block=1,
                         norm_num_groups=8, sample_size=spec.image_size)


def build_unet(spec: MiniModelSpec):
    """UNet2DConditionModel with SD's down/mid/up naming; text also enters the time embedding."""
    from diffusers import UNet2DConditionModel

    latent = spec.image_size // 2 ** (len(spec.vae_channels) - 1)
    return UNet2DConditionModel(
        sample_size=latent, in_channels=spec.latent_channels, out_channels=spec.latent_channels,
        down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
        up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
        block_out_channels=list(spec.unet_channels), layers_per_block=spec.unet_layers_per_block,
        cross_attention_dim=spec.text_dim, attention_head_dim=spec.unet_heads,
        norm_num_groups=8,
        # pooled text in the time embedding: global properties (background colour) need not be
        # carried by cross-attention alone
        addition_embed_type="text", addition_embed_type_num_heads=spec.unet_heads)


def build_transformer(spec: MiniModelSpec):
    """PixArtTransformer2DModel: `dit_layers` DiT blocks, adaLN-single, cross-attention to T5 states;
    predicts only the target (out_channels = latent channels: no learned variance)."""
    from diffusers import PixArtTransformer2DModel

    latent = spec.image_size // 2 ** (len(spec.vae_channels) - 1)
    return PixArtTransformer2DModel(
        sample_size=latent, num_layers=spec.dit_layers, patch_size=spec.patch_size,
        attention_head_dim=spec.dit_head_dim, num_attention_heads=spec.dit_heads,
        caption_channels=spec.text_dim, in_channels=spec.latent_channels, out_channels=spec.latent_channels,
        cross_attention_dim=spec.dit_heads * spec.dit_head_dim, attention_bias=True,
        activation_fn="gelu-approximate", num_embeds_ada_norm=spec.num_train_timesteps,
        norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=1e-6)


def build_denoiser(spec: MiniModelSpec):
    """The denoising network of `spec.architecture`."""
    return build_transformer(spec) if spec.check().architecture == "pixart" else build_unet(spec)


def build_schedulers(spec: MiniModelSpec):
    """(training scheduler, sampling scheduler) sharing one beta schedule."""
    from diffusers import DDIMScheduler, DDPMScheduler

    common = dict(num_train_timesteps=spec.num_train_timesteps, beta_schedule="scaled_linear",
                  beta_start=0.00085, beta_end=0.012, prediction_type=spec.prediction_type,
                  rescale_betas_zero_snr=spec.zero_terminal_snr, clip_sample=False, steps_offset=1,
                  timestep_spacing="trailing")
    return DDPMScheduler(**common), DDIMScheduler(**common, set_alpha_to_one=False)


def assemble_pipeline(spec: MiniModelSpec, tokenizer, text_encoder, vae, unet):
    """A StableDiffusionPipeline (no safety checker: the mini world is shapes) or, for "pixart", a
    PixArtAlphaPipeline over the components; `unet` is the denoiser of either kind."""
    from diffusers import PixArtAlphaPipeline, StableDiffusionPipeline

    _, sampler = build_schedulers(spec)
    if spec.architecture == "pixart":
        return PixArtAlphaPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=unet,
                                   scheduler=sampler)
    return StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=sampler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def count_parameters(module) -> int:
    """Number of parameters of a torch module."""
    return sum(p.numel() for p in module.parameters())
