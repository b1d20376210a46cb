"""Every file the engine writes and reads back is verified, and nothing computed is overwritten: edited subnet
configs/metadata and flipped checkpoint bytes are refused, ``overwrite=true`` replaces only the engine's own files,
latency pricing reports its extrapolated layers, worker objectives are taken exactly as given."""

from __future__ import annotations

import json
import zipfile

import pytest
import torch
from hydra import compose, initialize_config_dir

from nas.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from nas.conf import CONF_DIR
from search_spaces import create_space
from search_spaces.errors import BadInputError
from supernets import SubnetFormatError, create_supernet, load_subnet, save_subnet


@pytest.fixture
def subnet(tmp_path):
    net = create_supernet("ofa_mbv3", "ofa_mbv3_tiny")
    ex = net.export(net.space.max_arch())
    return save_subnet(tmp_path / "sub", ex.module, ex.config, {"arch_id": "x"}), ex


def test_edited_subnet_config_or_metadata_is_refused(subnet):
    out, _ = subnet
    load_subnet(out)
    config = (out / "config.json").read_text()
    assert '"relu"' in config
    (out / "config.json").write_text(config.replace('"relu"', '"hswish"', 1))  # the weights still fit: loads today
    with pytest.raises(SubnetFormatError, match="config.json does not match its metadata"):
        load_subnet(out)
    (out / "config.json").write_text(config)
    meta = json.loads((out / "metadata.json").read_text())
    (out / "metadata.json").write_text(json.dumps({**meta, "arch_id": "forged"}))
    with pytest.raises(SubnetFormatError, match="metadata.json was modified"):
        load_subnet(out)


def test_overwrite_replaces_only_engine_files(subnet):
    out, ex = subnet
    (out / "notes.txt").write_text("mine")
    (out / "runs").mkdir()
    (out / "runs" / "a.log").write_text("mine too")
    with pytest.raises(BadInputError, match="overwrite=true"):
        save_subnet(out, ex.module, ex.config, {"arch_id": "y"})
    save_subnet(out, ex.module, ex.config, {"arch_id": "y"}, overwrite=True)
    assert load_subnet(out).metadata["arch_id"] == "y"
    assert (out / "notes.txt").read_text() == "mine" and (out / "runs" / "a.log").read_text() == "mine too"
    assert not (out / "model.onnx").exists()


def test_overwrite_refuses_a_directory_the_engine_did_not_create(tmp_path, subnet):
    _, ex = subnet
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "cat.jpg").write_bytes(b"meow")
    with pytest.raises(BadInputError, match="was not created by nas.export"):
        save_subnet(foreign, ex.module, ex.config, {}, overwrite=True)
    assert [p.name for p in foreign.iterdir()] == ["cat.jpg"]


def test_flipped_tensor_byte_in_a_checkpoint_is_refused(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", {"model": {"w": torch.arange(4096, dtype=torch.float32)}, "step": 3})
    assert load_checkpoint(path)["step"] == 3
    with zipfile.ZipFile(path) as z:  # the byte offset of the tensor's data record
        info = max(z.infolist(), key=lambda i: i.file_size)
        with open(path, "rb") as fh:
            fh.seek(info.header_offset + 26)
            name_len, extra_len = int.from_bytes(fh.read(2), "little"), int.from_bytes(fh.read(2), "little")
    offset = info.header_offset + 30 + name_len + extra_len + 100
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x10
    path.write_bytes(bytes(data))
    assert torch.load(path, weights_only=True)["model"]["w"][25] != 25  # torch itself reads the changed weight
    with pytest.raises(CheckpointError, match="does not match its content hash"):
        load_checkpoint(path)


def test_latency_extrapolation_is_counted_in_result_json_and_summary(tmp_path):
    from hw_profiles.pricing import space_layer_specs
    from hw_profiles.profile import Entry, HardwareProfile, ProfileMeta
    from nas.search.app import search_from_config, summarise

    specs = space_layer_specs(create_space("ofa_mbv3_fmnist"))
    meta = ProfileMeta(name="local_cpu", device="test", soc=None, runtime="torch", runtime_version=None, threads=1,
                       batch=1, units="ms", method="synthetic", space="ofa_mbv3_fmnist")
    kept = {s.key(): s for s in specs[::2]}
    for s in specs:  # every op keeps one measured entry: an op with none is an error, not an extrapolation
        if s.op not in {k.op for k in kept.values()}:
            kept[s.key()] = s
    HardwareProfile(meta, {k: Entry(mean=0.01) for k in kept}).save(tmp_path / "half.json")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        cfg = compose(config_name="search", overrides=["+hw=local_cpu", f"hw.kwargs.path={tmp_path / 'half.json'}",
                                                       "budget=20", f"out_dir={tmp_path / 's'}", "progress=false"])
    outcome = search_from_config(cfg)
    report = json.loads((tmp_path / "s" / "result.json").read_text())["latency_pricing"]
    n_keys = len({s.key() for s in specs})
    assert report["space_layer_signatures_measured"] == f"{len(kept)}/{n_keys}"
    assert report["evaluated_archs"] == 20 and 0 < report["archs_with_extrapolated_layers"] <= 20
    assert report["extrapolated_layers"] >= report["archs_with_extrapolated_layers"]
    assert f"{report['archs_with_extrapolated_layers']} of 20 architectures have extrapolated layers" in \
        summarise(outcome)


def test_worker_objectives_are_taken_exactly_as_given():
    from nas.search.workers import worker_objectives

    def objectives(*overrides):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
            cfg = compose(config_name="search_worker", overrides=["storage=x.log", "checkpoint=y", *overrides])
        return worker_objectives(cfg.get("objectives"))

    assert objectives() == {"top1": "max", "macs_M": "min"}
    assert objectives("objectives={top1: max}") == {"top1": "max"}
    assert objectives("objectives={top1: max, params_M: min}") == {"top1": "max", "params_M": "min"}


def test_smaller_budget_keeps_every_evaluated_row(tmp_path):
    from tests.reliability import _jobs

    _jobs.search(tmp_path, "pymoo_nsga2", 30)
    before = (tmp_path / "checkpoint.json").read_text(), (tmp_path / "evaluated.csv").read_text()
    with pytest.raises(BadInputError, match="budget=10 is smaller than the 30 architectures"):
        _jobs.search(tmp_path, "pymoo_nsga2", 10)
    assert ((tmp_path / "checkpoint.json").read_text(), (tmp_path / "evaluated.csv").read_text()) == before
    assert _jobs.search(tmp_path, "pymoo_nsga2", 30).n == 30  # the same budget reports them all again


def test_resume_with_a_changed_schedule_is_refused_and_config_kept(tmp_path):
    from nas.train.run import run_train
    from tests.train.conftest import tiny_config

    run = tmp_path / "run"
    run_train(tiny_config(run, "trainer.max_steps_per_epoch=1", "trainer.epochs=1"))
    saved = (run / "config.yaml").read_text()
    with pytest.raises(BadInputError, match=r"trainer.epochs: 1 -> 2\n  trainer.lr: 0.05 -> 0.1"):
        run_train(tiny_config(run, "trainer.max_steps_per_epoch=1", "trainer.epochs=2", "trainer.lr=0.1",
                              "resume=true"))
    assert (run / "config.yaml").read_text() == saved
    run_train(tiny_config(run, "trainer.max_steps_per_epoch=1", "trainer.epochs=2", "resume=true",
                          "allow_config_change=true"))
    assert (run / "config.yaml").read_text() == saved and "epochs: 2" in (run / "config.resume1.yaml").read_text()
