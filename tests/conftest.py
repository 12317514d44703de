"""Fixtures shared by several test modules."""
from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER"):  # under -n N each worker has a core: one thread, here and in subprocesses
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def seeded_rngs():
    """Every test starts from the same random state, whatever its worker ran before it: under ``-n 2`` the
    tests before one in its worker differ from run to run, and a test that draws weights from the global
    generator would otherwise see other weights each time (a float-rounding bound then holds or not)."""
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)


@pytest.fixture(scope="module")
def one_thread():
    """Small models run fastest on one thread, and a busy machine is not oversubscribed."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


#: the modules that take longest (each builds its own pipeline run or many real models); run first, so that
#: under ``-n 2 --dist loadfile`` the short modules fill the other worker instead of waiting behind them
LONGEST_FIRST = ("test_pipeline.py", "test_pipeline_cls.py", "test_comb_mmseg.py", "test_mm_pruning_dist.py",
                 "test_cli.py", "test_comb_mmdet.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Put the longest modules first, keeping the order of the tests within each module."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
