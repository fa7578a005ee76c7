"""The ways in from outside, over the same functions the pages call: the command line
(``cli``), one run as an HTTP API (``serve``), and a run's network exported as Keras,
SavedModel, TFLite or TensorFlow.js (``export``).

May use: every part of the package.
"""
