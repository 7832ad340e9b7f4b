"""Sizing: the one budget parser, exact parameter counts and each budget's grid, the memory planner, the checks
of a run against the machine (memory, disk), devices and precision, throughput/MFU, and `forecast arch`."""
