"""A model on disk: a run folder and what it holds (``run``), the built-in model's folder,
checks and copies (``builtin``), and a run as one zip, exported or imported (``archives``).

May use: ``faces`` (to load a run's Keras model), ``data`` and the top-level leaves.
"""
