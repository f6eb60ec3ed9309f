"""Architecture of weft's default model (weft-shapes-v1): diffusers/transformers configs, in one place.

SD1.x topology at small width: UNet with 4 levels, 2 res blocks per level, num_heads 8,
conv proj_in/proj_out (use_linear_projection False), eps prediction; CLIP text encoder
(quick_gelu, 77 positions, real 49408-token vocabulary, heads = hidden/64); KL VAE with
4 latent channels and downsampling factor 8. Differences from SD1.5, all visible in the
tensor shapes and key names of the checkpoint: widths; no attention at the first
(16x16) UNet level; VAE with 1 res block per level (decoder: 2).
"""
import copy

LATENT_SCALE = 0.18215  # SD1.x scaling factor; the VAE's latents are standardised to fit it
IMAGE_SIZE = 128

VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4,
    down_block_types=["DownEncoderBlock2D"] * 4,
    up_block_types=["UpDecoderBlock2D"] * 4,
    block_out_channels=[32, 32, 64, 64], layers_per_block=1, norm_num_groups=32,
    act_fn="silu", sample_size=IMAGE_SIZE, scaling_factor=LATENT_SCALE,
)

TEXT = dict(
    vocab_size=49408, hidden_size=64, intermediate_size=256, num_hidden_layers=4,
    num_attention_heads=1, max_position_embeddings=77, hidden_act="quick_gelu",
    layer_norm_eps=1e-5, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
    projection_dim=64,
)

UNET = dict(
    sample_size=IMAGE_SIZE // 8, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=[32, 64, 64, 128],
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    mid_block_type="UNetMidBlock2DCrossAttn",
    cross_attention_dim=64, attention_head_dim=8,  # diffusers' SD1 naming: 8 heads
    norm_num_groups=32, act_fn="silu", use_linear_projection=False,
    flip_sin_to_cos=True, freq_shift=0,
)

# The SD1.x training schedule; ComfyUI's samplers and schedulers apply unchanged.
SCHEDULER = dict(
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
    prediction_type="epsilon", clip_sample=False, set_alpha_to_one=False, steps_offset=1,
)

CONTROLNET_HINT_CHANNELS = [16, 32, 96, 256]  # diffusers default = original cldm input_hint_block

LORA_RANK = 8
LORA_ALPHA = 8.0


def make_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(**copy.deepcopy(VAE))


def make_unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**copy.deepcopy(UNET))


def make_text():
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(**copy.deepcopy(TEXT)))


def make_controlnet(unet):
    from diffusers import ControlNetModel

    return ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=tuple(CONTROLNET_HINT_CHANNELS),
                                     conditioning_channels=3)
