"""Profile files: key grammar, round-trips, validation errors, OFA table loading."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from hw_profiles import Entry, HardwareProfile, KeyFormatError, ProfileFormatError, ProfileMeta, load_ofa_tables
from hw_profiles.keys import parse_key
from search_spaces import LayerSpec, create_space


def _meta(**kw) -> ProfileMeta:
    base = dict(name="test_dev", device="Test CPU", soc=None, runtime="torch", runtime_version="torch 2",
                threads=1, batch=1, units="ms", method="unit test")
    base.update(kw)
    return ProfileMeta(**base)


def _profile() -> HardwareProfile:
    space = create_space("ofa_mbv3_tiny")
    specs = {s.key(): s for s in space.layers(space.sample(3))}
    entries = {k: Entry(mean=0.1 + i / 7, std=0.01 * i, count=5 + i, median=0.1 + i / 8) for i, k in enumerate(specs)}
    entries[next(iter(specs))] = Entry(mean=0.5, std=0.02, count=40)  # an OFA-style entry without median
    return HardwareProfile(_meta(provenance={"by": "test"}), entries)


@pytest.mark.parametrize("space_name", ["ofa_mbv3", "ofa_mbv3_w12", "ofa_mbv3_tiny"])
def test_parse_key_inverts_layerspec_key(space_name: str) -> None:
    space = create_space(space_name)
    rng = np.random.default_rng(0)
    for _ in range(20):
        for spec in space.layers(space.sample(rng)):
            assert parse_key(spec.key()) == spec


def test_bits_extension_is_compatible() -> None:
    spec = LayerSpec("mbconv", 14, 40, 80, kernel=5, stride=2, mid_c=240, se=True, act="hswish", bits=8)
    assert spec.key().endswith("-hs:1-bits:8")
    assert parse_key(spec.key()) == spec
    assert "bits" not in LayerSpec("mbconv", 14, 40, 80, kernel=5, stride=2, mid_c=240).key()


@pytest.mark.parametrize("bad", ["conv-input:8x8x3", "expanded_conv-input:8x8x16-output:8x8x16-expand:48",
                                 "Conv-input:8x8x3-output:3x3x16", "Conv-input:8x9x3-output:4x4x16"])
def test_parse_key_rejects_malformed(bad: str) -> None:
    with pytest.raises(KeyFormatError, match="input"):
        parse_key(bad)


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_round_trip(tmp_path: Path, suffix: str) -> None:
    prof = _profile()
    path = prof.save(tmp_path / f"p{suffix}")
    back = HardwareProfile.load(path)
    assert back.to_dict() == prof.to_dict()
    assert back.meta == prof.meta and dict(back.entries) == dict(prof.entries)
    assert not list(tmp_path.glob(".p*"))  # no temp files left behind


def _write(tmp_path: Path, doc: object) -> Path:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    return path


def _mutations() -> list[tuple[str, object, str]]:
    good = _profile().to_dict()
    key = next(iter(good["entries"]))

    def mutate(fn):
        doc = json.loads(json.dumps(good))
        fn(doc)
        return doc

    return [
        ("unknown top-level", mutate(lambda d: d.update(extra=1)), r"unknown field\(s\) \['extra'\]"),
        ("unknown meta", mutate(lambda d: d["meta"].update(gpu="x")), r"meta: unknown field\(s\) \['gpu'\]"),
        ("missing meta", mutate(lambda d: d["meta"].pop("device")), r"missing required field\(s\) \['device'\]"),
        ("negative latency", mutate(lambda d: d["entries"][key].update(mean=-1.0)), "latency must be positive"),
        ("zero latency", mutate(lambda d: d["entries"][key].update(mean=0.0)), "latency must be positive"),
        ("negative std", mutate(lambda d: d["entries"][key].update(std=-0.1)), "std must be >= 0"),
        ("bad count", mutate(lambda d: d["entries"][key].update(count=0)), "count must be an int >= 1"),
        ("unknown entry field", mutate(lambda d: d["entries"][key].update(var=1.0)), r"unknown field\(s\) \['var'\]"),
        ("bad key", mutate(lambda d: d["entries"].update({"Pool-input:1x1": {"mean": 1.0}})),
         "unrecognised operator signature 'Pool-input:1x1'"),
        ("units", mutate(lambda d: d["meta"].update(units="ns")), "meta.units must be one of"),
        ("threads", mutate(lambda d: d["meta"].update(threads=0)), "meta.threads must be an int >= 1 or null"),
        ("format", mutate(lambda d: d.update(format="ofa")), "format must be 'nas-engine/hw-profile'"),
        ("version", mutate(lambda d: d.update(version=99)), "unsupported profile version 99"),
    ]


@pytest.mark.parametrize("case", _mutations(), ids=lambda c: c[0])
def test_malformed_files_give_clear_errors(tmp_path: Path, case: tuple[str, object, str]) -> None:
    _, doc, message = case
    path = _write(tmp_path, doc)
    with pytest.raises(ProfileFormatError, match=message) as info:
        HardwareProfile.load(path)
    assert str(path) in str(info.value)


def test_invalid_yaml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "p.yaml"
    bad.write_text("meta: [unclosed\n")
    with pytest.raises(ProfileFormatError, match="not valid YAML"):
        HardwareProfile.load(bad)
    with pytest.raises(FileNotFoundError, match="no hardware profile"):
        HardwareProfile.load(tmp_path / "absent.json")
    with pytest.raises(ProfileFormatError, match=r"\.json, \.yaml or \.yml"):
        _profile().save(tmp_path / "p.txt")


def test_yaml_is_loaded_safely(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("!!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ProfileFormatError, match="not valid YAML"):
        HardwareProfile.load(path)


def test_ofa_tables_pool_duplicate_keys(tmp_path: Path) -> None:
    key = "Conv_2-input:1x1x1152-output:1x1x1536"
    (tmp_path / "160_lookup_table.yaml").write_text(yaml.safe_dump({key: {"count": 10, "mean": 1.0, "std": 0.1}}))
    (tmp_path / "224_lookup_table.yaml").write_text(yaml.safe_dump({key: {"count": 30, "mean": 2.0, "std": 0.2}}))
    entry = load_ofa_tables(tmp_path)[key]
    assert entry.count == 40
    assert entry.mean == pytest.approx((10 * 1.0 + 30 * 2.0) / 40)
    var = (10 * (0.01 + (1.0 - 1.75) ** 2) + 30 * (0.04 + (2.0 - 1.75) ** 2)) / 40
    assert entry.std == pytest.approx(var**0.5)


def test_ofa_note10_tables_cover_w12_space(yardsticks: Path) -> None:
    """Every key of 100 random w1.2 subnets at r = 160..224 step 16 is in OFA's Note10 tables."""
    directory = yardsticks / "ofa_note10_lut"
    tables = {r: yaml.safe_load((directory / f"{r}_lookup_table.yaml").read_text()) for r in range(160, 225, 16)}
    space = create_space("ofa_mbv3_w12", resolutions=tuple(tables))
    rng = np.random.default_rng(0)
    used = set()
    for _ in range(100):
        arch = space.sample(rng)
        for spec in space.layers(arch):
            assert spec.key() in tables[arch.r], spec.key()
            used.add((arch.r, spec.key()))
    merged = load_ofa_tables(directory)
    # shared keys: Conv_2 and Logits (all five tables), and the 6x6 (176/192) and 7x7 (208/224) last-stage inner
    # blocks, Conv_1 and AvgPool2D (9 + 2 keys per pair)
    assert len(merged) == 480 - 2 * 4 - 2 * 11
    assert len(used) > 400
