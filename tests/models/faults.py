"""Models that misbehave the way real ones do: crash the process, hang, eat memory."""

import ctypes
import os
import signal
import time

import torch
from torch import nn


class _Forward(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        self.fn()
        return x + 1


def _segfault():
    ctypes.string_at(0)          # reads address 0: SIGSEGV


def _exit():
    os._exit(17)


def _sigkill():
    os.kill(os.getpid(), signal.SIGKILL)


def _gil_loop():
    n = 0
    while True:                  # pure Python: holds the GIL, never sleeps
        n += 1


def _sleep():
    time.sleep(3600)


def make_segfault():
    return _Forward(_segfault)


def make_exit():
    return _Forward(_exit)


def make_sigkill():
    return _Forward(_sigkill)


def make_gil_loop():
    return _Forward(_gil_loop)


def make_sleep_hang():
    return _Forward(_sleep)


def make_slow(seconds=2.0):
    """Passes after a while: lets a test kill the driver with work in flight."""
    return _Forward(lambda: time.sleep(seconds))


class _Hog(nn.Module):
    def forward(self, x):
        hoard = []
        while True:
            hoard.append(torch.ones(64 << 20, dtype=torch.uint8))   # 64 MiB at a time


def make_memory_hog():
    return _Hog()


class _Unprintable(Exception):
    def __str__(self):
        raise RuntimeError("this exception cannot even be printed")


def make_unprintable_error():
    """Raises an exception whose message cannot be read: still a classified row."""
    def boom():
        raise _Unprintable()
    return _Forward(boom)
