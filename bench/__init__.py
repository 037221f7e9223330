"""Benchmarks (`make bench`). Each module measures one thing against a
baseline measured in the same run and prints the ratio; none of them is a
timed test. Run one with `python -m bench grading` or all with `python -m bench`.
"""
