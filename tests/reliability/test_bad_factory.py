"""A ``module:factory`` that does not import, or whose factory returns the wrong type, is one clean line on stderr
with exit code 2 and nothing written, for every command that takes a space or supernet spec.

The commands run as processes: one driver process imports the engine once and forks a child per case, which runs
the command's ``__main__`` module with the case's command line (as ``python -m <command> ...`` would, minus the
interpreter start-up that would otherwise cost most of this file's time); one case also runs through a plain
``python -m`` to show the two agree. Commands that read a trained supernet (``nas.evaluate``, ``nas.export``,
``nas.select``) meet the spec in the run's ``config.yaml``, where ``nas.train`` records it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.reliability.conftest import REPO, env, run_cli

PLUGIN = '''
def not_a_space(**kwargs):
    return 42


def not_a_supernet(space, **kwargs):
    return "a string"
'''

DRIVER = r'''
import json, os, runpy, sys
import time
import torch, hydra  # noqa: F401  (what the commands import, imported once before the forks)
import nas.cli, nas.commands, nas.resolve, nas.train.run, nas.search.app, nas.search.dnas_app  # noqa: F401
import nas.evaluation, nas.export_subnet, nas.export_ticket, nas.selection, hw_profiles.builder  # noqa: F401
import hw_profiles.validation, supernets.static  # noqa: F401  (not the command modules: runpy runs those)

results = []
for case in json.loads(sys.argv[1]):
    os.makedirs(case["cwd"], exist_ok=True)
    err_path = os.path.join(case["cwd"], ".stderr")
    t0 = time.time()
    pid = os.fork()
    if pid == 0:
        os.chdir(case["cwd"])
        fd = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(fd, 2)
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
        sys.argv = [case["module"], *case["args"]]
        code = 0
        try:
            runpy.run_module(case["module"], run_name="__main__", alter_sys=True)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            import traceback
            traceback.print_exc()
            code = 99
        sys.stderr.flush()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    with open(err_path) as fh:
        stderr = fh.read()
    os.remove(err_path)
    results.append({"code": os.waitstatus_to_exitcode(status), "stderr": stderr, "s": time.time() - t0})
print(json.dumps(results))
'''

UNKNOWN = "nosuch_plugin_module:make"
SPACE_OF = {"unknown": UNKNOWN, "wrong_space": "bad_plugin:not_a_space"}
MESSAGE = {
    "unknown": f"{UNKNOWN!r}: cannot import module 'nosuch_plugin_module' (No module named 'nosuch_plugin_module'); "
               "is its directory on PYTHONPATH?",
    "wrong_space": "'bad_plugin:not_a_space' returned a int, not a SearchSpace",
    "wrong_supernet": "'bad_plugin:not_a_supernet' returned a str, not a Supernet",
}


def _run_dir(root: Path, kind: str) -> Path:
    """A trained-run directory whose config.yaml names the bad spec (what the loading commands read first)."""
    run = root / f"run_{kind}"
    run.mkdir()
    space = {"name": SPACE_OF.get(kind, "ofa_mbv3_tiny"), "kwargs": {}}
    supernet = {"name": "bad_plugin:not_a_supernet" if kind == "wrong_supernet" else "ofa_mbv3", "kwargs": {}}
    (run / "config.yaml").write_text(json.dumps({"search_space": space, "supernet": supernet}))
    return run


def _cases(root: Path) -> list[tuple[str, str, list[str], str]]:
    """(command, kind, arguments, path that must not exist afterwards)."""
    cases = []
    for kind in ("unknown", "wrong_space", "wrong_supernet"):
        space = ["search_space=custom", f"search_space.name={SPACE_OF.get(kind, 'ofa_mbv3_tiny')}"]
        net = ["supernet=custom", "supernet.name=bad_plugin:not_a_supernet"] if kind == "wrong_supernet" else []
        run = _run_dir(root, kind)
        cases += [
            ("nas.train", kind, [*space, *net, "out_dir=out"], "out"),
            ("nas.dnas", kind, [*space, *(["supernet={name: bad_plugin:not_a_supernet}"] if net else []),
                                "out_dir=out"], "out"),
            ("nas.evaluate", kind, [f"checkpoint={run}", "n_random=1", "out=out.csv"], "out.csv"),
            ("nas.export", kind, [f"checkpoint={run}", "arch=r32-k3e2-k3e2-k3e2-k3e2-k3e2", "recalibrate=false",
                                  "out=out"], "out"),
            ("nas.select", kind, [f"checkpoint={run}", "budget=1000000", "out=out.json"], "out.json"),
        ]
        if kind != "wrong_supernet":  # these two take a space only
            cases += [
                ("nas.search", kind, [*space, "accuracy=predictor", "accuracy.measurements=m.csv", "out_dir=out"],
                 "out"),
                ("nas.profile", kind, ["hw=local_cpu", f"space.name={SPACE_OF[kind]}", "out=out.json"], "out.json"),
            ]
    return cases


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_factory")
    (root / "plugins").mkdir()
    (root / "plugins" / "bad_plugin.py").write_text(PLUGIN)
    cases = _cases(root)
    spec = [{"module": m, "args": [*args, f"hydra.run.dir={root}/hydra"], "cwd": str(root / f"case{i}")}
            for i, (m, _, args, _) in enumerate(cases)]
    environment = env()
    environment["PYTHONPATH"] = f"{REPO}:{root / 'plugins'}"
    import subprocess

    proc = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(spec)], cwd=root, env=environment,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    return root, environment, [(*case, Path(s["cwd"]), r) for case, s, r in zip(cases, spec, results)]


def test_every_command_refuses_a_bad_factory_in_one_line_with_exit_2_and_nothing_written(outcomes):
    _, _, rows = outcomes
    assert {m for m, *_ in rows} == {"nas.train", "nas.evaluate", "nas.search", "nas.export", "nas.profile",
                                     "nas.select", "nas.dnas"}
    failures = []
    for module, kind, _args, written, cwd, result in rows:
        err = result["stderr"]
        ok = (result["code"] == 2 and err.startswith("error: ") and err.count("\n") == 1
              and MESSAGE[kind] in err and "Traceback" not in err and not (cwd / written).exists())
        if not ok:
            failures.append(f"{module} {kind}: exit {result['code']}, wrote {written}: {(cwd / written).exists()}, "
                            f"stderr {err[-600:]!r}")
    assert not failures, "\n".join(failures)


def test_a_plain_python_m_run_prints_the_same_line(outcomes):
    root, environment, rows = outcomes
    module, _, args, _, _, result = next(r for r in rows if r[0] == "nas.train" and r[1] == "unknown")
    cwd = root / "plain"
    cwd.mkdir()
    proc = run_cli(["-m", module, *args, f"hydra.run.dir={root}/hydra"], cwd=cwd, timeout=300)
    assert (proc.returncode, proc.stderr) == (2, result["stderr"])
    assert not (cwd / "out").exists()
