"""``make bench``: the receiver measured beside its ceilings, in the same run on the same machine.

Entry point: ``python -m bench`` (see ``bench/run.sh`` and ``bench/README`` section of the
top-level README). Every scenario starts its own processes on loopback and stops them.
"""
