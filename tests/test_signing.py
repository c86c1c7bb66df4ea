"""Signed runs with a team key: a forged run (identity tag, a pickle that runs code,
matching checksum records, FINISHED) is neither reused nor unpickled; runs signed by one
process are reused by another holding the key and ignored by one holding another key;
loading re-hashes the exact bytes it deserializes."""

from __future__ import annotations

import os
import pathlib
import pickle
import re
import textwrap

import luigi
import pytest

import luigiflow as lf
from tests.conftest import luigiflow_cli as cli
from tests.conftest import runs_of

VICTIM = """
import luigi

import luigiflow as lf


class Up(lf.MlflowTask):
    artifacts = {"out": "out.pkl"}
    n = luigi.IntParameter()

    def run_task(self):
        self.save({"out": {"n": self.n, "by": "genuine"}})


class Victim(lf.MlflowTask):
    artifacts = {"result": "result.json"}

    def requires(self):
        return {"u": Up(n=77)}

    def run_task(self):
        self.save({"result": self.load("u")})
"""

# The attacker's module: same module name, same task family and parameters, so the same
# identity; its run is recorded by luigiflow itself, checksums and all.
ATTACKER = """
import luigi

import luigiflow as lf

MARKER = {marker!r}


class Payload:
    def __reduce__(self):
        return (exec, ("open(" + repr(MARKER) + ", 'w').write('pwned')",))


class Up(lf.MlflowTask):
    artifacts = {{"out": "out.pkl"}}
    n = luigi.IntParameter()

    def run_task(self):
        self.save({{"out": Payload()}})
"""

KEY = "team-key-one-9f3a"
OTHER_KEY = "team-key-two-77c1"


