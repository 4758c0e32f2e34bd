"""The reads schema: standard names back, and every bad input named in the error."""

from __future__ import annotations

import pandas as pd
import pytest

from audit.readers.reads import ReadColumns, ReadsError, validate_reads


def _reads() -> pd.DataFrame:
    rows = []
    for r in ("A", "B"):
        for c, t in ((1, 0), (2, 1), (3, 1)):
            for ph in ("MRI", "MRI+AI"):
                rows.append({"Reader": r, "Patient": c, "Dx": t, "Phase": ph, "call": t, "conf": 3.0})
    return pd.DataFrame(rows)


COLS = ReadColumns(reader="Reader", case="Patient", truth="Dx", phase="Phase", decision="call", score="conf")


def test_renames_and_orders_phases():
    out = validate_reads(_reads(), COLS)
    assert list(out.columns) == ["reader", "case", "truth", "phase", "decision", "score"]
    assert list(out["phase"].cat.categories) == ["MRI", "MRI+AI"] and out["phase"].cat.ordered
    assert out["truth"].dtype.kind == "i"


@pytest.mark.parametrize("edit, match", [
    (lambda d: d.drop(columns="Dx"), r"lacks column\(s\) 'Dx' \(truth\)"),
    (lambda d: d.assign(Dx=d["Dx"].replace(1, 2)), r"'Dx' \(truth\) must be binary 0/1, found values \[2\]"),
    (lambda d: d.assign(Dx=d["Dx"].where(d.index != 0, 1)), r"truth differs between reads of case\(s\) \[1\]"),
    (lambda d: d[~((d["Patient"] == 3) & (d["Phase"] == "MRI+AI"))], r"case 3 was read only in \['MRI'\]"),
    (lambda d: d[~((d["Reader"] == "B") & (d["Patient"] == 1))], r"reader\(s\) \['B'\] saw only one truth class"),
    (lambda d: pd.concat([d, d.head(1)]), "duplicate"),
    (lambda d: d.assign(Reader=d["Reader"].where(d.index != 2, None)), r"'Reader' \(reader\) has 1 missing"),
])
def test_bad_input_names_the_problem(edit, match):
    with pytest.raises(ReadsError, match=match):
        validate_reads(edit(_reads()), COLS)


def test_unpaired_design_allowed_when_asked():
    d = _reads()
    d = d[~((d["Patient"] == 3) & (d["Phase"] == "MRI+AI"))]
    assert len(validate_reads(d, COLS, paired=False)) == len(d)


def test_unused_categorical_phases_are_dropped_but_order_kept():
    d = _reads()
    d["Phase"] = pd.Categorical(d["Phase"], categories=["MRI+AI", "extra", "MRI"], ordered=True)
    out = validate_reads(d, COLS)
    assert list(out["phase"].cat.categories) == ["MRI+AI", "MRI"]
