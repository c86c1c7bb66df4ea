from __future__ import annotations

import datetime as dt
import enum
import subprocess
import sys

import luigi
import pytest

import luigiflow as lf
from luigiflow._core.identity import decode_value, encode_value
from tests.dags import AnyValue, Leaf, Middle, Source


class Color(enum.Enum):
    RED = 1
    BLUE = 2


def test_identity_ignores_kwarg_order():
    assert Middle(size=4, factor=3).identity == Middle(factor=3, size=4).identity


def test_identity_differs_for_int_float_str_and_bool():
    identities = {AnyValue(value=v).identity for v in (1, 1.0, "1", True)}
    assert len(identities) == 4


@pytest.mark.slow
def test_identity_is_stable_across_processes():
    code = "from tests.dags import Leaf; print(Leaf(size=5, factor=7, label='é \"q\"').identity)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == Leaf(size=5, factor=7, label='é "q"').identity


def test_upstream_parameter_changes_downstream_identity():
    assert Leaf(size=3).identity != Leaf(size=4).identity
    assert Leaf(label="a").identity != Leaf(label="b").identity
    # The upstream of Leaf(label=...) is the same task either way.
    assert (
        Leaf(label="a").requires()["middle"].identity
        == Leaf(label="b").requires()["middle"].identity
    )


def test_insignificant_parameter_is_not_in_identity():
    assert (
        AnyValue(value="v", note_only="a").identity == AnyValue(value="v", note_only="b").identity
    )


def test_version_bump_changes_identity():
    class Versioned(lf.MlflowTask):
        artifacts = {"o": "o.json"}

        def run_task(self):
            pass

    before = Versioned().identity

    class Versioned(lf.MlflowTask):
        artifacts = {"o": "o.json"}
        version = 2

        def run_task(self):
            pass

    luigi.task_register.Register.clear_instance_cache()
    assert Versioned().identity != before


def test_docstring_edit_does_not_change_identity():
    class Documented(lf.MlflowTask):
        """First wording."""

        artifacts = {"o": "o.json"}

        def run_task(self):
            pass

    first = Documented().identity

    class Documented(lf.MlflowTask):
        """Completely different wording."""

        artifacts = {"o": "o.json"}

        def run_task(self):
            pass

    luigi.task_register.Register.clear_instance_cache()
    assert Documented().identity == first


@pytest.mark.parametrize(
    "value",
    [
        "with 'single' and \"double\" quotes",
        "ünïcødé ✓ 日本語",
        "x" * 100_000,
        {"b": [1, 2.5, None], "a": {"nested": True}},
        [1, "1", 1.0],
        dt.date(2024, 2, 29),
        dt.datetime(2024, 2, 29, 12, 30),
        dt.timedelta(hours=3),
        Color.BLUE,
    ],
)
def test_awkward_values_have_identity_and_round_trip(value):
    identity = AnyValue(value=value).identity
    assert len(identity) == 64
    if not isinstance(value, enum.Enum):
        assert decode_value(encode_value(value)) == value


def test_dict_key_order_does_not_matter():
    assert encode_value({"a": 1, "b": 2}) == encode_value({"b": 2, "a": 1})


def test_list_order_matters():
    assert encode_value([1, 2]) != encode_value([2, 1])


def test_float_parameter_given_int_is_the_same_task():
    class Rate(lf.MlflowTask):
        artifacts = {"o": "o.json"}
        rate = luigi.FloatParameter()

        def run_task(self):
            pass

    assert Rate(rate=1).identity == Rate(rate=1.0).identity


def test_file_parameter_hashes_content_not_path(tmp_path):
    class Reads(lf.MlflowTask):
        artifacts = {"o": "o.json"}
        data = lf.FileParameter()

        def run_task(self):
            pass

    a = tmp_path / "a.csv"
    b = tmp_path / "b.csv"
    a.write_text("x,y\n1,2\n")
    b.write_text("x,y\n1,2\n")
    assert Reads(data=str(a)).identity == Reads(data=str(b)).identity
    b.write_text("x,y\n1,3\n")
    assert Reads(data=str(a)).identity != Reads(data=str(b)).identity


def test_seed_is_derived_from_identity():
    assert Source(size=3).seed == Source(size=3).seed
    assert Source(size=3).seed != Source(size=4).seed
    assert 0 <= Source().seed < 2**32
