"""Purpose-built models for failure localization (exportsweep run --localize).

``Outer`` fails to export three levels down, in ``middle.inner.leaf`` (a branch on a tensor's
value); every other part exports. ``OwnForward`` fails in its own forward between children
that all export.
"""

import torch
from torch import nn


class Leaf(nn.Module):
    def forward(self, x):
        if x.sum() > 0:                  # data-dependent: the export failure
            return x * 2
        return x - 1


class Inner(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.leaf = Leaf()

    def forward(self, x):
        return self.leaf(self.lin(x)).relu()


class Middle(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = Inner()
        self.side = nn.Linear(4, 4)

    def forward(self, x):
        return self.inner(x) + self.side(x)


class Outer(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Linear(4, 4)
        self.middle = Middle()
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.middle(self.stem(x)))


class OwnForward(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)

    def forward(self, x):
        y = self.a(x)
        if y.max() > 0:                  # between the children: only the whole fails
            y = y * 2
        return self.b(y)


def make_outer():
    torch.manual_seed(0)
    return Outer()


def make_own_forward():
    return OwnForward()
