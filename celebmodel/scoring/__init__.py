"""The maths that turns embeddings and probabilities into names and figures, numpy and
scikit-learn only (no photo, no network, no file): trained runs' open-set scores and
calibration (``open_set``), gallery models' nearest people, AS-norm and decision
(``matching``), the open-set identification protocol (``protocol``), classification metrics
(``metrics``), and the distances that album grouping cuts at (``cuts``).

May use: ``errors`` and ``vectors``.
"""
