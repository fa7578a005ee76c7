"""Many photos at once and the strangers in them: an album's rows and its unknown faces
grouped (``album``), grouping by person at archive scale (``grouping``), groups that last,
with stable ids, merge, split, rename and undo (``groups``), and an album identified on a
Ray cluster (``ray_album``).

May use: ``recognition`` and everything below it.
"""
