"""The benchmark harness's shared parts: servers, processes, wrk, the sweep and its report.

Scripts in bench/ import it as `harness` (bench/ is their sys.path[0]).
"""
