"""Shared fixtures: small models that the tests build in milliseconds."""

from __future__ import annotations

import pytest
import torch
from torch import nn

# Small tensors on a loaded 2-core machine: one thread per process is faster.
torch.set_num_threads(1)


class BasicBlock(nn.Module):
    """A hand-written residual block (torchvision style: ``out += identity``)."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class TinyResNet(nn.Module):
    def __init__(self, num_classes: int = 5, widths=(8, 16)):
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        layers, cin = [], widths[0]
        for i, w in enumerate(widths):
            layers.append(nn.Sequential(BasicBlock(cin, w, 1 if i == 0 else 2), BasicBlock(w, w)))
            cin = w
        self.layer1, self.layer2 = layers
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.pool(x), 1))


class DataDependent(TinyResNet):
    """Top-level forward with a data-dependent ``if``: FX cannot trace it, its blocks can."""

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        if x.mean() > 0:
            x = self.layer1(x)
        x = self.layer2(x)
        return self.fc(torch.flatten(self.pool(x), 1))


class Scaled(nn.Module):
    """``model`` with its logits multiplied by ``scale`` (Grad-CAM++ scale tests)."""

    def __init__(self, model: nn.Module, scale: float):
        super().__init__()
        self.net = model
        self.scale = scale

    def forward(self, x):
        return self.net(x) * self.scale


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give BatchNorms non-trivial statistics so identity checks mean something."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.randn(m.num_features, generator=g) * 0.2 + 1)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model


@pytest.fixture
def tiny_resnet() -> TinyResNet:
    torch.manual_seed(0)
    return randomize_bn(TinyResNet()).eval()


@pytest.fixture
def x16() -> torch.Tensor:
    return torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
