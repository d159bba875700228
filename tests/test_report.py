"""Markdown tables as the reports print them."""

import math

import pandas as pd

from pyro_jepa.report import markdown_table


def test_markdown_table_formats_floats_and_marks_missing_values():
    frame = pd.DataFrame({"case": ["cpu", "vje"], "share": [0.12345, math.nan], "ceiling": [0.5, None]}, dtype=object)
    assert markdown_table(frame).splitlines() == [
        "| case | share | ceiling |",
        "|---|---|---|",
        "| cpu | 0.1235 | 0.5000 |",
        "| vje | – | – |",
    ]
    assert markdown_table(pd.DataFrame({"x": [1.0]}), floats="{:.1f}").splitlines()[-1] == "| 1.0 |"
