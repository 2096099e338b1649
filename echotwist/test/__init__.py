"""Tests for echotwist: unit tests (no sockets, no real time) and e2e tests."""

from hypothesis import settings

# A deterministic Hypothesis profile, as Twisted's own tests register one:
# the same examples every run, no example database written into the tree,
# and no wall-clock deadline (the machines are shared and noisy).
settings.register_profile(
    "echotwist", derandomize=True, database=None, deadline=None, max_examples=200
)
settings.load_profile("echotwist")
