"""Photos and datasets, before any face is found: decoding any photo with its guards
(``images``), videos read as a stream of sampled frames (``videos``), a dataset folder's scan, split and duplicates (``dataset``), and datasets from
elsewhere, uploaded zips and the LFW download (``sources``).

May use: the top-level leaves only (``errors``, ``storage``).
"""
