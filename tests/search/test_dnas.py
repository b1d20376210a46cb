"""The differentiable-NAS driver: what it learns on a toy problem, resume after SIGKILL, latency, bad input, CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from nas.data import create_data
from nas.search.dnas import DnasSettings, run_dnas, split_for_dnas
from nas.search.dnas_app import mixture_supernet
from nas.search.dnas_latency import ExpectedLatency
from search_spaces import create_space
from supernets import create_supernet
from supernets.mixture import ArchParameters, MixtureError, onehot_soft

REPO = Path(__file__).resolve().parents[2]
FMNIST = Path("/usr/share/datasets/fashion-mnist")
needs_data = pytest.mark.skipif(not FMNIST.is_dir(), reason=f"Fashion-MNIST not installed at {FMNIST}")
TINY = dict(epochs=3, batch_size=8, steps_per_epoch=2, eval_images=40)


def _data():
    return create_data("fashion_mnist", train_limit=160, val_size=100, test_limit=40)


def _net(seed: int = 0):
    torch.manual_seed(seed)
    return create_supernet("nb201", create_space("nb201_tiny", C=4))


_KILLED_RUN = """
import sys, torch
sys.path.insert(0, {repo!r})
from nas.data import create_data
from nas.search.dnas import DnasSettings, run_dnas
from search_spaces import create_space
from supernets import create_supernet
torch.set_num_threads({threads})  # the test process's: float sums depend on it
torch.manual_seed(0)
net = create_supernet("nb201", create_space("nb201_tiny", C=4))
data = create_data("fashion_mnist", train_limit=160, val_size=100, test_limit=40)
s = DnasSettings.for_mode({mode!r}, epochs=40, batch_size=8, steps_per_epoch=2, eval_images=40, warmup_epochs=1)
run_dnas(net, data, s, {out!r})
"""


@needs_data
@pytest.mark.parametrize("mode", ["fbnet"])
def test_resume_after_sigkill_equals_an_uninterrupted_run(tmp_path, mode):
    """Kill a run after its second checkpoint, resume with fewer epochs left: same weights, logits and history as
    a run that never stopped (Gumbel noise, data order and augmentation all come back from the checkpoint)."""
    killed = tmp_path / "killed"
    code = _KILLED_RUN.format(repo=str(REPO), mode=mode, out=str(killed), threads=torch.get_num_threads())
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ckpt, t0 = killed / "checkpoint.pt", time.time()
    try:
        while time.time() - t0 < 240:
            if ckpt.exists() and torch.load(ckpt, weights_only=True)["epoch"] >= 2:
                break
            assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    done = torch.load(ckpt, weights_only=True)["epoch"]
    epochs = done + 1
    settings = DnasSettings.for_mode(mode, **{**TINY, "epochs": epochs, "warmup_epochs": 1})
    # the killed run was started for 40 epochs; its checkpoint must refuse other settings...
    with pytest.raises(MixtureError, match="different search"):
        run_dnas(_net(), _data(), settings, killed, resume=True)
    # ...so compare against the same 40-epoch settings, cut at `epochs` by the history
    settings40 = DnasSettings.for_mode(mode, **{**TINY, "epochs": 40, "warmup_epochs": 1})
    resumed = _run_until(killed, settings40, epochs, resume=True)
    fresh = _run_until(tmp_path / "fresh", settings40, epochs, resume=False)
    assert resumed["history"] == fresh["history"]
    for key in fresh["model"]:
        assert torch.equal(resumed["model"][key], fresh["model"][key]), key
    for key in fresh["arch"]:
        assert torch.equal(resumed["arch"][key], fresh["arch"][key]), key


def _run_until(out: Path, settings: DnasSettings, epochs: int, *, resume: bool) -> dict:
    """Run ``settings`` (searching up to ``epochs``) through the library's own loop and return its state."""
    from nas.search import dnas

    net, data = _net(), _data()
    search = dnas._Search(net, data, settings, out, latency=None, resolution=28, device=torch.device("cpu"))
    if resume:
        search.load(torch.load(out / dnas.CHECKPOINT, weights_only=True))
    else:
        torch.manual_seed(settings.seed)
    while search.epoch < epochs:
        search.run_epoch()
    for row in search.history:
        row.pop("seconds")
    return {"history": search.history, "model": net.state_dict(), "arch": search.ap.state_dict()}


