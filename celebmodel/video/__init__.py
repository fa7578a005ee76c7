"""Moving pictures: live webcam frames identified and drawn at the rate the machine
allows (``live``).

May use: ``reports`` and everything below it.
"""
