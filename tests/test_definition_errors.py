"""Task definition mistakes are TaskDefinitionErrors when the class is defined."""

from __future__ import annotations

import luigi
import pytest

import luigiflow as lf


@pytest.mark.parametrize("name", ["seed", "identity", "run_id", "artifacts", "version", "load"])
def test_parameter_named_like_a_task_property_is_refused(name):
    with pytest.raises(lf.TaskDefinitionError, match=rf"Shadow.*parameter {name!r}.*rename"):
        type(
            "Shadow",
            (lf.MlflowTask,),
            {name: luigi.IntParameter(default=1), "run_task": lambda self: None},
        )


def test_missing_run_task_is_refused_unless_the_class_is_abstract():
    with pytest.raises(lf.TaskDefinitionError, match=r"NoWork.*run_task"):

        class NoWork(lf.MlflowTask):
            artifacts = {"o": "o.json"}

    class Base(lf.MlflowTask, abstract=True):
        artifacts = {"o": "o.json"}
        size = luigi.IntParameter(default=1)

    class Concrete(Base):
        def run_task(self):
            self.save({"o": self.size})

    assert Concrete().size == 1
    with pytest.raises(lf.TaskDefinitionError, match=r"StillNoWork.*run_task"):

        class StillNoWork(Base):  # abstract is not inherited
            pass


def test_a_task_written_the_luigi_way_says_what_to_change():
    with pytest.raises(lf.TaskDefinitionError) as caught:

        class LuigiStyle(lf.MlflowTask):
            def output(self):
                return luigi.LocalTarget("out.txt")

            def run(self):
                with self.output().open("w") as f:
                    f.write("done")

    message = str(caught.value)
    assert "\n" not in message
    for needed in ("LuigiStyle", "run() and output()", "run_task()", "artifacts", "self.save"):
        assert needed in message, message
