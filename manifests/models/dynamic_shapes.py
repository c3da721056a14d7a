"""Purpose-built models, one per dynamic-shape outcome (manifests/dynamic.yaml).

Exported with ``dynamic_shapes: discover`` (Dim.AUTO on every dim of every tensor input),
each shows one thing exportsweep reads back from the program and torch's shape log.
"""

import torch
from torch import nn


class Elementwise(nn.Module):
    """Fully dynamic: nothing in forward depends on a size."""

    def forward(self, x):
        return torch.tanh(x) * 2 + x.mean(-1, keepdim=True)


class BranchOnWidth(nn.Module):
    """Partially specialized: the branch on x.shape[1] fixes it to the example's 6 (a guard
    at this file's line); the batch dim stays dynamic."""

    def forward(self, x):
        if x.shape[1] == 6:
            return x.relu()
        return x.sigmoid()


class Projection(nn.Module):
    """Partially specialized inside torch: a Linear's weight fixes the feature dim."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(8, 4)

    def forward(self, x):
        return self.proj(x)


class PairSum(nn.Module):
    """Equal dims: x + y makes y's dims equal to x's; z's second dim is twice x's."""

    def forward(self, x, y, z):
        return (x + y).sum() + (torch.cat([x, x], dim=1) * z).sum()


class PositionTable(nn.Module):
    """A verified failure at an edge: positions index a 16-row table, so sequences longer than
    16 fail in eager although torch's range for the length is unbounded."""

    def __init__(self):
        super().__init__()
        self.table = nn.Embedding(16, 4)

    def forward(self, tokens):
        positions = torch.arange(tokens.shape[1])
        return tokens.unsqueeze(-1) * self.table(positions)


def make_elementwise():
    return Elementwise()


def make_branch_on_width():
    return BranchOnWidth()


def make_projection():
    return Projection()


def make_pair_sum():
    return PairSum()


def make_position_table():
    return PositionTable()
