"""Home: what the studio does, the active model, and the first step when there is none."""

from __future__ import annotations

import streamlit as st

from celebmodel.metrics import ORIGINAL
from celebmodel.runs import active_run
from pages import ui

ui.through_app()

st.title("Celebrity face studio")
st.markdown(
    "Upload a photo and the studio finds every face in it and names the celebrity, or says "
    "*unknown* when the face matches no one it knows. Train your own recogniser on a folder "
    "of celebrity photos and see exactly how good it is, next to the original recipe's 53%."
)

run = active_run()
if run is None:
    st.subheader("Get started")
    st.markdown(
        "There is no trained model yet. On **Train**:\n"
        "1. choose a dataset: a folder on this server with one sub-folder of photos per "
        "celebrity, a .zip with that layout, or Labeled Faces in the Wild (needs internet);\n"
        "2. keep the suggested settings (the offline `dlib128` face backbone trains in minutes "
        "on a CPU) and press **Start training**;\n"
        "3. when it finishes, identify faces on **Identify** and inspect the model on "
        "**Evaluate**."
    )
    st.page_link("pages/train.py", label="Go to Train", icon=":material/model_training:")
else:
    config = run.config_dict()
    test = run.metrics("test") or {}
    facts = config.get("run") or {}
    st.subheader(f"Active model: {run.title}")
    left, middle, right = st.columns(3)
    left.metric("Backbone", str(config.get("backbone", "?")), help=f"recipe {config.get('recipe')}")
    middle.metric(
        "Celebrities",
        run.people(),
        help=f"dataset {config.get('data_dir')}",
    )
    accuracy = test.get("accuracy")
    right.metric(
        "Test accuracy",
        f"{accuracy:.1%}" if accuracy is not None else "n/a",
        delta=f"{accuracy - ORIGINAL['accuracy']:+.1%} vs original 53%"
        if accuracy is not None
        else None,
        help="Share of held-out test photos named correctly; the original recipe reached 53%.",
    )
    st.caption(f"Dataset: `{config.get('data_dir')}` · {facts.get('n_photos', '?')} photos")
    columns = st.columns(3)
    columns[0].page_link("pages/identify.py", label="Identify a photo", icon=":material/search:")
    columns[1].page_link(
        "pages/evaluate.py", label="Evaluate this model", icon=":material/analytics:"
    )
    columns[2].page_link("pages/train.py", label="Train another", icon=":material/model_training:")
