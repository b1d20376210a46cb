from __future__ import annotations

import pytest

from nas.data.fashion_mnist import DEFAULT_ROOT


@pytest.fixture(autouse=True)
def _need_fmnist() -> None:
    if not (DEFAULT_ROOT / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"Fashion-MNIST not installed at {DEFAULT_ROOT} (apt dataset-fashion-mnist)")