@needs_data
def test_warmup_freezes_alpha_and_results_record_the_derived_arch(tmp_path):
    """Logits move only after the warm-up; the result directory records one history row per epoch, the arch
    derived from the final logits, and a supernet that rebuilds with the same weights."""
    net = _net()
    res = run_dnas(net, _data(), DnasSettings(**{**TINY, "warmup_epochs": 2}), tmp_path)
    hist = res.history
    assert [h["epoch"] for h in hist] == [1, 2, 3]
    assert [h["alpha_frozen"] for h in hist] == [True, True, False]
    assert hist[0]["entropy"] == hist[1]["entropy"] > hist[2]["entropy"]  # frozen, then searched
    doc = json.loads((tmp_path / "history.json").read_text())
    picked = {k: doc["choices"][k][int(np.argmax(p))] for k, p in doc["final_probs"].items()}
    assert net.derive(picked) == res.arch
    ranked = json.loads((tmp_path / "front_ranked.json").read_text())
    assert ranked[0]["arch"]["arch_str"] == res.arch.to_str() and ranked[0]["top1"] == pytest.approx(res.top1)
    saved = load_file(str(tmp_path / "supernet" / "supernet.safetensors"))
    assert all(torch.equal(saved[k], v) for k, v in net.state_dict().items())


@needs_data
def test_second_order_darts_differs_from_first_order(tmp_path):
    first = run_dnas(_net(), _data(), DnasSettings(**{**TINY, "epochs": 1}), tmp_path / "a")
    second = run_dnas(_net(), _data(), DnasSettings(**{**TINY, "epochs": 1, "order": 2}), tmp_path / "b")
    assert np.isfinite(second.history[0]["a_loss"])
    assert second.history[0]["entropy"] != first.history[0]["entropy"]


def test_expected_latency_is_exact_for_onehot_and_differentiable():
    sp = create_space("ofa_mbv3_fmnist")
    net = create_supernet("ofa_mbv3", sp)
    from hw_profiles import create_hw_profile

    lat = ExpectedLatency(sp, create_hw_profile("macs"), resolution=28)
    choices, rng = net.mixture_choices("fbnet"), np.random.default_rng(0)
    for _ in range(3):
        arch = sp.sample(rng)
        arch = type(arch)(arch.ks, arch.e, arch.d, 28)
        values = dict(zip([g.name for g in sp.genes()], sp._to_values(arch)))
        picked = {k: v if v is not None else choices[k][0] for k, v in values.items() if k in choices}
        assert float(lat(onehot_soft("fbnet", choices, picked))) == pytest.approx(sp.macs(arch), rel=1e-6)
    ap = ArchParameters(choices)
    lat(ap.soft("fbnet", tau=5.0)).backward()
    assert all(ap.alpha[n].grad.abs().sum() > 0 for n in ("ks0", "e0", "d0", "d4"))


@needs_data
def test_latency_loss_moves_the_logits_towards_cheaper_archs(tmp_path):
    """Same weights, data and logits start; with FBNet's latency factor the expected cost ends lower than without.
    (TangleNAS' one-forward mixture keeps the test quick; the loss does not depend on the mode.)"""
    from hw_profiles import create_hw_profile
    from nas.search import dnas

    sp = create_space("ofa_mbv3_tiny", kernels=(3, 5), expands=(2, 4))  # 4 (kernel, expand) candidates per block
    lat = ExpectedLatency(sp, create_hw_profile("macs"), resolution=28)
    ends = {}
    for name, latency, beta in (("plain", None, 0.6), ("latency", lat, 6.0)):
        torch.manual_seed(0)
        net = create_supernet("ofa_mbv3", sp)
        s = DnasSettings.for_mode("tangle", batch_size=4, a_lr=0.1, lat_beta=beta)
        search = dnas._Search(net, _data(), s, tmp_path, latency=latency, resolution=28, device=torch.device("cpu"))
        x, y = search.batch(search.a_idx, 0)
        for _ in range(3):
            search.alpha_step(x, y, x, y)
        with torch.no_grad():
            ends[name] = float(lat(search.ap.soft("darts")))
    assert ends["latency"] < ends["plain"]


