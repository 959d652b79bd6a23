"""A wrong attempt at lab 3: reports an experiment it never ran (the reference's answer),
with the wrong buffer (the line's total)."""

from _tamper import tampered

tampered(lambda a: a.update(buffer_capacity=48))
