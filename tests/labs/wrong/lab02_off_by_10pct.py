"""A wrong attempt at lab 2: a throughput 10 % off (the counters themselves are right)."""

from _tamper import tampered

tampered(lambda a: a.update(throughput_per_h=a["throughput_per_h"] * 1.1))
