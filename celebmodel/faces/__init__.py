"""The face stage and the face networks: from a photo to aligned face crops and their
embeddings. Detection, landmarks, alignment and the choice of subject (``detection``); dlib's
serialised network read with numpy (``dlib_format``) and rebuilt in Keras (``network``); a
Keras model as one traced graph (``graph``); the disk cache of crops and embeddings
(``cache``).

May use: ``data`` and the top-level leaves (``errors``, ``storage``, ``progress``, ``vectors``,
``config``, ``backbones``).
"""
