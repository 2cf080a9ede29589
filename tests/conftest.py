"""Shared fixtures. Tiers are pytest markers: unit, ray, e2e, gpu (see pyproject.toml)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def tiny_model_dir() -> str:
    from crowdless.models import resolve_model

    return resolve_model("embedded:tiny-llama")


@pytest.fixture(scope="session")
def embedder():
    from crowdless.ranking import load_embedder

    return load_embedder()