@needs_data
def test_latency_target_pulls_the_expected_latency_to_it_from_both_sides(tmp_path):
    """lat_target (TuNAS' absolute reward): a target below the start lowers the expected latency, one above raises
    it, and both end closer to their target than they started."""
    from hw_profiles import create_hw_profile
    from nas.search import dnas

    sp = create_space("ofa_mbv3_tiny", kernels=(3, 5), expands=(2, 4))
    lat = ExpectedLatency(sp, create_hw_profile("macs"), resolution=28)
    lo, hi = lat.price(sp.min_arch()), lat.price(sp.max_arch())
    for target in (lo + 0.15 * (hi - lo), lo + 0.85 * (hi - lo)):
        torch.manual_seed(0)
        net = create_supernet("ofa_mbv3", sp)
        s = DnasSettings.for_mode("tangle", batch_size=4, a_lr=0.2, lat_target=target, lat_weight=20.0)
        search = dnas._Search(net, _data(), s, tmp_path, latency=lat, resolution=28, device=torch.device("cpu"))
        with torch.no_grad():
            start = float(lat(search.ap.soft("darts")))
        x, y = search.batch(search.a_idx, 0)
        for _ in range(8):
            search.alpha_step(x, y, x, y)
        with torch.no_grad():
            end = float(lat(search.ap.soft("darts")))
        assert abs(end - target) < 0.5 * abs(start - target), (target, start, end)
        assert (end - start) * (target - start) > 0


def test_latency_target_needs_a_profile_and_a_positive_value():
    with pytest.raises(MixtureError, match="lat_target must be a latency > 0"):
        DnasSettings(lat_target=0.0)
    with pytest.raises(MixtureError, match="derive=target needs lat_target"):
        DnasSettings(derive="target")
    with pytest.raises(MixtureError, match="derive='best': one of"):
        DnasSettings(derive="best")
    with pytest.raises(MixtureError, match="lat_tolerance must be a fraction"):
        DnasSettings(lat_target=1.0, lat_tolerance=0.0)


def test_batched_expected_latency_equals_the_discrete_price():
    """One-hot weights in a batch give each architecture's own profile price (the derivation prices with it)."""
    from hw_profiles import create_hw_profile
    from nas.search.dnas_derive import _price_rows

    sp = create_space("ofa_mbv3_tiny", kernels=(3, 5), expands=(2, 4))
    lat = ExpectedLatency(sp, create_hw_profile("macs"), resolution=28)
    net = create_supernet("ofa_mbv3", sp)
    choices = net.mixture_choices("tangle")
    names = list(choices)
    rng = np.random.default_rng(0)
    rows = np.stack([rng.integers(len(choices[k]), size=16) for k in names], axis=1)
    prices = _price_rows(lat, names, [len(choices[k]) for k in names], rows)
    for row, price in zip(rows, prices):
        arch = net.derive({**{k: choices[k][int(i)] for k, i in zip(names, row)}, "r": 28})
        assert price == pytest.approx(lat.price(arch), rel=1e-5)


@pytest.mark.parametrize("frac", [0.3, 0.7])
def test_derive_near_target_lands_in_the_window_where_argmax_is_an_extreme(frac):
    """Logits leaning slightly towards the largest (or smallest) choice everywhere: the argmax is the extreme net,
    far from a target inside the range; the target derivation returns an arch priced within 5 % of it."""
    from hw_profiles import create_hw_profile
    from nas.search.dnas_derive import derive_near_target

    sp = create_space("ofa_mbv3_tiny", kernels=(3, 5, 7), expands=(2, 3, 4))
    lat = ExpectedLatency(sp, create_hw_profile("macs"), resolution=28)
    net = create_supernet("ofa_mbv3", sp)
    choices = net.mixture_choices("tangle")
    lo, hi = lat.price(sp.min_arch()), lat.price(sp.max_arch())
    target = lo + frac * (hi - lo)
    lean = 1.0 if frac > 0.5 else -1.0  # towards the largest for the high target, the smallest for the low one
    probs = {k: torch.softmax(lean * 0.1 * torch.arange(len(v), dtype=torch.float32), 0) for k, v in choices.items()}
    argmax = net.derive({**{k: v[int(torch.argmax(probs[k]))] for k, v in choices.items()}, "r": 28})
    assert abs(lat.price(argmax) / target - 1) > 0.1
    picked, price = derive_near_target(probs, choices, lat, target, tol=0.05)
    arch = net.derive({**picked, "r": 28})
    assert abs(lat.price(arch) / target - 1) <= 0.05
    assert price == pytest.approx(lat.price(arch), rel=1e-5)


