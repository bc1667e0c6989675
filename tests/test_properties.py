"""Property tests over randomly generated small CNNs: the surgery invariants.

For any depth, widths and residual/plain structure: identity init preserves
the outputs exactly, removing the blocks restores them, and every original
state_dict key keeps its name and tensor.
"""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from attnviz import insert_attention, remove_attention, surgery_spec

from .conftest import BasicBlock, randomize_bn


class PlainBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride, 1)
        self.bn = nn.BatchNorm2d(cout)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class RandomCNN(nn.Module):
    def __init__(self, widths: list[int], strides: list[int], residual: list[bool], classes: int):
        super().__init__()
        self.stem = nn.Conv2d(3, widths[0], 3, padding=1)
        blocks, cin = [], widths[0]
        for w, s, r in zip(widths, strides, residual):
            blocks.append(BasicBlock(cin, w, s) if r else PlainBlock(cin, w, s))
            cin = w
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(cin, classes)

    def forward(self, x):
        x = self.blocks(torch.relu(self.stem(x)))
        return self.head(x.mean((2, 3)))


@st.composite
def cnns(draw):
    depth = draw(st.integers(1, 4))
    widths = draw(st.lists(st.sampled_from([4, 8, 12, 16]), min_size=depth, max_size=depth))
    strides = draw(st.lists(st.sampled_from([1, 2]), min_size=depth, max_size=depth))
    residual = draw(st.lists(st.booleans(), min_size=depth, max_size=depth))
    classes = draw(st.integers(2, 6))
    seed = draw(st.integers(0, 2**16))
    torch.manual_seed(seed)
    return randomize_bn(RandomCNN(widths, strides, residual, classes), seed).eval(), residual


WHERE = st.sampled_from(["residual", "stages", nn.Conv2d, "blocks.*", "**.bn*"])
ATTENTION = st.sampled_from(["se", "eca", "cbam", "coord", "simam", "gc", "ge", "cbam_spatial"])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cnns(), WHERE, ATTENTION)
def test_surgery_invariants(model_and_residual, where, attention):
    model, residual = model_and_residual
    if where == "residual" and not any(residual):
        where = "stages"
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        ref = model(x)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    new = insert_attention(model, attention, where, init="identity", example_input=x[:1]).eval()
    assert surgery_spec(new)["insertions"][0]["sites"]
    with torch.no_grad():
        assert torch.equal(new(x), ref)
    state = new.state_dict()
    assert all(torch.equal(state[k], v) for k, v in before.items())
    restored = remove_attention(new)
    assert list(restored.state_dict()) == list(before)
    with torch.no_grad():
        assert torch.equal(restored(x), ref)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
