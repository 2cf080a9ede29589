"""Shared fixtures. Tiers are pytest markers: unit, ray, e2e, gpu (see pyproject.toml)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
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
        if item.get_closest_marker("gpu") and not has_cuda:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def tiny_model_dir() -> str:
    from crowdless.models.loading import resolve_model

    return resolve_model("embedded:tiny-llama")


@pytest.fixture(scope="session")
def embedder():
    from crowdless.ranking import load_embedder

    return load_embedder()


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray cluster for the session's in-process Ray tests."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True,
             runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1", "PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}"}})
    yield ray
    ray.shutdown()
