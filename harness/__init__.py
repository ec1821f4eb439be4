"""Local test harness: real services on loopback (``harness.services``) and the reference world.

Used by the tests, the demo and the benchmark; it never imports pytest.
"""
