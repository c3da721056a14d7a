"""Small models for exportsweep's own tests (the taxonomy's models are in manifests/models)."""

import time

import torch
from torch import nn


class MLP(nn.Module):
    def __init__(self, width: int = 8):
        super().__init__()
        self.fc1 = nn.Linear(4, width)
        self.fc2 = nn.Linear(width, 3)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def make_mlp(width=8):
    return MLP(width)


def mlp_inputs():
    return (torch.randn(2, 4),)


def mlp_case_with_kwargs():
    """A case dict passing the input by keyword, with a named Dim."""
    batch = torch.export.Dim("batch", min=1, max=32)
    return {"model": MLP(), "args": (), "kwargs": {"x": torch.randn(3, 4)},
            "dynamic_shapes": {"x": {0: batch}}}


class Counter(nn.Module):
    """Increments a buffer on every call: state must not leak between runs or modes."""

    def __init__(self):
        super().__init__()
        self.register_buffer("count", torch.zeros(()))

    def forward(self, x):
        self.count.add_(1)
        return x * self.count


def make_counter():
    return Counter()


class Sleeper(nn.Module):
    def forward(self, x):
        time.sleep(30)
        return x


def make_sleeper():
    return Sleeper()


class Guard(nn.Module):
    """Data-dependent branch: `if x.sum() > 0`."""

    def forward(self, x):
        if x.sum() > 0:
            return x + 1
        return x - 1


class ItemGuard(nn.Module):
    """The same root cause in another model and file position: a branch on a tensor value."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(3, 3)

    def forward(self, x):
        y = self.proj(x)
        if y.sum() > 0:
            return y * 2
        return y


def make_guard():
    return Guard()


def make_item_guard():
    return ItemGuard()


class Specialize(nn.Module):
    """Reshapes with a constant batch, so a dynamic batch dim is a constraint violation."""

    def forward(self, x):
        return x.reshape(4, -1)


def make_specialize():
    return Specialize()


def not_a_model():
    return 42


class IntOutput(nn.Module):
    """Returns a Python int beside a tensor: AOTInductor hands it back as a tensor."""

    def forward(self, x):
        return {"y": x * 2, "n": 3}


def make_int_output():
    return IntOutput()


class ConvNet(nn.Module):
    """Conv + BatchNorm with a parameter registered first and used last: strict and non-strict
    export the same program with lifted inputs in another order (and non-strict also lifts
    BatchNorm's unused num_batches_tracked)."""

    def __init__(self, activation: str = "relu", scale: float = 2.0):
        super().__init__()
        self.offset = nn.Parameter(torch.randn(4))
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.activation = getattr(torch, activation) if activation != "gelu" else \
            nn.functional.gelu
        self.scale = scale

    def forward(self, x):
        y = self.activation(self.bn(self.conv(x))).mean((2, 3))
        return y * self.scale + self.offset


def make_convnet(activation="relu", scale=2.0):
    return ConvNet(activation, scale).eval()


class Flaky(nn.Module):
    """Branches on a tensor's value (an export failure) or not, as it was built."""

    def __init__(self, branch: bool):
        super().__init__()
        self.branch = branch

    def forward(self, x):
        if self.branch and x.sum() > 0:
            return x * 2
        return x + 1


def make_flaky(counter):
    """A model whose export fails on every other build, counted in the file ``counter``
    (across processes): the outcome flips between a run and its reruns."""
    import os
    n = int(open(counter).read()) if os.path.exists(counter) else 0
    with open(counter, "w") as f:
        f.write(str(n + 1))
    return Flaky(branch=n % 2 == 0)


def make_ill_conditioned(depth=24, width=256, gain=4.0):
    """Linear + SiLU layers with a gain above 1, like an untrained network: the decomposed
    SiLU (x * sigmoid(x), one ulp from the fused kernel) moves the outputs by far more than
    atol + rtol*|eager|, and by no more than eager float32 is from eager float64."""
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Sequential(nn.Linear(width, width), nn.SiLU())
                            for _ in range(depth)]).eval()
    with torch.no_grad():
        for layer in model:
            layer[0].weight.mul_(gain)
    return model