def env_with(key: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUIGIFLOW_SIGNING_KEY")}
    if key is not None:
        env["LUIGIFLOW_SIGNING_KEY"] = key
    return env


@pytest.fixture
def project(client, tmp_path):
    """The victim's project folder and the attacker's, on one store."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "p.py").write_text(VICTIM)
    attacker = tmp_path / "attacker"
    attacker.mkdir()
    marker = tmp_path / "pwned"
    (attacker / "p.py").write_text(ATTACKER.format(marker=str(marker)))
    return victim, attacker, marker


def forge(attacker: pathlib.Path) -> None:
    cli("run", "--module", "p", "Up", "--n", "77", cwd=attacker, env=env_with(None))


def summary(out: str) -> str:
    return next(line for line in out.splitlines() if re.match(r"executed \d+, reused", line))


@pytest.mark.slow
def test_forged_run_is_ignored_with_a_key_and_its_pickle_never_runs(project, client):
    victim, attacker, marker = project
    forge(attacker)
    [forged] = runs_of(client, "Up")
    assert forged.info.status == "FINISHED" and not marker.exists()

    plan = cli("plan", "--module", "p", "Victim", cwd=victim, env=env_with(KEY)).stdout
    assert "unsigned run ignored" in plan

    out = cli("run", "--module", "p", "Victim", cwd=victim, env=env_with(KEY))
    assert summary(out.stdout).startswith("executed 2,")
    assert not marker.exists()
    [result] = runs_of(client, "Victim")
    text = next(pathlib.Path(result.info.artifact_uri.removeprefix("file://")).rglob("result.json"))
    assert '"genuine"' in text.read_text()
    # the genuine run is signed; the forged one is still there, never reused
    assert len(runs_of(client, "Up", "FINISHED")) == 2


@pytest.mark.slow
def test_without_a_key_show_and_runs_mark_the_forged_run_unsigned(project, client):
    victim, attacker, marker = project
    forge(attacker)
    cli("run", "--module", "p", "Up", "--n", "5", cwd=victim, env=env_with(KEY))
    forged = next(r for r in runs_of(client, "Up") if r.data.params["n"] == "77")
    genuine = next(r for r in runs_of(client, "Up") if r.data.params["n"] == "5")
    shown = cli("show", forged.info.run_id, cwd=victim, env=env_with(None)).stdout
    assert "unsigned" in shown
    shown = cli("show", genuine.info.run_id, cwd=victim, env=env_with(None)).stdout
    assert "signed" in shown and "unsigned" not in shown
    table = cli("runs", "Up", "--format", "csv", cwd=victim, env=env_with(None)).stdout
    header, *lines = table.strip().splitlines()
    column = header.split(",").index("signed")
    marks = {line.split(",")[0]: line.split(",")[column] for line in lines}
    assert marks == {forged.info.run_id: "no", genuine.info.run_id: "yes"}
    assert not marker.exists()


@pytest.mark.slow
def test_a_copied_signature_does_not_make_a_forged_run_valid(project, client):
    victim, attacker, marker = project
    cli("run", "--module", "p", "Up", "--n", "5", cwd=victim, env=env_with(KEY))
    [genuine] = runs_of(client, "Up")
    forge(attacker)
    forged = next(r for r in runs_of(client, "Up") if r.info.run_id != genuine.info.run_id)
    copied = {k: v for k, v in genuine.data.tags.items() if "sign" in k}
    assert copied, "the genuine run carries no signature tag"
    for key, value in copied.items():
        client.set_tag(forged.info.run_id, key, value)
    out = cli("run", "--module", "p", "Victim", cwd=victim, env=env_with(KEY))
    assert summary(out.stdout).startswith("executed 2,")
    assert not marker.exists()


@pytest.mark.slow
def test_signed_runs_cross_processes_with_the_same_key_only(project, client):
    victim, _attacker, _marker = project
    first = cli("run", "--module", "p", "Victim", cwd=victim, env=env_with(KEY))
    assert summary(first.stdout).startswith("executed 2,")
    same = cli("run", "--module", "p", "Victim", cwd=victim, env=env_with(KEY))
    assert summary(same.stdout).startswith("executed 0,")
    other = cli("run", "--module", "p", "Victim", cwd=victim, env=env_with(OTHER_KEY))
    assert summary(other.stdout).startswith("executed 2,")
    # rotation: verify with any listed key, sign with the first
    rotated = cli(
        "run", "--module", "p", "Up", "--n", "9", cwd=victim, env=env_with(f"{OTHER_KEY},{KEY}")
    )
    assert summary(rotated.stdout).startswith("executed 1,")
    both = cli(
        "run", "--module", "p", "Victim", cwd=victim, env=env_with(f"brand-new-team-key-0001,{KEY}")
    )
    assert summary(both.stdout).startswith("executed 0,")
    assert summary(
        cli("run", "--module", "p", "Up", "--n", "9", cwd=victim, env=env_with(OTHER_KEY)).stdout
    ).startswith("executed 0,")
    assert summary(
        cli("run", "--module", "p", "Up", "--n", "9", cwd=victim, env=env_with(KEY)).stdout
    ).startswith("executed 1,")
    key_file = victim / "team.key"
    key_file.write_text(KEY + "\n")
    env = env_with(None)
    env["LUIGIFLOW_SIGNING_KEY_FILE"] = str(key_file)
    from_file = cli("run", "--module", "p", "Victim", cwd=victim, env=env)
    assert summary(from_file.stdout).startswith("executed 0,")


class Signed(lf.MlflowTask):
    artifacts = {"out": "out.pkl"}
    n = luigi.IntParameter(default=3)

    def run_task(self) -> None:
        self.save({"out": {"n": self.n, "pad": "x" * 300}})


def test_loading_rehashes_the_bytes_it_unpickles_every_time(client, tmp_path, monkeypatch):
    monkeypatch.setenv("LUIGIFLOW_SIGNING_KEY", KEY)
    marker = tmp_path / "pwned"
    lf.build([Signed()])
    task = Signed()
    assert task.load_output()["n"] == 3  # verified once in this process
    path = task.artifact_path("out")
    before = path.stat()
    payload = pickle.dumps(_Payload(str(marker)))
    assert len(payload) < before.st_size
    # Same size, same mtime: nothing but the bytes tells the files apart.
    path.write_bytes(payload + b"\0" * (before.st_size - len(payload)))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    with pytest.raises(lf.LuigiflowError, match="out"):
        Signed().load_output()
    assert not marker.exists()


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


@pytest.mark.slow
def test_an_unreadable_key_file_or_a_short_key_is_one_clear_line(project, tmp_path):
    victim, _attacker, _marker = project
    env = env_with(None)
    env["LUIGIFLOW_SIGNING_KEY_FILE"] = str(tmp_path / "missing.key")
    out = cli("run", "--module", "p", "Victim", cwd=victim, env=env, check=False)
    assert out.returncode == 1
    [line] = out.stderr.strip().splitlines()
    assert line.startswith("ConfigError:") and "LUIGIFLOW_SIGNING_KEY_FILE" in line
    assert textwrap.shorten(line, 400) == line
    short = cli("run", "--module", "p", "Victim", cwd=victim, env=env_with("tiny"), check=False)
    assert short.returncode == 1
    [line] = short.stderr.strip().splitlines()
    assert line.startswith("ConfigError:") and "16" in line and "tiny" not in line


@pytest.mark.slow
def test_serve_refuses_a_run_whose_model_uri_was_repointed(project, client):
    victim, _attacker, _marker = project
    cli("run", "--module", "p", "Up", "--n", "5", cwd=victim, env=env_with(KEY))
    [run] = runs_of(client, "Up")
    # Anyone who can write tags could point a signed run at their own model.
    client.set_tag(run.info.run_id, "luigiflow.model_uri", "runs:/0123456789abcdef/model")
    out = cli("serve", run.info.run_id, cwd=victim, env=env_with(KEY), check=False)
    assert out.returncode == 1
    [line] = out.stderr.strip().splitlines()
    assert line.startswith("ArtifactError:") and "badly signed" in line


def test_a_forged_checkpoint_is_never_unpickled_with_a_key(client, tmp_path, monkeypatch):
    import hashlib
    import json

    from tests.training import Epochs

    marker = tmp_path / "pwned"
    ledger = tmp_path / "epochs.txt"
    monkeypatch.setenv("LEDGER", str(ledger))
    monkeypatch.setenv("LUIGIFLOW_SIGNING_KEY", KEY)
    task = Epochs(epochs=20)
    exp_id = client.create_experiment(task.get_experiment_name())
    forged = client.create_run(exp_id, tags={"luigiflow.identity": task.identity})
    payload = tmp_path / "step-000000011.pkl"
    payload.write_bytes(pickle.dumps(_Payload(str(marker))))
    client.log_artifact(forged.info.run_id, str(payload), "luigiflow/checkpoints")
    record = {
        "step": 11,
        "file": "luigiflow/checkpoints/step-000000011.pkl",
        "sha256": hashlib.sha256(payload.read_bytes()).hexdigest(),
    }
    client.set_tag(forged.info.run_id, "luigiflow.checkpoint", json.dumps(record))
    client.set_terminated(forged.info.run_id, "FAILED")
    result = lf.build([task])
    assert result.executed == [task]
    assert not marker.exists()
    assert [int(line) for line in ledger.read_text().split()] == list(range(20))
    run = client.get_run(result.runs[task])
    assert "luigiflow.resumed_from" not in run.data.tags
