"""The face stage and the face networks: from a photo to aligned face crops and their
embeddings. Detection, landmarks and the choice of subject (``detection``; SCRFD, with the 5
keypoints ArcFace alignment needs, in ``scrfd``); ArcFace's 5-point alignment
(``alignment``); the table of face networks and the embedder of any of them (``network``);
dlib's serialised ResNet read with numpy (``dlib_format``) and rebuilt in Keras
(``dlib_resnet``); InsightFace's MobileFaceNet rebuilt in Keras from its published weights
(``mobilefacenet``; the weights and their provenance in ``weights/``); a Keras model as one
traced graph (``graph``); the disk cache of crops and embeddings (``cache``).

May use: ``data`` and the top-level leaves (``errors``, ``storage``, ``progress``, ``vectors``,
``config``, ``backbones``).
"""