def test_bad_input_is_a_clear_mixture_error():
    with pytest.raises(MixtureError, match="no supernet can compute a 'darts' mixture on space 'vit_tiny'"):
        mixture_supernet(create_space("vit_tiny"), "darts")
    with pytest.raises(MixtureError, match="can compute a 'pcdarts' mixture on space 'ofa_mbv3_tiny'"):
        mixture_supernet(create_space("ofa_mbv3_tiny"), "pcdarts")
    with pytest.raises(MixtureError, match="cannot price space 'toy'.*no layers"):
        ExpectedLatency(types.SimpleNamespace(name="toy"), types.SimpleNamespace(name="macs"))

    class NoEntry:
        name, units = "lut", "us"

        def price_layers(self, specs):
            raise KeyError("1 layer(s) not in profile 'lut' and it has no fallback model")

    with pytest.raises(MixtureError, match="'lut' cannot price space 'ofa_mbv3_tiny'.*no fallback"):
        ExpectedLatency(create_space("ofa_mbv3_tiny"), NoEntry(), resolution=28)
    for tau in (0.0, -1.0):
        with pytest.raises(MixtureError, match="temperature must be > 0"):
            DnasSettings(mode="fbnet", tau0=tau)
    for portion in (0.0, 1.0, 0.001):
        with pytest.raises(MixtureError, match="both sides need at least one"):
            split_for_dnas(100, portion, 0)
    with pytest.raises(MixtureError, match="mode=darts only"):
        DnasSettings(mode="tangle", order=2)


def _cli(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


@needs_data
def test_cli_bad_input_exits_2_with_one_line(tmp_path):
    r = _cli("nas.dnas", "mode=fbnet", "tau0=0", f"out_dir={tmp_path / 'x'}", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("error: tau0")
    assert "Traceback" not in r.stderr


@needs_data
@pytest.mark.slow  # ~40 s on a loaded 2-core machine (two CLI processes and an ONNX export)
def test_cli_search_then_export(tmp_path):
    """The README's command: a TangleNAS search on NB201 (Fashion-MNIST), then nas.export of the found cell."""
    out = tmp_path / "run"
    r = _cli("nas.dnas", "mode=tangle", "+search_space.kwargs.C=4", "+search_space.kwargs.N=1", "epochs=2",
             "batch_size=8", "steps_per_epoch=2", "data.kwargs.train_limit=160", "data.kwargs.val_size=100",
             "data.kwargs.test_limit=40", "eval_images=40", f"out_dir={out}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    hist = json.loads((out / "history.json").read_text())["history"]
    assert len(hist) == 2 and all(np.isfinite(h["entropy"]) for h in hist)
    found = json.loads((out / "front_ranked.json").read_text())[0]
    assert found["arch_id"] == hist[-1]["arch_id"] and found["arch_id"] in r.stdout
    # the summary says what the printed top-1 is, and that 4 steps leave the logits near uniform
    assert "inherits from the mixture supernet" in r.stdout and "barely moved from uniform" in r.stdout
    e = _cli("nas.export", f"results={out}", "rank=0", f"out={tmp_path / 'subnet'}", cwd=tmp_path)
    assert e.returncode == 0, e.stderr[-3000:]
    meta = json.loads((tmp_path / "subnet" / "metadata.json").read_text())
    assert meta["arch_id"] == found["arch_id"] and 0 <= meta["measured_test_top1"] <= 100


def test_summary_says_what_the_top1_is_and_flags_logits_that_never_moved(tmp_path):
    from nas.search.dnas import DnasResult
    from nas.search.dnas_app import summarise

    flat = [{"entropy": 1.609, "arch_id": "a"}, {"entropy": 1.600, "arch_id": "b"}]
    moved = [{"entropy": 1.609, "arch_id": "a"}, {"entropy": 0.9, "arch_id": "c"}]
    text = summarise(DnasResult(arch=None, history=flat, top1=11.7, out_dir=tmp_path, seconds=1.0))
    assert "found b after 2 epochs" in text and "inherits from the mixture supernet" in text
    assert "barely moved from uniform (mean entropy 1.600, 1.609 at the start)" in text
    text = summarise(DnasResult(arch=None, history=moved, top1=80.0, out_dir=tmp_path, seconds=1.0))
    assert "found c" in text and "barely moved" not in text
