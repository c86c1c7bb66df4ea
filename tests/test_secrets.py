"""Secrets never reach the shared store: parameter values with secret-looking names,
the signing key and environment variable values appear nowhere in the database or the
artifact tree, whether the run finishes, fails or is part of a sweep."""

from __future__ import annotations

import json
import os
import pathlib
import textwrap

import pytest

from tests.conftest import luigiflow_cli as cli
from tests.conftest import runs_of

pytestmark = pytest.mark.slow  # runs builds in subprocesses

TASKS = '''
import os

import luigi

import luigiflow as lf


class Deploy(lf.MlflowTask):
    """A task that is handed secrets, as users do."""

    artifacts = {"out": "out.json"}
    api_token = luigi.Parameter()
    db_password = luigi.Parameter(significant=False)
    size = luigi.IntParameter(default=1)

    def run_task(self):
        if self.size < 0:
            raise RuntimeError(
                f"login failed with {self.api_token} {self.db_password} "
                f"{os.environ['MY_SERVICE_TOKEN']}"
            )
        self.save({"out": {"size": self.size}}, metrics={"size": self.size})
'''

PARAM_TOKEN = "TokParam7781xq"
PARAM_PASSWORD = "Hunter2Hunter2zz"
SWEEP_TOKEN = "SweepTok4410kk"
ENV_TOKEN = "EnvTok5523mm"
SIGNING_KEY = "TeamKey9931ppQrs8844"


def store_files(tmp_path: pathlib.Path) -> list[pathlib.Path]:
    """Everything the store holds: the database (with its WAL) and every artifact."""
    files = [p for p in tmp_path.glob("mlflow.db*") if p.is_file()]
    files += [p for p in (tmp_path / "mlruns").rglob("*") if p.is_file()]
    return files


def test_secrets_appear_nowhere_in_the_store(client, tmp_path):
    (tmp_path / "secret_tasks.py").write_text(TASKS)
    env = dict(os.environ, MY_SERVICE_TOKEN=ENV_TOKEN, LUIGIFLOW_SIGNING_KEY=SIGNING_KEY)
    common = ["--module", "secret_tasks", "Deploy", "--db-password", PARAM_PASSWORD]
    cli("run", *common, "--api-token", PARAM_TOKEN, cwd=tmp_path, env=env)
    failed = cli(
        "run",
        *common,
        "--api-token",
        PARAM_TOKEN,
        "--size",
        "-1",
        check=False,
        cwd=tmp_path,
        env=env,
    )
    assert failed.returncode == 1
    (tmp_path / "sweep.toml").write_text(
        textwrap.dedent(
            f"""
            [pipeline]
            module = "secret_tasks"
            task = "Deploy"

            [params]
            api_token = "{SWEEP_TOKEN}"
            db_password = "{PARAM_PASSWORD}"

            [sweep]
            metric = "size"
            [sweep.grid]
            size = [1, 2]
            """
        )
    )
    cli("run", "--config", "sweep.toml", cwd=tmp_path, env=env)

    runs = runs_of(client, "Deploy")
    assert sorted(r.info.status for r in runs) == ["FAILED", "FINISHED", "FINISHED", "FINISHED"]
    # the secret parameters are recorded, with their values redacted; others as usual
    for run in runs:
        assert set(run.data.params) == {"api_token", "db_password", "size"}
        assert run.data.params["api_token"] == run.data.params["db_password"] == "<redacted>"
    assert {r.data.params["size"] for r in runs} == {"1", "-1", "2"}
    [failure] = [r for r in runs if r.info.status == "FAILED"]
    assert "login failed" in failure.data.tags["luigiflow.error"]

    leaks = []
    for path in store_files(tmp_path):
        data = path.read_bytes()
        for secret in (PARAM_TOKEN, PARAM_PASSWORD, SWEEP_TOKEN, ENV_TOKEN, SIGNING_KEY):
            if secret.encode() in data:
                leaks.append(f"{secret} in {path.relative_to(tmp_path)}")
    assert not leaks, "\n".join(leaks)
    # the sweep's config copy is still there, with the secret value redacted
    [config] = list((tmp_path / "mlruns").rglob("config.toml"))
    assert 'api_token = "<redacted>"' in config.read_text()


def test_show_and_runs_print_redacted_values(client, tmp_path):
    (tmp_path / "secret_tasks.py").write_text(TASKS)
    env = dict(os.environ, MY_SERVICE_TOKEN=ENV_TOKEN)
    cli(
        "run",
        "--module",
        "secret_tasks",
        "Deploy",
        "--db-password",
        PARAM_PASSWORD,
        "--api-token",
        PARAM_TOKEN,
        cwd=tmp_path,
        env=env,
    )
    [run] = runs_of(client, "Deploy")
    out = cli("runs", "Deploy", "--format", "json", cwd=tmp_path, env=env).stdout
    assert json.loads(out)[0]["params"]["api_token"] == "<redacted>"
    shown = cli("show", run.info.run_id, cwd=tmp_path, env=env).stdout
    assert PARAM_TOKEN not in shown and "<redacted>" in shown


