"""Every public function has a fuzz row (or a stated reason not to), and docs/robustness.md is current."""

from __future__ import annotations

from pathlib import Path

from probes.core.model import ModelSnapshot
from tests.fuzz.conftest import make_kit
from tests.fuzz.coverage import collect, required
from tests.fuzz.harness import render_table

DOC = Path(__file__).resolve().parents[2] / "docs" / "robustness.md"


def test_every_public_function_has_a_row_or_a_reason():
    rows, exempt = collect()
    names = {r.name for r in rows}
    missing = sorted(required() - names - set(exempt))
    assert not missing, f"public functions without a fuzz row (add one to tests/fuzz/) or an EXEMPT reason: {missing}"
    assert not (names & set(exempt)), f"both a row and an exemption: {sorted(names & set(exempt))}"
    unknown = sorted((names | set(exempt)) - required())
    assert not unknown, f"rows for names that are not public functions: {unknown}"
    assert all(r.cases() for r in rows), [r.name for r in rows if not r.cases()]


def test_robustness_doc_is_generated_from_the_matrix():
    rows, exempt = collect()
    assert DOC.read_text() == render_table(rows, exempt), \
        "docs/robustness.md is stale: python -m tests.fuzz.table > docs/robustness.md"


def test_kit_unchanged_by_the_matrix(kit):
    fresh = make_kit()
    assert ModelSnapshot.take(fresh["model"]).diff(kit["model"]) == []
    for k in ("x", "maps", "x_base"):
        assert (kit[k] == fresh[k]).all(), k
    for k, v in fresh["masks"].items():
        assert (kit["masks"][k] == v).all(), k


# helpers of the validation layer itself: they build errors and warnings, they take no user data
EXEMPT = {"probes.core.warn_undefined": "emits the one UndefinedValueWarning of a call from its reasons; "
                                       "takes no user data"}
