"""`lf.plan` and `lf.runs` from Python, and task classes redefined in one process."""

from __future__ import annotations

import luigi

import luigiflow as lf
from luigiflow._core import provenance
from tests.dags import Leaf, Middle, Source


def test_plan_from_python_says_what_runs_and_why(store):
    lf.build([Leaf(size=3, factor=2)])
    same = lf.plan([Leaf(size=3, factor=2)])
    assert same.will_run == [] and Leaf(size=3, factor=2) in same.reused
    changed = lf.plan(Leaf(size=3, factor=5))
    assert set(changed.will_run) == {Middle(size=3, factor=5), Leaf(size=3, factor=5)}
    text = repr(changed)
    assert "parameter factor changed: 2 -> 5" in text
    assert "2 task(s) will run, 1 will not" in text
    assert "<pre>" in changed._repr_html_()


def test_runs_frame_joins_upstream_parameters(store):
    # Two builds: which of two roots of one build Luigi runs first is not defined.
    lf.build([Leaf(size=3, factor=2, label="a")])
    lf.build([Leaf(size=4, factor=3, label="b")])
    frame = lf.runs(Leaf)
    assert len(frame) == 2
    by_label = frame.set_index("label")
    assert by_label.loc["b", "middle.factor"] == "3"
    assert by_label.loc["b", "middle.source.size"] == "4"
    # the code that made each run, short as `luigiflow runs` shows it
    assert frame["code"].tolist() == [provenance.code_fingerprint(Leaf)[:7]] * 2
    only = lf.runs(Leaf, where={"label": "a"})
    assert only["middle.factor"].tolist() == ["2"]
    sources = lf.runs(Source)  # newest first; param and metric `size` both kept
    assert sources["size"].tolist() == ["4", "3"]
    assert sources["metric.size"].tolist() == [4.0, 3.0]


def test_a_redefined_task_class_replaces_the_earlier_one():
    source = (
        "import luigiflow as lf\n"
        "class Redefined(lf.MlflowTask):\n"
        "    artifacts = {'x': 'x.json'}\n"
        "    def run_task(self):\n"
        "        self.save({'x': VALUE})\n"
    )
    namespace: dict[str, object] = {"__name__": "notebook_cells"}
    exec(compile(source.replace("VALUE", "1"), "<cell-1>", "exec"), namespace)
    exec(compile(source.replace("VALUE", "2"), "<cell-2>", "exec"), namespace)
    newest = luigi.task_register.Register.get_task_cls("Redefined")  # not ambiguous
    assert newest is namespace["Redefined"]


def test_build_reuses_the_run_it_is_given(store):
    """`lf.build(reuse={task: run_id})` completes the task with that (older) run of its
    identity, as `--rerun-changed` does after a revert; nothing executes."""
    task = Leaf(size=2, factor=1)
    first = lf.build([task]).runs[task]
    newest = lf.build([task], force=[task]).runs[task]
    assert newest != first
    again = lf.build([task], reuse={task: first})
    assert again.executed == [] and again.runs[task] == first
    planned = lf.plan(task, rerun_changed=True)  # no code changed: the newest
    assert planned.will_run == [] and planned.reused[task] == newest
