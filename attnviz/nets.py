"""A small CIFAR-style ResNet for the offline demo and the tests.

``SmallResNet`` mirrors torchvision's ResNet layout (``conv1``/``bn1``/``relu``/
``maxpool`` stem, stages ``layer1``..``layerN`` of ``BasicBlock``, ``avgpool``,
``fc``) so that everything written for torchvision ResNets (attention surgery on
the residual branch, layer names for CAMs) works on it, but it is small enough to
train on a CPU in minutes. It is plain enough for ``torch.fx.symbolic_trace``.

>>> import torch
>>> model = small_resnet(num_classes=10, **DEMO_NET)
>>> model(torch.randn(2, 3, 64, 64)).shape
torch.Size([2, 10])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .errors import AttnvizError

__all__ = ["DEMO_NET", "BasicBlock", "SmallResNet", "small_resnet"]

#: Network used by the demo on ``SyntheticShapes`` (64x64, 10 classes): 78k
#: parameters; the stride-2 stem keeps the cost low on CPU (~900 training images/s
#: on 2 idle cores) while the last stage still has an 8x8 map for CAMs. Trained
#: with ``attnviz.data.DEMO_TRAINING`` it reaches ~98% val accuracy in about
#: 70-85 s on 2 CPU threads (numbers and recipe in that constant's comment).
DEMO_NET: dict[str, Any] = {
    "widths": (16, 32, 64),
    "depths": (1, 1, 1),
    "stem_stride": 2,
}


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """torchvision-style residual block: two 3x3 convs, identity or 1x1 shortcut.

    ``forward``: ``conv1 -> bn1 -> relu -> conv2 -> bn2``, then ``+= identity``
    (``downsample(x)`` when set) and ``relu``. Channel attention goes on the
    residual branch after ``bn2``, before the add.
    """

    expansion = 1

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)
        out = self.conv2(out)
        out = self.bn2(out)
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        out = self.relu(out)
        return out


class SmallResNet(nn.Module):
    """CIFAR-style ResNet: 3x3 stem, one stage per width, GAP, linear classifier.

    Stage ``i`` (``layer{i+1}``) has ``depths[i]`` blocks (default 1) of
    ``widths[i]`` channels; every stage after the first halves the resolution.
    The stem is a 3x3 conv with ``stem_stride``, plus a 3x3/2 max-pool if
    ``stem_pool`` (``maxpool`` is ``nn.Identity`` otherwise). ``num_features`` is the
    width of the pooled features, ``num_classes`` the output size (0: no
    classifier, ``fc`` is ``nn.Identity`` and the model returns pooled features).
    """

    def __init__(
        self,
        num_classes: int = 10,
        *,
        in_chans: int = 3,
        widths: Sequence[int] = (16, 32, 64),
        depths: Sequence[int] | None = None,
        stem_stride: int = 1,
        stem_pool: bool = False,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        if depths is None:
            depths = (1,) * len(tuple(widths))
        _check_config(num_classes, in_chans, widths, depths, stem_stride)
        widths, depths = tuple(int(w) for w in widths), tuple(int(d) for d in depths)
        self.widths, self.depths = widths, depths
        self.conv1 = nn.Conv2d(in_chans, widths[0], 3, stride=stem_stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1) if stem_pool else nn.Identity()
        inplanes = widths[0]
        for i, (width, depth) in enumerate(zip(widths, depths)):
            stage = self._make_stage(inplanes, width, depth, stride=1 if i == 0 else 2)
            self.add_module(f"layer{i + 1}", stage)
            inplanes = width
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.num_features = widths[-1]
        self.num_classes = num_classes
        self.fc: nn.Module = (
            nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()
        )
        self._init_weights(zero_init_residual)

    @staticmethod
    def _make_stage(inplanes: int, planes: int, depth: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or inplanes != planes:
            downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )
        blocks = [BasicBlock(inplanes, planes, stride, downsample)]
        blocks += [BasicBlock(planes, planes) for _ in range(depth - 1)]
        return nn.Sequential(*blocks)

    def _init_weights(self, zero_init_residual: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:  # each block starts as the identity (Goyal et al., 2017)
            for m in self.modules():
                if isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    @property
    def stages(self) -> list[nn.Sequential]:
        """The stages ``layer1``, ``layer2``, ... in order."""
        return [getattr(self, f"layer{i + 1}") for i in range(len(self.widths))]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map of the last stage, ``[N, num_features, h, w]``."""
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.relu(x)
        x = self.maxpool(x)
        for i in range(len(self.widths)):
            x = getattr(self, f"layer{i + 1}")(x)
        return x

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """Global average pool and classifier on a ``forward_features`` map."""
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        """Replace ``fc`` by a freshly initialised one (0: ``nn.Identity``), like timm."""
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise AttnvizError(f"num_classes must be an int >= 0, got {num_classes!r}")
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()


def _check_config(
    num_classes: int, in_chans: int, widths: Sequence[int], depths: Sequence[int], stem_stride: int
) -> None:
    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    if not is_int(num_classes) or num_classes < 0:
        raise AttnvizError(f"num_classes must be an int >= 0, got {num_classes!r}")
    if not is_int(in_chans) or in_chans < 1:
        raise AttnvizError(f"in_chans must be an int >= 1, got {in_chans!r}")
    widths, depths = tuple(widths), tuple(depths)
    if not widths or not all(is_int(w) and w >= 1 for w in widths):
        raise AttnvizError(f"widths must be a non-empty sequence of ints >= 1, got {widths!r}")
    if len(depths) != len(widths) or not all(is_int(d) and d >= 1 for d in depths):
        raise AttnvizError(
            f"depths must hold one int >= 1 per stage ({len(widths)} stages), got {depths!r}"
        )
    if stem_stride not in (1, 2, 4):
        raise AttnvizError(f"stem_stride must be 1, 2 or 4, got {stem_stride!r}")


def small_resnet(
    num_classes: int = 10,
    *,
    in_chans: int = 3,
    widths: Sequence[int] = (16, 32, 64),
    depths: Sequence[int] | None = None,
    stem_stride: int = 1,
    stem_pool: bool = False,
    zero_init_residual: bool = False,
) -> SmallResNet:
    """Build a :class:`SmallResNet`; ``small_resnet(**DEMO_NET)`` is the demo network.

    >>> m = small_resnet(5, widths=(8, 16), depths=(1, 2))
    >>> [name for name, _ in m.named_children()]
    ['conv1', 'bn1', 'relu', 'maxpool', 'layer1', 'layer2', 'avgpool', 'fc']
    """
    return SmallResNet(
        num_classes,
        in_chans=in_chans,
        widths=widths,
        depths=depths,
        stem_stride=stem_stride,
        stem_pool=stem_pool,
        zero_init_residual=zero_init_residual,
    )
