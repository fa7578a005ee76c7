"""Home: what the studio does, the model in use, and the first step to a model of your own."""

from __future__ import annotations

import streamlit as st

from celebmodel.runs.run import active_run
from celebmodel.scoring.metrics import ORIGINAL
from pages import ui

ui.through_app()

st.title("Celebrity face studio")
st.markdown(
    "Upload a photo and the studio finds every face in it and names the celebrity, or says "
    "*unknown* when the face matches no one it knows. Train your own recogniser on a folder "
    "of celebrity photos and see exactly how good it is on photos it never saw."
)

run = active_run()
if run is None:
    st.subheader("Get started")
    ui.no_model_yet()
    st.stop()

config = run.config_dict()
facts = config.get("run") or {}
st.subheader(f"Model in use: {run.title}")
if run.builtin:
    st.markdown(
        f"The studio knows **{run.people():,} public figures** out of the box: everyone in "
        "*Labeled Faces in the Wild* (news photos of 2002–2004), from the "
        f"{facts.get('n_photos', 0):,} photos in which a face was found. Upload a photo on "
        "**Identify** and it names them, or says *unknown*."
    )
    st.markdown(
        "**Someone missing?** Make your own copy on **People** and add anyone from a few "
        "photos: the copy knows everyone the built-in model knows, plus them. Or train a "
        "model of your own people on **Train**."
    )
    ui.page_buttons(
        [
            ("pages/identify.py", "Identify a photo", ":material/search:"),
            ("pages/people.py", "Add someone (People)", ":material/group:"),
            ("pages/train.py", "Go to Train", ":material/model_training:"),
        ],
        key="home-builtin",
    )
    st.stop()

test = run.metrics("test") or {}
left, middle, right = st.columns(3)
left.metric("Backbone", str(config.get("backbone", "?")), help=f"recipe {config.get('recipe')}")
middle.metric("Celebrities", f"{run.people() or 0:,}", help=f"dataset {config.get('data_dir')}")
accuracy = test.get("accuracy")
right.metric(
    "Test accuracy",
    f"{accuracy:.1%}" if accuracy is not None else "n/a",
    delta=f"{(accuracy - ORIGINAL['accuracy']) * 100:+.1f} points vs original 53%"
    if accuracy is not None
    else None,
    help="Share of held-out test photos named correctly; the original recipe reached 53%.",
)
st.caption(f"Dataset: `{config.get('data_dir')}` · {facts.get('n_photos', '?')} photos")
ui.page_buttons(
    [
        ("pages/identify.py", "Identify a photo", ":material/search:"),
        ("pages/evaluate.py", "Evaluate this model", ":material/analytics:"),
        ("pages/train.py", "Train another", ":material/model_training:"),
    ],
    key="home-run",
)
