"""Naming the faces of a new photo: the ``Recognizer`` for trained runs and gallery
models alike (``recognize``), who a model knows and adding, renaming or removing people
(``people``), and building the built-in public-figures model from LFW (``public_figures``).

May use: ``learning`` (a run's model and face stage), ``runs``, ``faces``, ``data``,
``scoring`` and the top-level leaves.
"""