def test_a_token_in_the_git_remote_url_is_not_recorded(client, tmp_path):
    import subprocess
    import sys

    repo = tmp_path / "project"
    repo.mkdir()
    (repo / "secret_tasks.py").write_text(TASKS)
    (repo / "build.py").write_text(
        "import luigiflow as lf\nfrom secret_tasks import Deploy\n"
        f"lf.build([Deploy(api_token={PARAM_TOKEN!r}, db_password={PARAM_PASSWORD!r})])\n"
    )
    git_token = "GitTok5512zzWq"
    for args in (
        ["init", "-q"],
        ["remote", "add", "origin", f"https://builder:{git_token}@example.invalid/r.git"],
        ["add", "."],
        ["-c", "user.email=t@example.invalid", "-c", "user.name=t", "commit", "-qm", "x"],
    ):
        subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)
    env = dict(os.environ, MY_SERVICE_TOKEN=ENV_TOKEN)
    out = subprocess.run(
        [sys.executable, "build.py"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    [run] = runs_of(client, "Deploy")
    assert run.data.tags.get("mlflow.source.git.repoURL", "").endswith("example.invalid/r.git")
    files = [p for p in tmp_path.glob("mlflow.db*") if p.is_file()]
    files += [p for p in tmp_path.rglob("*") if "mlruns" in p.parts and p.is_file()]
    leaks = [
        f"{secret} in {path.relative_to(tmp_path)}"
        for path in files
        for secret in (git_token, PARAM_TOKEN, PARAM_PASSWORD, ENV_TOKEN)
        if secret.encode() in path.read_bytes()
    ]
    assert not leaks, "\n".join(leaks)


KEY_FILE_TASKS = """
import luigi

import luigiflow as lf


class Upload(lf.MlflowTask):
    data = lf.FileParameter()
    key_file = lf.FileParameter()
    artifacts = {"out": "out.json"}

    def run_task(self):
        self.save({"out": {"n": len(open(self.data).read())}})


class Publish(lf.MlflowTask):
    def requires(self):
        return {"upload": Upload(data="table.csv", key_file="KeyPath7731zz.pem")}

    def run_task(self):
        self.save({}, metrics={"n": self.load("upload", "out")["n"]})
"""


def test_a_secret_looking_data_file_is_recorded_redacted_and_so_is_its_override(client, tmp_path):
    """A FileParameter named like a secret: its path and content hash stay out of the
    store (a key file's hash could be checked against guesses); other data files are
    recorded. An upstream override of such a parameter is quoted redacted in errors."""
    import hashlib

    (tmp_path / "key_tasks.py").write_text(KEY_FILE_TASKS)
    (tmp_path / "table.csv").write_text("a,b\n1,2\n")
    key_text = "-----BEGIN KEY----- KeyBody5519qq -----END KEY-----\n"
    (tmp_path / "KeyPath7731zz.pem").write_text(key_text)
    cli("run", "--module", "key_tasks", "Publish", cwd=tmp_path)
    [run] = runs_of(client, "Upload")
    recorded = json.loads(run.data.tags["luigiflow.data"])
    assert recorded["key_file"] == {"path": "<redacted>", "sha256": "<redacted>"}
    assert recorded["data"]["path"] == "table.csv"
    inputs = client.get_run(run.info.run_id).inputs.dataset_inputs
    assert [d.dataset.name for d in inputs] == ["table.csv"]
    digest = hashlib.sha256(key_text.encode()).hexdigest()
    leaks = [
        f"{secret} in {path.relative_to(tmp_path)}"
        for path in store_files(tmp_path)
        for secret in ("KeyPath7731zz", digest[:16], "KeyBody5519qq")
        if secret.encode() in path.read_bytes()
    ]
    assert not leaks, "\n".join(leaks)

    refused = cli(
        "run",
        "--module",
        "key_tasks",
        "Publish",
        "--Upload-key-file",
        "OtherKey4420zz.pem",
        cwd=tmp_path,
        check=False,
    )
    assert refused.returncode == 1
    assert "--Upload-key-file <redacted>" in refused.stderr
    assert "key_file=<redacted>" in refused.stderr
    assert "KeyPath7731zz" not in refused.stderr and "OtherKey4420zz" not in refused.stderr
