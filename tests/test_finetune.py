"""Fine-tuning selections: the paper's d1d2mu1u2 on Stable Diffusion 2.1's UNet shape (46.78M), patterns,
transformer blocks, LoRA targets through peft."""
import pytest
import torch

from compseed_lib import finetune as F

# Stable Diffusion 2.1's published UNet config (stabilityai/stable-diffusion-2-1, unet/config.json)
SD21_UNET = dict(
    sample_size=96, in_channels=4, out_channels=4, center_input_sample=False, flip_sin_to_cos=True, freq_shift=0,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    mid_block_type="UNetMidBlock2DCrossAttn",
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    only_cross_attention=False, block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, downsample_padding=1,
    mid_block_scale_factor=1, act_fn="silu", norm_num_groups=32, norm_eps=1e-5, cross_attention_dim=1024,
    attention_head_dim=(5, 10, 20, 20), dual_cross_attention=False, use_linear_projection=True,
    class_embed_type=None, num_class_embeds=None, upcast_attention=True, resnet_time_scale_shift="default")


@pytest.fixture(scope="module")
def sd21_unet():
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):  # the published shape, no memory for weights
        return UNet2DConditionModel(**SD21_UNET)


def test_d1d2mu1u2_on_sd21_is_the_papers_46_8m(sd21_unet):
    names = F.selected(sd21_unet, "d1d2mu1u2")
    params = dict(sd21_unet.named_parameters())
    n = sum(params[k].numel() for k in names)
    assert n == 46_776_320  # the paper: ~46.8M
    assert len(names) == 4 * (2 + 2 + 1 + 3 + 3)  # q, k of attn1, attn2 in each transformer block
    assert not any(k.startswith(("down_blocks.0", "up_blocks.3", "up_blocks.0")) for k in names)
    assert all(k.endswith(("to_q.weight", "to_k.weight")) for k in names)
    assert F.freeze_except(sd21_unet, "d1d2mu1u2") == n
    assert sum(p.numel() for p in sd21_unet.parameters() if p.requires_grad) == n


def test_patterns_blocks_and_errors():
    from compseed_lib.testing import build_tiny_pixart, build_tiny_sd

    unet = build_tiny_sd().unet
    assert F.selected(unet, "all_qk") and all("to_q" in n or "to_k" in n for n in F.selected(unet, "all_qk"))
    assert F.selected(unet, [r"^down_blocks\.0\..*attn2\.to_k\.weight$"]) == [
        "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"]
    transformer = build_tiny_pixart().transformer
    assert F.selected(transformer, blocks=[1]) == [f"transformer_blocks.1.attn{i}.to_{x}.weight"
                                                   for i in (1, 2) for x in ("q", "k")]
    for args, msg in (((unet, "d9"), "unknown selection 'd9'"), ((unet, ["(bad"]), "bad selection pattern"),
                      ((unet, ["nothing-here"]), "matches no parameter"), ((unet, []), "empty list")):
        with pytest.raises(ValueError, match=msg):
            F.selected(*args)
    with pytest.raises(ValueError, match="out of range: the model has 2 transformer blocks"):
        F.selected(transformer, blocks=[5])
    with pytest.raises(ValueError, match="no transformer_blocks"):
        F.selected(unet, blocks=[0])


def test_lora_adapts_only_the_selected_projections():
    from peft import LoraConfig, get_peft_model

    from compseed_lib.testing import build_tiny_sd

    unet = build_tiny_sd().unet
    targets = F.lora_targets(unet, "all_qk")
    model = get_peft_model(unet, LoraConfig(r=4, lora_alpha=4, target_modules=targets))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert {n.split(".lora_")[0].removeprefix("base_model.model.") for n in trainable} == set(targets)
