"""Training a model on a dataset folder: the classifier's architecture (``model``), a
subset's prepared photos and ``tf.data`` pipelines (``pipeline``), the estimator with its
phases and early stopping (``estimator``), a training's stages in its ``status.json``
(``stages``), a training job from start to finish (``training``), embeddings and
probabilities of a subset (``inference``), a run's evaluation files (``evaluation``), and
training processes started for the app (``jobs``).

May use: ``cluster`` (the face stage on Ray), ``runs``, ``faces``, ``data``, ``scoring`` and
the top-level leaves.
"""
