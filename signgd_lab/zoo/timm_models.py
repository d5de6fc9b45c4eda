"""Tiny ConvNeXt, MLP-Mixer, ResMLP and ViT built from timm's own classes (random init,
trained here on 16x16 upsampled digits; nothing is downloaded)."""
from __future__ import annotations

from functools import partial

from torch import nn

from .registry import ZooEntry, register_model


def digits_convnext() -> nn.Module:
    """timm ConvNeXt on 32x32 digits: 4x4 patchify stem (-> 8x8), four stages of one block
    (8, 4, 2, 1 px), dims 8..32, 3x3 depthwise kernels."""
    from timm.models.convnext import ConvNeXt

    return ConvNeXt(in_chans=1, num_classes=10, depths=(1, 1, 1, 1), dims=(8, 16, 24, 32),
                    kernel_sizes=3)


def digits_mixer() -> nn.Module:
    """timm MlpMixer: 16 patches of 4x4, 2 blocks, width 32."""
    from timm.models.mlp_mixer import MlpMixer

    return MlpMixer(num_classes=10, img_size=16, in_chans=1, patch_size=4, num_blocks=2,
                    embed_dim=32, mlp_ratio=(0.5, 2.0))


def digits_resmlp() -> nn.Module:
    """timm ResMLP (MlpMixer with ResBlock and Affine norm): 16 patches, 2 blocks, width 32."""
    from timm.layers import Mlp
    from timm.models.mlp_mixer import Affine, MlpMixer, ResBlock

    return MlpMixer(num_classes=10, img_size=16, in_chans=1, patch_size=4, num_blocks=2,
                    embed_dim=32, mlp_ratio=2, block_layer=partial(ResBlock, init_values=0.1),
                    norm_layer=Affine, mlp_layer=Mlp)


def digits_vit() -> nn.Module:
    """timm VisionTransformer: 16 patches of 4x4, depth 2, width 32, 2 heads, mean pooling."""
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(img_size=16, patch_size=4, in_chans=1, num_classes=10, embed_dim=32,
                             depth=2, num_heads=2, mlp_ratio=2.0, class_token=False,
                             global_pool="avg")


register_model(ZooEntry("digits_convnext", digits_convnext, image_size=32, epochs=40,
                        description="timm ConvNeXt, 4 stages of 1 block, dims 8-32"))
for _name, _build, _desc in (
        ("digits_mixer", digits_mixer, "timm MlpMixer, 2 blocks, width 32"),
        ("digits_resmlp", digits_resmlp, "timm ResMLP (Affine norm), 2 blocks, width 32"),
        ("digits_vit", digits_vit, "timm ViT, depth 2, width 32, 2 heads")):
    register_model(ZooEntry(_name, _build, image_size=16, epochs=40, description=_desc))
