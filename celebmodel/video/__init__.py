"""Moving pictures: live webcam frames identified and drawn at the rate the machine
allows (``live``); a video file's faces linked into tracks (``tracks``), each track named once,
people's occurrences on a timeline (``timeline``), written as JSON, CSV and WebVTT
(``outputs``).

May use: ``reports`` and everything below it.
"""
