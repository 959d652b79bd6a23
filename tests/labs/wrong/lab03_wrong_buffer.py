"""A wrong attempt at lab 3: the right experiment, the wrong buffer (the line's total)."""

from _tamper import tampered

tampered("lab03_starve.py", lambda a: a.update(buffer_capacity=48))
