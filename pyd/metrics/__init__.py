"""Metrics: the registry fixed before the fork (which pools and routes are counted, where in a
scoreboard slot's counters block), the master's collection from the slots (checked, folded
across worker recycling) and the exposition formats (Prometheus text, OpenMetrics).

The master serves them itself (pyd/master/metrics_server.py); a worker only writes its block.
"""
