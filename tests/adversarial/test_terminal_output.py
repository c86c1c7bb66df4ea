"""Text from the store is printed as text: whoever can write a run (an error message, a
parameter value) cannot inject rich markup or terminal escape sequences (OSC 52 writes
the clipboard, CSI clears the screen) into `run`, `runs`, `show` or `diff` output."""

from __future__ import annotations

import luigi
import pytest

import luigiflow as lf
from luigiflow.cli import _render
from tests.adversarial.cli_inprocess import read_command
from tests.conftest import luigiflow_cli as cli
from tests.conftest import runs_of

MARKUP_VALUE = "[bold red]x[/]"
OSC52 = "\x1b]52;c;cHduZWQ=\x07"  # sets the clipboard to "pwned"
CLEAR = "\x1b[2J"
ERROR = f"column missing {OSC52}{CLEAR}at [/data/col] \x9b31m"

MODULE = f"""
import luigi
import luigiflow as lf


class Shouty(lf.MlflowTask):
    artifacts = {{"o": "o.json"}}
    label = luigi.Parameter()

    def run_task(self):
        if self.label.startswith("[bold"):
            raise ValueError({ERROR!r})
        self.save({{"o": 1}}, metrics={{"m": 1.0}})
"""


class InjectedLabel(lf.MlflowTask):
    """The same shapes, defined here for the read commands' runs (no subprocess)."""

    artifacts = {"o": "o.json"}
    label = luigi.Parameter()

    def run_task(self):
        if self.label.startswith("[bold"):
            raise ValueError(ERROR)
        self.save({"o": 1}, metrics={"m": 1.0})


def assert_plain(text: str) -> None:
    assert "\x1b" not in text and "\x9b" not in text and "\x07" not in text, repr(text)


def test_plain_removes_escape_sequences_and_keeps_the_words():
    assert _render.plain(ERROR) == "column missing at [/data/col] 31m"
    assert _render.plain("a\tb\nc\rd\x00e\u202ef") == "a\tb\ncdef"
    assert _render.plain("\x1bP1;2|secret\x1b\\ok\x1b[") == "ok"


@pytest.mark.slow
def test_luigiflow_run_prints_stored_and_given_text_as_text(store, tmp_path):
    (tmp_path / "shouty.py").write_text(MODULE)
    out = cli(
        "run", "--module", "shouty", "Shouty", "--label", MARKUP_VALUE, cwd=tmp_path, check=False
    )
    assert out.returncode == 1, out.stdout + out.stderr
    assert_plain(out.stdout + out.stderr)
    assert f"Shouty(label={MARKUP_VALUE})" in out.stdout  # header and summary row
    assert "FAILED Shouty(label=[bold red]x[/])" in out.stderr
    assert "column missing at [/data/col]" in out.stderr


def test_runs_show_and_diff_print_stored_text_as_text(store, client, capsys):
    result = lf.build(
        [InjectedLabel(label=MARKUP_VALUE), InjectedLabel(label="[green]y[/]")],
        raise_on_failure=False,
    )
    failed = result.failure_details[InjectedLabel(label=MARKUP_VALUE)].run_id
    finished = result.runs[InjectedLabel(label="[green]y[/]")]
    assert ERROR in client.get_run(failed).data.tags["luigiflow.error"]  # stored as raised

    code, out, err = read_command(capsys, "runs", "InjectedLabel", "--status", "all")
    assert code == 0, err  # was: rich MarkupError on "[/data/col]"
    assert_plain(out)
    assert MARKUP_VALUE in out and "[green]y[/]" in out and "/data/col" in out

    code, out, err = read_command(
        capsys, "runs", "InjectedLabel", "--status", "all", "--format", "json"
    )
    assert code == 0 and "\x1b" not in out and "\x9b" not in out  # JSON escapes them
    code, out, err = read_command(
        capsys, "runs", "InjectedLabel", "--status", "all", "--format", "csv"
    )
    assert code == 0 and "[/data/col]" in out
    assert_plain(out)

    code, out, err = read_command(capsys, "show", failed)
    assert code == 0, err
    assert_plain(out)
    assert (
        f"label={MARKUP_VALUE}" in out and "error: ValueError: column missing at [/data/col]" in out
    )

    code, out, err = read_command(capsys, "diff", failed, finished)
    assert code == 0, err
    assert_plain(out)
    assert f"label: {MARKUP_VALUE} -> [green]y[/]" in out
    assert len(runs_of(client, "InjectedLabel")) == 2
