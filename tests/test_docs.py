"""Every parameter table in docs/ is what scripts/param_table.py prints: a count that changes in the code fails here
until the docs are regenerated from the script."""

import pytest

from .helpers import ROOT, load_script

PARAM_TABLE = load_script("param_table")


@pytest.mark.parametrize("name", sorted(PARAM_TABLE.TABLES))
def test_docs_table_is_what_param_table_prints(name):
    doc, make = PARAM_TABLE.TABLES[name]
    printed = "\n".join(make())
    assert printed in (ROOT / doc).read_text(), (
        f"the '{name}' table of {doc} differs from the code's counts: paste the output of "
        f"python scripts/param_table.py --only {name}\n{printed}"
    )
