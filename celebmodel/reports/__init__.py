"""What the pages show, computed (pages only lay it out): plotly figures and tables of
runs and metrics (``figures``), and photos as shown, annotated, thumbnailed, titled
(``display``).

May use: ``albums`` and everything below it; never Streamlit.
"""
