from __future__ import annotations

import ast
import csv

import numpy as np
import pytest

from search_spaces import (
    SPACES,
    InvalidArchError,
    MBv3Arch,
    NB201Arch,
    NB201IndexMap,
    create_space,
)
from search_spaces.registry import UnknownNameError

ALL = SPACES.names()


def test_ofa_cardinality_matches_paper():
    sp = create_space("ofa_mbv3")
    assert sp.cardinality() // len(sp.resolutions) == (9**2 + 9**3 + 9**4) ** 5
    assert 2.17e19 < sp.cardinality() / len(sp.resolutions) < 2.19e19


def test_ofa_widths_both_variants():
    assert create_space("ofa_mbv3").widths == (16, 16, 24, 40, 80, 112, 160, 960, 1280)
    assert create_space("ofa_mbv3_w12").widths == (24, 24, 32, 48, 96, 136, 192, 1152, 1536)


def test_canonical_id_ignores_inactive_blocks():
    sp = create_space("ofa_mbv3")
    a = sp.sample(3)
    ks = list(a.ks)
    per = sp.max_depth
    inactive = [i for i in range(len(ks)) if i % per >= a.d[i // per]]
    assert inactive, "sample should have an inactive block"
    ks_raw = [k if k is not None else 7 for k in ks]
    b = MBv3Arch(ks=tuple(ks_raw), e=tuple(x if x is not None else 6 for x in a.e), d=a.d, r=a.r)
    assert a == b and hash(a) == hash(b) and a.id == b.id
    assert sp.encode(a).tolist() == sp.encode(b).tolist()


@pytest.mark.parametrize("name", ALL)
def test_encode_decode_roundtrip_and_bounds(name):
    sp = create_space(name)
    lo, hi = sp.bounds()
    rng = np.random.default_rng(0)
    for _ in range(50):
        a = sp.sample(rng)
        x = sp.encode(a)
        assert np.all(x >= lo) and np.all(x <= hi)
        assert sp.decode(x) == a
        assert sp.from_json(sp.to_json(a)) == a


@pytest.mark.parametrize("name", ALL)
def test_sampling_deterministic_and_operators_valid(name):
    sp = create_space(name)
    a = [sp.sample(np.random.default_rng(7)) for _ in range(2)]
    assert a[0] == a[1]
    rng = np.random.default_rng(1)
    x, y = sp.sample(rng), sp.sample(rng)
    assert sp.mutate(x, rng, prob=0.0) == x
    changed = sum(sp.mutate(x, np.random.default_rng(s), prob=1.0) != x for s in range(10))
    assert changed >= 8
    for s in range(20):
        c = sp.crossover(x, y, np.random.default_rng(s))
        sp.validate(c)
        genes_x, genes_y, genes_c = sp.encode(x), sp.encode(y), sp.encode(c)
        active = sp.active(c)
        assert np.all((genes_c == genes_x) | (genes_c == genes_y) | ~active)


@pytest.mark.parametrize("name", ALL)
def test_onehot_masks_inactive(name):
    sp = create_space(name)
    a = sp.min_arch()
    f = sp.onehot(a)
    assert f.sum() == sp.active(a).sum()


def test_bad_kernel_names_field_value_and_choices():
    sp = create_space("ofa_mbv3")
    a = sp.max_arch()
    bad = MBv3Arch(ks=(4,) + a.ks[1:], e=a.e, d=a.d, r=a.r)
    with pytest.raises(InvalidArchError, match=r"ks0=4 .*\[3, 5, 7\]"):
        sp.validate(bad)


def test_wrong_block_count_and_resolution():
    sp = create_space("ofa_mbv3")
    with pytest.raises(InvalidArchError, match="20 blocks"):
        sp.validate(MBv3Arch(ks=(3,) * 16, e=(3,) * 16, d=(4,) * 4, r=224))
    a = sp.max_arch()
    with pytest.raises(InvalidArchError, match=r"r=225 .*128"):
        sp.validate(MBv3Arch(ks=a.ks, e=a.e, d=a.d, r=225))


def test_unknown_space_name_lists_close_matches():
    with pytest.raises(UnknownNameError, match="ofa_mbv3"):
        create_space("ofa_mbv")


def test_arch_of_other_space_rejected():
    with pytest.raises(InvalidArchError, match="NB201Arch"):
        create_space("ofa_mbv3").validate(NB201Arch(("none",) * 6))


def test_nb201_string_roundtrip_and_errors():
    s = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
    sp = create_space("nb201")
    a = sp.parse(s)
    assert a.to_str() == s and a.id == s
    assert sp.from_ordinal(sp.ordinal(a)) == a
    with pytest.raises(InvalidArchError, match="conv_5x5"):
        sp.parse(s.replace("nor_conv_3x3~0|+", "conv_5x5~0|+", 1))
    with pytest.raises(InvalidArchError, match="3 '\\+'"):
        sp.parse("|none~0|")


def test_nb201_index_map_agrees_with_benchmark(yardsticks):
    table = yardsticks / "nb201" / "nats_bench_tss_200ep.csv"
    m = NB201IndexMap.from_csv(table)
    assert len(m) == 15625
    with open(table) as fh:
        rows = [r["ArchitectureString"] for r in csv.DictReader(fh)]
    for i in range(15625):
        a = m.arch(i)
        assert m.index(a) == i and a.to_str() == rows[i]
    assert len({m.arch(i) for i in range(15625)}) == 15625


def test_nb201_cost_model_matches_benchmark(yardsticks):
    sp = create_space("nb201")
    m = NB201IndexMap.from_csv(yardsticks / "nb201" / "nats_bench_tss_200ep.csv")
    with open(yardsticks / "nb201" / "nb201_cost.csv") as fh:
        cost = list(csv.DictReader(fh))
    for i in range(0, 15625, 97):
        a = m.arch(i)
        assert sp.params(a) == int(cost[i]["params"])
        assert abs(sp.macs(a) / 1e6 - float(cost[i]["flops_M"])) < 1e-4


def test_ofa_cost_model_matches_measured_table(yardsticks):
    sp = create_space("ofa_mbv3")
    with open(yardsticks / "ofa_mbv3_imagenet" / "dev.csv") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows[:200]:
        a = sp.from_dict(ast.literal_eval(row["Sub-network"]))
        assert sp.macs(a) == int(row["MACs"])
        assert sp.params(a) == int(row["Model Parameters"])
