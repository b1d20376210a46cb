from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from nas.conf import CONF_DIR
from nas.data.fashion_mnist import DEFAULT_ROOT

CONF = str(CONF_DIR)

#: A tiny, fast, deterministic training config (overrides of conf/train.yaml).
TINY = [
    "search_space=ofa_mbv3_tiny", "data.kwargs.train_limit=320", "data.kwargs.val_size=500",
    "trainer.batch_size=32", "trainer.epochs=3", "trainer.threads=1", "trainer.lr=0.05", "trainer.eval_every=0",
    "trainer.progress=false", "trainer.tensorboard=false", "trainer.log_every=1", "trainer.checkpoint_every=0",
]


def tiny_config(out_dir: Path, *overrides: str):
    with initialize_config_dir(config_dir=CONF, version_base=None):
        return compose(config_name="train", overrides=[*TINY, f"out_dir={out_dir}", *overrides])


@pytest.fixture(autouse=True)
def _need_fmnist():
    if not (DEFAULT_ROOT / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"Fashion-MNIST not installed at {DEFAULT_ROOT} (apt dataset-fashion-mnist)")


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here runs with one intra-op thread (``one_thread`` in tests/conftest.py)."""


def small_data(**kw):
    """160 Fashion-MNIST training images and 200 validation images (tests of samplers driven from Python)."""
    from nas.data import create_data

    return create_data("fashion_mnist", **({"train_limit": 160, "val_size": 200} | kw))


def small_config(**kw):
    """A :class:`TrainConfig` of two short epochs, checkpointing every step (exact-resume tests)."""
    from nas.train.trainer import TrainConfig

    base = dict(epochs=2, batch_size=32, lr=0.05, threads=1, eval_every=0, progress=False, tensorboard=False,
                log_every=1, checkpoint_every=1)
    return TrainConfig(**(base | kw))
