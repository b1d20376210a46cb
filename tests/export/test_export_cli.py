"""``python -m nas.export`` run as a user runs it: every documented form, and each bad input refused cleanly.

The deployment test feeds ``model.onnx`` with nothing but the exported ``metadata.json``, numpy and onnxruntime (the
Fashion-MNIST idx files read with gzip + numpy, preprocessing taken from the metadata) and gets the export's
measured top-1 again.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
EMBEDDED = REPO / "nas" / "embedded" / "ofa_mbv3_fmnist"
FMNIST = Path("/usr/share/datasets/fashion-mnist")
ARCH_JSON = ('{"ks": [7, null, 5, 3, 3, 3, 3, null, 3, null], "e": [3, null, 3, 3, 4, 4, 3, null, 3, null], '
             '"d": [1, 2, 2, 1, 1], "r": 28}')


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = f"{REPO}{os.pathsep}{env.get('PYTHONPATH', '')}"
    return env


def nas(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=_env(), capture_output=True, text=True,
                          timeout=600)


def shell(command: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", command], cwd=cwd, env={**_env(), **env}, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def search_dir(tmp_path_factory) -> Path:
    cwd = tmp_path_factory.mktemp("search")
    proc = nas("nas.search", "+hw=snapdragon855", "budget=300", "progress=false", "out_dir=results", cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return cwd / "results"


def _bash_blocks(markdown: str) -> list[str]:
    return [line for block in re.findall(r"```bash\n(.*?)```", markdown, re.S) for line in block.strip().splitlines()]


def _idx(path: Path) -> np.ndarray:
    data = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _bilinear(x: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of NCHW with half-pixel centres (align_corners=False), upsampling only."""
    def axis(n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src = np.clip((np.arange(size) + 0.5) * n_in / size - 0.5, 0, None)
        lo = np.minimum(np.floor(src).astype(int), n_in - 1)
        return lo, np.minimum(lo + 1, n_in - 1), (src - lo).astype(np.float32)

    y0, y1, wy = axis(x.shape[2])
    x0, x1, wx = axis(x.shape[3])
    rows = x[:, :, y0] * (1 - wy)[:, None] + x[:, :, y1] * wy[:, None]
    return rows[..., x0] * (1 - wx) + rows[..., x1] * wx


def _deploy_top1(subnet: Path) -> float:
    """Top-1 of model.onnx on the test images, using only metadata.json, numpy and onnxruntime."""
    import onnxruntime as ort

    meta = json.loads((subnet / "metadata.json").read_text())
    pre, n = meta["preprocessing"], meta["measured_on"]["images"]
    images = _idx(next(FMNIST.glob("t10k-images-idx3-ubyte*")))[:n]
    labels = _idx(next(FMNIST.glob("t10k-labels-idx1-ubyte*")))[:n]
    assert pre["channel_order"] == "L" and pre["layout"] == "NCHW" and images.shape[1:] == (pre["native_size"],) * 2
    x = images[:, None].astype(np.float32) / 255.0
    x = (x - np.array(pre["mean"], np.float32)[:, None, None]) / np.array(pre["std"], np.float32)[:, None, None]
    if pre["resize"]["method"] == "bilinear":
        x = _bilinear(x, pre["resize"]["to"])
    sess = ort.InferenceSession(str(subnet / "model.onnx"), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    pred = np.concatenate([sess.run(None, {name: x[i:i + 500].astype(np.float32)})[0].argmax(1)
                           for i in range(0, len(x), 500)])
    return 100.0 * float((pred == labels).mean())


def test_export_md_command_and_onnx_from_metadata_alone(search_dir):
    """The first command EXPORT.md prints, run as printed; the ONNX model then scores the measured top-1."""
    commands = _bash_blocks((search_dir / "EXPORT.md").read_text())
    proc = shell(commands[0], cwd=search_dir.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    subnet = search_dir / "subnet_rank0"
    meta = json.loads((subnet / "metadata.json").read_text())
    front = json.loads((search_dir / "front_ranked.json").read_text())
    assert meta["arch_id"] == front[0]["arch_id"] and meta["front_rank"] == 0
    assert meta["bn_recalibration"] == {"recalibrated": True, "data": "fashion_mnist", "split": "train",
                                        "images": 2000, "batch": 200, "seed": 0}
    assert f"measured test top-1 {meta['measured_test_top1']:.2f}%" in proc.stdout
    assert meta["preprocessing"]["resize"]["to"] == meta["resolution"]
    top1 = _deploy_top1(subnet)
    assert abs(top1 - meta["measured_test_top1"]) <= 0.05, (top1, meta["measured_test_top1"])  # <= 5 of 10k images


def test_arch_id_form_from_export_md_exports_the_same_point(search_dir, tmp_path):
    """EXPORT.md's second form (checkpoint + the arch id the search printed), on a 500-image test subset."""
    command = _bash_blocks((search_dir / "EXPORT.md").read_text())[1]
    assert "arch=" in command and "checkpoint=" in command
    proc = shell(command + " +data.kwargs.test_limit=500", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = json.loads((tmp_path / "subnet_rank0" / "metadata.json").read_text())
    front = json.loads((search_dir / "front_ranked.json").read_text())
    assert meta["arch"] == front[0]["arch"] and meta["measured_on"]["images"] == 500
    assert meta["arch_id"] in proc.stdout


def test_json_arch_as_the_readme_shows_it(tmp_path):
    """``arch='{"ks": ...}'`` typed in a shell; at the native 28 px nothing is resized; ONNX matches again."""
    proc = shell(f"python -m nas.export checkpoint={EMBEDDED} arch='{ARCH_JSON}' data=fashion_mnist "
                 "+data.kwargs.test_limit=1000 out=sub", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = json.loads((tmp_path / "sub" / "metadata.json").read_text())
    assert meta["arch"]["ks"] == json.loads(ARCH_JSON)["ks"] and meta["resolution"] == 28
    assert meta["preprocessing"]["resize"] == {"to": 28, "method": "none"}
    assert abs(_deploy_top1(tmp_path / "sub") - meta["measured_test_top1"]) <= 0.1  # <= 1 of 1000 images


@pytest.fixture()
def bare_weights(tmp_path) -> Path:
    """The embedded supernet's weights alone: no measurements.csv, no search results anywhere."""
    import shutil

    out = tmp_path / "weights"
    out.mkdir()
    for name in ("supernet.json", "supernet.safetensors"):
        shutil.copy(EMBEDDED / name, out / name)
    return out


def test_arch_id_exports_with_no_results_or_measurements_file(bare_weights, tmp_path):
    """``arch=<id>`` is parsed by the space itself; a 200-image test subset keeps it short."""
    arch_id = "r32-k7e2.k5e3-k7e2-k5e3-k3e3.k5e4-k3e3.k3e2"
    proc = nas("nas.export", f"checkpoint={bare_weights}", f"arch={arch_id}", "data=fashion_mnist",
               "+data.kwargs.test_limit=200", "out=sub", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = json.loads((tmp_path / "sub" / "metadata.json").read_text())
    assert meta["arch_id"] == arch_id and meta["resolution"] == 32 and meta["arch"]["d"] == [2, 1, 1, 2, 2]
    assert not (bare_weights / "measurements.csv").exists()


def test_an_id_that_does_not_parse_names_the_string_the_space_and_a_valid_id(bare_weights, tmp_path):
    proc = nas("nas.export", f"checkpoint={bare_weights}", "arch=r32-k7e2.k5e3-k7e2-k5e3-k3e3.k5e4-k3e3.k3e9",
               "data=fashion_mnist", "out=sub", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    err = proc.stderr.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert "'r32-k7e2.k5e3-k7e2-k5e3-k3e3.k5e4-k3e3.k3e9'" in err and "space 'ofa_mbv3_fmnist'" in err
    assert "e9" in err and "a valid id looks like 'r32-k7e4.k7e4-" in err
    assert not (tmp_path / "sub").exists()


def test_recalibrate_false_exports_the_shared_statistics(tmp_path):
    import torch

    from supernets import load_subnet

    proc = nas("nas.export", f"checkpoint={EMBEDDED}", f"arch={ARCH_JSON}", "recalibrate=false", "out=sub",
               cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sub = load_subnet(tmp_path / "sub")
    assert sub.metadata["bn_recalibration"]["recalibrated"] is False and sub.metadata["preprocessing"] is None
    from nas.checkpoints import load_supernet

    net = load_supernet(EMBEDDED).eval()
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad(), net.use(net.space.from_json(ARCH_JSON)):
        assert torch.allclose(sub.module.eval()(x), net(x), atol=1e-4)  # the supernet's own statistics, unchanged


@pytest.mark.parametrize("args, message", [
    (["arch={\"ks\": [7,"], "does not parse as JSON"),
    (["arch=r32-k9e9-nonsense"], "does not parse"),
    (["arch=" + ARCH_JSON], "recalibrate=false"),  # a BN supernet and no data
    ([], "nothing to export"),
])
def test_bad_arch_inputs_are_refused_with_nothing_written(tmp_path, args, message):
    proc = nas("nas.export", f"checkpoint={EMBEDDED}" if args else "rank=0", *args, "out=sub", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "sub").exists()


def test_rank_past_the_front_and_non_empty_out_are_refused(search_dir, tmp_path):
    n = len(json.loads((search_dir / "front_ranked.json").read_text()))
    proc = nas("nas.export", f"results={search_dir}", f"rank={n}", "out=sub", cwd=tmp_path)
    assert proc.returncode == 2 and f"rank={n} is past the front" in proc.stderr and f"0..{n - 1}" in proc.stderr
    assert not (tmp_path / "sub").exists()
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "keep.txt").write_text("mine")
    proc = nas("nas.export", f"results={search_dir}", "rank=0", "out=sub", cwd=tmp_path)
    assert proc.returncode == 2 and "overwrite=true" in proc.stderr
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["keep.txt"]


@pytest.mark.slow  # runs an ImageNet-space search first
def test_results_of_another_space_are_refused(tmp_path):
    proc = nas("nas.search", "experiment=ofa_imagenet", "budget=60", "progress=false", "out_dir=imagenet",
               cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc = nas("nas.export", "results=imagenet", "rank=0", f"checkpoint={EMBEDDED}", "data=fashion_mnist", "out=sub",
               cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "space 'ofa_mbv3'" in proc.stderr and "'ofa_mbv3_fmnist'" in proc.stderr
    assert not (tmp_path / "sub").exists()


def _readme_export_block() -> list[str]:
    text = (REPO / "README.md").read_text()
    block = text[text.index("`nas.export` takes the architecture"):]
    block = re.search(r"```bash\n(.*?)```", block, re.S).group(1)
    return [line.split("   #")[0].strip() for line in block.replace("\\\n", " ").splitlines() if line.strip()]


@pytest.mark.slow
def test_readme_export_forms_run_verbatim_after_the_main_job(tmp_path):
    """The README's three nas.export lines, as written, after the README's main job in the same directory."""
    proc = shell("python -m nas.search +hw=snapdragon855 progress=false", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    commands = _readme_export_block()
    assert len(commands) == 3
    for command in commands:
        proc = shell(command.replace("checkpoint=nas/", f"checkpoint={REPO}/nas/"), cwd=tmp_path)
        assert proc.returncode == 0, (command, proc.stderr[-3000:])
    metas = {d: json.loads((tmp_path / d / "metadata.json").read_text())
             for d in ("subnet_rank0", "subnet_by_id", "subnet_by_json")}
    assert all(m["bn_recalibration"]["recalibrated"] and m["measured_on"]["images"] == 10000 for m in metas.values())
    assert metas["subnet_by_id"]["arch_id"] == "r28-k5e2.k3e2-k7e3.k7e3-k7e3-k3e2.k7e2-k3e2.k5e4"
    assert metas["subnet_by_json"]["arch"]["ks"] == json.loads(ARCH_JSON)["ks"]


@pytest.mark.slow
def test_export_md_of_a_preset_without_a_supernet_runs_once_its_variables_are_set(tmp_path):
    """ofa_imagenet ships no supernet: EXPORT.md's command works with CHECKPOINT set to a supernet of its space."""
    import torch

    from nas.checkpoints import save_weights
    from supernets import create_supernet

    proc = nas("nas.search", "experiment=ofa_imagenet", "budget=60", "progress=false", "out_dir=imagenet",
               cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    torch.manual_seed(0)
    save_weights(tmp_path / "ofa", create_supernet("ofa_mbv3", "ofa_mbv3"))  # untrained: its statistics as they are
    lines = _bash_blocks((tmp_path / "imagenet" / "EXPORT.md").read_text())
    assert lines[0].startswith("CHECKPOINT=") and lines[1].startswith("DATA=")
    proc = shell(lines[-1], cwd=tmp_path, CHECKPOINT=str(tmp_path / "ofa"), DATA="recalibrate=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = json.loads((tmp_path / "imagenet" / "subnet_rank0" / "metadata.json").read_text())
    front = json.loads((tmp_path / "imagenet" / "front_ranked.json").read_text())
    assert meta["arch"] == front[0]["arch"] and meta["onnx_input_shape"] == [1, 3, 224, 224]
