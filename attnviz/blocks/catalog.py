"""The built-in blocks: every type of timm 1.0's ``create_attn``, plus triplet, FCA, SRM and BAM.

timm's implementations are used where they exist (wrapped where their
attention weights were not a module of their own, or where identity init
or an argument needed care); the four blocks timm lacks are written in the
same style. Each entry says what the block attends over (``kind``), its
paper, its capturable attention values, and how ``out_channels`` /
``stride`` / ``feat_size`` reach its factory.
"""

from __future__ import annotations

from functools import partial

from torch import nn

from .registry import AttentionInfo, add_builtin

__all__: list[str] = []

_REPLACE = {"out_channels": "out_channels", "stride": "stride"}
_REPLACE_TIMM_SA = {"out_channels": "dim_out", "stride": "stride", "feat_size": "feat_size"}


def _add(name, factory, kind, description, reference, values, **extra) -> None:
    add_builtin(
        AttentionInfo(
            name,
            factory,
            description,
            reference,
            builtin=True,
            kind=kind,
            values=tuple(values),
            **extra,
        )
    )


def _spatial(channels: int, kernel_size: int = 7, gate_layer: str = "sigmoid") -> nn.Module:
    from timm.layers.cbam import SpatialAttn

    return SpatialAttn(kernel_size=kernel_size, gate_layer=gate_layer)


