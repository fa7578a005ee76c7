"""Where work runs besides this process: a Ray cluster (its connection, blocks of work, actors),
and the face stage of a training spread over it. Ray is an optional extra, imported only when
used. An album identified on Ray is :mod:`celebmodel.albums.ray_album`.

May use: the top-level leaves (errors, storage, progress, config, backbones) and ``faces``."""
