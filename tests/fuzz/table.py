"""Print ``docs/robustness.md``: ``python -m tests.fuzz.table > docs/robustness.md``."""

from tests.fuzz.coverage import collect
from tests.fuzz.harness import render_table

if __name__ == "__main__":
    rows, exempt = collect()
    print(render_table(rows, exempt), end="")
