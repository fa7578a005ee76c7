"""Celebrity face recognition studio: ``streamlit run streamlit_app.py``.

The pages live in ``pages/``; :func:`pages.ui.app` declares them with the sidebar's active
model and runs the requested one. Each page lays out what :mod:`celebmodel` computes, so the
command line reaches the same code.
"""

from __future__ import annotations

from pages import ui

ui.app()
