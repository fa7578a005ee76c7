"""One name search for every page and the API: every word of the query, any case, any order,
in the shown name or the folder label."""

from __future__ import annotations

import pandas as pd

from celebmodel.data.dataset import name_matches
from celebmodel.reports import display, figures

NAMES = ["Tony Blair", "Tony Bennett", "Blair Underwood", "Sung Hong Choi"]
LABELS = ["Tony_Blair", "Tony_Bennett", "Blair_Underwood", "Choi_Sung-hong"]


def test_words_in_any_order_and_any_case_find_a_person_on_every_page():
    assert name_matches("blair tony", NAMES, LABELS) == [True, False, False, False]
    assert name_matches("", NAMES, LABELS) == [True] * 4
    assert name_matches("sung-hong", NAMES, LABELS) == [False, False, False, True]  # the label
    evaluate = pd.DataFrame({"celebrity": NAMES, "label": LABELS, "f1": 1.0})
    assert list(figures.find_people(evaluate, "blair TONY")["celebrity"]) == ["Tony Blair"]
    roster = pd.DataFrame(
        {"name": NAMES, "label": LABELS, "kind": "trained", "removed": False, "photos": 1}
    )
    assert list(display.roster_matches(roster, " Blair  tony ")["name"]) == ["Tony Blair"]
    assert display.search_names(NAMES, "blair") == ["Tony Blair", "Blair Underwood"]
