"""GM-NAS few-shot supernets: distance, min-cut, family routing/export/state, splits on NB201 and OFA, resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nas.checkpoints import load_checkpoint, load_supernet
from nas.data import create_data
from nas.train import Trainer
from nas.train.samplers.gmnas import GMNASSampler, filter_cosine_distance, min_cut_partition
from search_spaces import create_space
from search_spaces.errors import BadInputError
from supernets import create_supernet
from tests.train.conftest import small_config, small_data

NB = dict(C=4, N=1, in_chans=1, resolution=28)


def _data():
    return small_data(crop_pad=0, flip=False)


def _cfg(**kw):
    return small_config(**({"grad_clip": 5.0} | kw))


def _family(members=2, space=None):
    torch.manual_seed(0)
    return create_supernet("fewshot", space or create_space("nb201", **NB), base="nb201", members=members)


def test_filter_cosine_distance_sums_one_minus_mean_filter_cosine_over_layers():
    a = {"w": torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]]), "v": torch.ones(2, 3), "bn": torch.ones(3)}
    b = {"w": torch.tensor([[2.0, 0.0], [0.0, -1.0], [5.0, 0.0]]), "v": torch.ones(2, 3), "bn": -torch.ones(3)}
    # layer w: filters 0 (cos 1) and 1 (cos -1) count, filter 2 is zero in a; layer v: identical; bn is 1-D
    assert filter_cosine_distance(a, b) == pytest.approx(1.0 - 0.0 + 0.0)
    assert filter_cosine_distance(a, a) == pytest.approx(0.0, abs=1e-12)
    assert filter_cosine_distance(a, {"x": torch.ones(2, 2)}) == 0.0


def test_min_cut_partition_separates_the_two_clusters():
    d = np.full((5, 5), 2.0)
    for g in ([0, 3], [1, 2, 4]):
        for i in g:
            for j in g:
                d[i, j] = 0.1 if i != j else 0.0
    a, b, score = min_cut_partition(d)
    assert sorted([sorted(a), sorted(b)]) == [[0, 3], [1, 2, 4]] and score == pytest.approx(2.0)
    a, b, _ = min_cut_partition(d[:3, :3])  # 3 choices: 1 vs 2
    assert sorted(map(len, (a, b))) == [1, 2]


def test_family_routes_exports_and_round_trips_its_partition():
    fam = _family()
    space = fam.space
    gene = 2
    new = fam.split(0, gene, [1, 4])  # skip_connect and avg_pool of edge 2 move to member 1
    assert new == 1 and fam.n_members == 2
    assert fam.choices_of(0)[gene] == (0, 2, 3) and fam.choices_of(1)[gene] == (1, 4)
    rng = np.random.default_rng(0)
    x = torch.randn(2, 1, 28, 28)
    fam.eval()
    for _ in range(10):
        arch = space.sample(rng)
        want = 1 if space.encode(arch)[gene] in (1, 4) else 0
        assert fam.route(arch) == want
        with fam.use(arch):
            y = fam(x)
            assert fam.active_member == want
        torch.testing.assert_close(fam.export(arch).module.eval()(x), y)
        torch.testing.assert_close(fam.members[want].export(arch).module.eval()(x), y)
    with torch.no_grad():
        next(fam.members[1].parameters()).add_(1.0)  # members are independent after the split
    assert not torch.equal(next(fam.members[0].parameters()), next(fam.members[1].parameters()))
    again = _family()
    again.load_state_dict(fam.state_dict())
    assert again.n_members == 2 and again.choices_of(1) == fam.choices_of(1)
    with pytest.raises(ValueError, match="family is full"):
        fam.split(0, 0, [0])


def test_split_on_nb201_picks_an_edge_and_a_balanced_partition():
    fam = _family()
    s = GMNASSampler(fam.space, n_batches=2, batch_size=16, seed=0)
    s.bind(fam, steps_per_epoch=1, epochs=1, data=_data())
    grads = s.choice_gradients(0, 0, s._batches())
    assert set(grads) == {0, 1, 2, 3, 4}
    assert abs(filter_cosine_distance(grads[3], grads[3])) < 1e-9 and filter_cosine_distance(grads[1], grads[3]) > 0
    rec = s.split_member(0, epoch=0)
    assert fam.n_members == 2 and sorted(map(len, (rec["keep"], rec["moved"]))) == [2, 3]
    assert sorted(rec["keep"] + rec["moved"]) == [0, 1, 2, 3, 4]
    assert fam.choices_of(1)[rec["gene_index"]] == tuple(rec["moved"])
    d = np.asarray(rec["dist"])
    assert np.allclose(d, d.T) and np.all(np.diag(d) == 0)
    assert rec["score"] == pytest.approx(np.mean([d[i, j] for i in rec["keep"] for j in rec["moved"]]))


def test_split_on_ofa_uses_kernel_and_expand_genes_of_a_block():
    torch.manual_seed(0)
    space = create_space("ofa_mbv3_tiny")
    fam = create_supernet("fewshot", space, base="ofa_mbv3", members=2)
    s = GMNASSampler(space, n_batches=1, batch_size=16, split_groups=["ks", "e"], seed=0)
    s.candidates = s.candidates[:2] + s.candidates[10:12]  # ks0, ks1, e0, e1: keep the test fast
    s.bind(fam, steps_per_epoch=1, epochs=1, data=_data())
    rec = s.split_member(0, epoch=0)
    assert rec["gene"] in ("ks0", "ks1", "e0", "e1") and sorted(map(len, (rec["keep"], rec["moved"]))) == [1, 2]
    arch = fam.sample(1, np.random.default_rng(0))
    assert fam.route(arch) == 1
    with pytest.raises(BadInputError, match="supernet=fewshot"):
        s.bind(create_supernet("ofa_mbv3", space), steps_per_epoch=1, epochs=1)


class _Crash(GMNASSampler):
    def plan(self, step, batch):
        if step == 7:
            raise KeyboardInterrupt
        return super().plan(step, batch)


def test_training_splits_on_schedule_and_resumes_exactly(tmp_path):
    kw = dict(split_epochs=[1], n_batches=1, batch_size=16, seed=0)
    fam = _family()
    with pytest.raises(KeyboardInterrupt):
        Trainer(fam, _data(), _Crash(fam.space, **kw), _cfg(), tmp_path / "a").fit()
    state = load_checkpoint(tmp_path / "a" / "checkpoint.pt")
    assert int(state["model"]["n_active"]) == 2 and len(state["sampler"]["splits"]) == 1
    fam = _family()
    Trainer(fam, _data(), GMNASSampler(fam.space, **kw), _cfg(), tmp_path / "a").fit(resume=True)
    fam = _family()
    Trainer(fam, _data(), GMNASSampler(fam.space, **kw), _cfg(), tmp_path / "b").fit()
    a, b = load_supernet(tmp_path / "a"), load_supernet(tmp_path / "b")
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name
    assert a.n_members == 2 and a.choices_of(1) == fam.choices_of(1)  # the saved family routes as trained
    arch = a.sample(1, np.random.default_rng(1))
    assert a.route(arch) == 1 == fam.route(arch)


def test_cli_trains_a_family_and_evaluate_routes_each_arch_to_its_member(tmp_path):
    import csv
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    out = tmp_path / "run"
    train = [sys.executable, "-m", "nas.train", "sampler=gmnas", "supernet=fewshot", "search_space=ofa_mbv3_tiny",
             "sampler.kwargs.split_epochs=[1]", "sampler.kwargs.n_batches=1", "sampler.kwargs.batch_size=16",
             "sampler.kwargs.split_groups=[e]", "trainer.epochs=2", "trainer.max_steps_per_epoch=2",
             f"out_dir={out}", "data.kwargs.train_limit=128", "data.kwargs.val_size=100", "trainer.batch_size=32",
             "trainer.threads=1", "trainer.progress=false", "trainer.tensorboard=false", "trainer.eval_every=0",
             "hydra.run.dir=" + str(tmp_path / "h1")]
    proc = subprocess.run(train, cwd=repo, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    fam = load_supernet(out)
    assert fam.n_members == 2
    evaluate = [sys.executable, "-m", "nas.evaluate", f"checkpoint={out}", "n_random=4", "n_images=100",
                "calib_images=64", "calib_batch=32", "data.kwargs.val_size=100", "progress=false",
                f"out={tmp_path / 'm.csv'}", "hydra.run.dir=" + str(tmp_path / "h2")]
    proc = subprocess.run(evaluate, cwd=repo, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = list(csv.DictReader(open(tmp_path / "m.csv")))
    assert len(rows) == 6
    from nas.evaluation import EvalSet, evaluate_arch

    evalset = EvalSet(create_data("fashion_mnist", val_size=100), split="val", n_images=100, calib_images=64,
                      calib_batch=32, seed=0, batch_size=500)
    for r in rows[:3]:  # each measurement is the routed member's own (BN-recalibrated) accuracy
        arch = fam.space.from_json(r["arch"])
        member = fam.members[fam.route(arch)]
        assert evaluate_arch(member, arch, evalset)["top1"] == pytest.approx(float(r["top1"]), abs=1e-6)


def test_restart_reinitialises_both_sub_supernets_of_a_split():
    fam = _family()
    before = [p.clone() for p in fam.member(0).parameters()]
    s = GMNASSampler(fam.space, n_batches=1, batch_size=16, restart=True, seed=0)
    s.candidates = [0]
    s.bind(fam, steps_per_epoch=1, epochs=1, data=_data())
    s.split_member(0, epoch=0)
    after0, after1 = list(fam.member(0).parameters()), list(fam.member(1).parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after0))
    assert any(not torch.equal(a, b) for a, b in zip(after0, after1))  # two fresh, different initialisations
