"""Celebrity face recognition studio: ``streamlit run streamlit_app.py``.

The entry point only declares the pages and the sidebar's active model; each page lays out
what :mod:`celebmodel` computes, so the command line reaches the same code.
"""

from __future__ import annotations

import streamlit as st

from pages import ui

st.set_page_config(page_title="Celebrity face studio", page_icon=":material/face:", layout="wide")

navigation = st.navigation(
    [
        st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
        st.Page("pages/identify.py", title="Identify", icon=":material/search:"),
        st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
        st.Page("pages/evaluate.py", title="Evaluate", icon=":material/analytics:"),
    ]
)
with ui.shown_errors("Listing the trained models"):
    ui.model_selector()
with ui.shown_errors(navigation.title):
    navigation.run()
