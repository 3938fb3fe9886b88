"""Shared bits of the trial-engine tests (pipelines, methods, measure, quality, trial, CLI)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # arch/tiny must never reach for the network

# Few steps keep the tiny pipelines fast; 4 is enough for a gate and a cache interval.
STEPS = 4
TGATE_PARAMS = {"gate_step": 2, "sp_interval": 2, "warm_up": 1}


@pytest.fixture(scope="module", autouse=False)
def one_thread():
    """Run torch single-threaded for a module: on a small shared CI box, intra-op threads
    fighting other processes make tiny models tens of times slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def params_for(combo: str, model: str) -> dict:
    """Valid parameters of `combo` for a STEPS-step run of `model`."""
    params: dict = {}
    if "tgate" in combo:
        params.update(TGATE_PARAMS)
    if "tome" in combo and model == "sdxl":
        params["max_downsample"] = 2  # SDXL has no attention at 1x
    return params