def _register() -> None:
    from timm.layers import CecaModule, EcaModule, EffectiveSEModule, SEModule
    from timm.layers.cbam import CbamModule, ChannelAttn

    from .bam import BAM
    from .conv_attention import SelectiveKernel, SplitAttn
    from .fca import FcaModule
    from .gather_excite import GatherExcite
    from .global_context import GlobalContextBlock
    from .lambda_layer import LambdaLayer
    from .non_local import BatNonLocalAttn, NonLocalAttn
    from .self_attention import BottleneckAttn, HaloAttn
    from .simam import SimAM
    from .srm import SRM
    from .timm_gates import CoordAttn, EfficientLocalAttn, LightCbam, SimpleCoordAttn, StripAttn
    from .triplet import TripletAttention

    eca = "Wang et al., ECA-Net, CVPR 2020, arXiv:1910.03151"
    cbam = "Woo et al., CBAM, ECCV 2018, arXiv:1807.06521"
    gcnet = "Cao et al., GCNet, ICCVW 2019, arXiv:1904.11492"
    coord = "Hou et al., Coordinate Attention, CVPR 2021, arXiv:2103.02907"
    # -- channel ----------------------------------------------------------------
    _add(
        "se",
        SEModule,
        "channel",
        "Squeeze-and-Excitation: GAP -> 1x1 bottleneck MLP -> sigmoid gate per channel",
        "Hu et al., CVPR 2018, arXiv:1709.01507",
        ["gate"],
    )
    _add(
        "ese",
        EffectiveSEModule,
        "channel",
        "Effective SE: GAP -> one 1x1 conv C->C -> hard-sigmoid gate",
        "Lee & Park, CenterMask, CVPR 2020, arXiv:1911.06667",
        ["gate"],
    )
    _add(
        "eca",
        EcaModule,
        "channel",
        "Efficient Channel Attention: GAP -> 1-D conv across channels (adaptive k) -> sigmoid",
        eca,
        ["gate"],
    )
    _add(
        "ecam",
        partial(EcaModule, use_mlp=True),
        "channel",
        "ECA with a 1-D conv MLP across channels (timm's 'ecam' experiment)",
        f"{eca}; MLP variant: timm",
        ["gate"],
    )
    _add(
        "ceca",
        CecaModule,
        "channel",
        "ECA with circular padding across channels",
        f"{eca}; circular padding: timm",
        ["gate"],
    )
    _add(
        "cbam_channel",
        ChannelAttn,
        "channel",
        "CBAM's channel attention alone: avg- and max-pooled shared MLP, summed, sigmoid",
        cbam,
        ["gate"],
    )
    _add(
        "gc",
        GlobalContextBlock,
        "channel",
        "Global context: softmax attention pooling -> bottleneck transform with LayerNorm (1/16) -> added to every position",
        gcnet,
        ["attn_pool"],
    )
    _add(
        "gca",
        partial(GlobalContextBlock, rd_ratio=1.0 / 8),
        "channel",
        "timm's 'gca': global context with add fusion at ratio 1/8, last layer zeroed as in the paper",
        gcnet,
        ["attn_pool"],
    )
    _add(
        "gc_scale",
        partial(GlobalContextBlock, fuse_add=False, fuse_scale=True, rd_ratio=1.0 / 8),
        "channel",
        "timm's 'gc': global context with multiplicative (sigmoid gate) fusion at ratio 1/8",
        f"{gcnet}; scale fusion: timm",
        ["attn_pool", "gate"],
    )
    _add(
        "ge",
        GatherExcite,
        "channel",
        "Gather-Excite: gather over an extent, excite with a bottleneck MLP (fixed timm 'ge')",
        "Hu et al., Gather-Excite, NeurIPS 2018, arXiv:1810.12348",
        ["gate"],
        site_args={"feat_size": "feat_size"},
    )
    _add(
        "fca",
        FcaModule,
        "channel",
        "FcaNet: per-group 2-D DCT pooling (top-16 frequencies) -> bottleneck MLP -> sigmoid",
        "Qin et al., FcaNet, ICCV 2021, arXiv:2012.11879",
        ["gate"],
    )
    _add(
        "srm",
        SRM,
        "channel",
        "Style-based recalibration: per-channel mean and std -> channel-wise FC -> BN -> sigmoid",
        "Lee et al., SRM, ICCV 2019, arXiv:1903.10829",
        ["gate"],
    )
    # -- spatial, and channel + spatial --------------------------------------------
    _add(
        "cbam_spatial",
        _spatial,
        "spatial",
        "CBAM's spatial attention alone: 7x7 conv over [mean, max] across channels",
        cbam,
        ["gate"],
    )
    _add(
        "cbam",
        CbamModule,
        "channel+spatial",
        "CBAM: channel gate (avg+max pooled shared MLP) then spatial gate (7x7 conv on channel avg/max)",
        cbam,
        ["channel.gate", "spatial.gate"],
    )
    _add(
        "lcbam",
        LightCbam,
        "channel+spatial",
        "Light CBAM: avg+max pooled once (channel) and averaged (spatial) before one conv each",
        f"{cbam}; light variant: timm",
        ["channel.gate", "spatial.gate"],
    )
    _add(
        "bam",
        BAM,
        "channel+spatial",
        "BAM: x * (1 + sigmoid(channel MLP + dilated spatial convs)), a residual gate",
        "Park et al., BAM, BMVC 2018, arXiv:1807.06514",
        ["gate"],
    )
    _add(
        "triplet",
        TripletAttention,
        "channel+spatial",
        "Triplet attention: Z-pool + 7x7 conv gates on the (C,W), (C,H) and (H,W) planes, averaged",
        "Misra et al., Rotate to Attend, WACV 2021, arXiv:2010.03045",
        ["cw.gate", "ch.gate", "hw.gate"],
    )
    _add(
        "coord",
        CoordAttn,
        "channel+spatial",
        "Coordinate attention: pooling along H and W -> shared 1x1 -> two directional gates",
        coord,
        ["gate", "gate_1"],
    )
    _add(
        "scoord",
        SimpleCoordAttn,
        "channel+spatial",
        "Simple coordinate attention: linear layers, no norm, one gate of the summed H and W logits",
        f"{coord}; simplified: timm",
        ["gate"],
    )
    _add(
        "ela",
        EfficientLocalAttn,
        "channel+spatial",
        "Efficient local attention: H and W strip pools -> 1-D depthwise conv + GroupNorm -> two gates",
        "Xu & Wan, ELA, arXiv:2403.01123",
        ["gate", "gate_1"],
    )
    _add(
        "strip",
        StripAttn,
        "channel+spatial",
        "Strip attention: H and W strip pools -> depthwise 1-D convs -> one gate of their sum",
        "after Hou et al., Strip Pooling, CVPR 2020, arXiv:2003.13328; minimal form: timm",
        ["gate"],
    )
    _add(
        "simam",
        SimAM,
        "channel+spatial",
        "SimAM: parameter-free 3-D attention from a per-neuron energy function",
        "Yang et al., SimAM, ICML 2021",
        ["gate"],
    )
    # -- self-attention -----------------------------------------------------------------
    _add(
        "nl",
        NonLocalAttn,
        "self-attention",
        "Non-local block: softmax(t^T p) over all positions, residual with a zero-initialised BN",
        "Wang et al., Non-local Neural Networks, CVPR 2018, arXiv:1711.07971",
        ["attention"],
    )
    _add(
        "bat",
        BatNonLocalAttn,
        "self-attention",
        "BAT: grouped bilinear attentional transform y = P x Q over a block grid, residual",
        "Chi et al., Non-Local Neural Networks With Grouped Bilinear Attentional Transforms, CVPR 2020",
        ["ba.rows", "ba.cols"],
        site_args={"feat_size": "feat_size"},
    )
    _add(
        "bottleneck",
        BottleneckAttn,
        "self-attention",
        "BoTNet: global multi-head self-attention with 2-D relative position logits (fixed map size)",
        "Srinivas et al., Bottleneck Transformers, CVPR 2021, arXiv:2101.11605",
        ["attention"],
        replaces=True,
        identity_exact=False,
        site_args=_REPLACE_TIMM_SA,
    )
    _add(
        "halo",
        HaloAttn,
        "self-attention",
        "HaloNet: blocked local self-attention, each block attending to a haloed window",
        "Vaswani et al., Scaling Local Self-Attention, CVPR 2021, arXiv:2103.12731",
        ["attention"],
        replaces=True,
        identity_exact=False,
        site_args=_REPLACE_TIMM_SA,
    )
    _add(
        "lambda",
        LambdaLayer,
        "self-attention",
        "Lambda layer: content and position lambdas applied to each query (no attention map; keys softmax-pooled)",
        "Bello, LambdaNetworks, ICLR 2021, arXiv:2102.08602",
        ["keys"],
        replaces=True,
        identity_exact=False,
        site_args=_REPLACE_TIMM_SA,
    )
    # -- attention-like convolutions -----------------------------------------------------
    _add(
        "sk",
        SelectiveKernel,
        "conv",
        "Selective kernel: 3x3 branches of dilation 1 and 2, mixed per channel by a softmax across branches",
        "Li et al., Selective Kernel Networks, CVPR 2019, arXiv:1903.06586",
        ["attn.gate"],
        replaces=True,
        identity_exact=False,
        site_args=_REPLACE,
    )
    _add(
        "splat",
        SplitAttn,
        "conv",
        "Split attention (ResNeSt): radix groups of one conv, mixed per channel by a radix softmax",
        "Zhang et al., ResNeSt, CVPRW 2022, arXiv:2004.08955",
        ["rsoftmax"],
        replaces=True,
        identity_exact=False,
        site_args=_REPLACE,
    )


_register()
