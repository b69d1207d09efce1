"""What the master does for each control-socket command (`pyd status`, `pyd reload`, ...).

Each handler runs in its own greenlet and may wait; it answers with a dict for the CLI.
"""

from __future__ import annotations

import time

import gevent

from pyd.ipc.configdigest import config_digest
from pyd.version import __version__


def cmd_status(m, args, progress) -> dict:
    return {"ok": True, "data": {
        "pid": m.pid, "uptime": time.time() - m.started, "config": m.config.path,
        "workers": sum(1 for w in m.workers.values() if w.phase in ("serving", "retiring")),
        "target": m.target, "version": __version__,
        # What `pyd reload` compares the file on disk with (the master never parses it).
        "config_digest": config_digest(m.config), "overrides": list(m.argv_overrides)}}


def cmd_fullstatus(m, args, progress) -> dict:
    data = cmd_status(m, args, progress)["data"]
    # Who a worker is and how long it has lived is the master's own knowledge; what it says
    # of itself (state, counters) is shown as it wrote it, numbers bounded.
    slots = []
    now = time.monotonic()
    for w in sorted(m.workers.values(), key=lambda w: w.slot):
        s = m.scoreboard.read(w.slot)
        slots.append({"slot": w.slot, "number": w.number, "pid": w.pid, "state": s.state_name,
                      "phase": w.phase, "reason": s.reason_name,
                      "requests": _count(s.requests), "rss": _count(s.rss),
                      "connections": _count(s.connections), "active": _count(s.active),
                      "uptime": now - w.spawned})
    data.update(slots=slots, exits=dict(m.exits), generation=m.generation,
                listeners=sorted(m.listeners))
    extra = getattr(m, "fullstatus_extra", None)
    if extra:
        data.update(extra())
    return {"ok": True, "data": data}


def _count(n: int) -> int:
    return min(n, 2 ** 53)  # exact in any JSON reader


def cmd_reload(m, args, progress) -> dict:
    generation = m.reload()
    progress(f"replacing {m.target} workers")
    return _wait_generation(m, generation, "reload")


def cmd_update(m, args, progress) -> dict:
    ok, message = m.update()
    if not ok:
        return {"ok": False, "message": f"the configuration was not applied:\n{message}"}
    if message:
        progress(message)
    return _wait_generation(m, m.generation, "update")


def _wait_generation(m, generation: int, what: str) -> dict:
    """Until every worker is of this generation, or a new one fails to start."""
    deadline = time.monotonic() + m.config.graceful_timeout + 90.0
    while time.monotonic() < deadline:
        if m.generation != generation:
            return {"ok": False, "message": f"{what} superseded by a newer reload or update"}
        if generation in m.boot_errors:
            return {"ok": False, "message": f"{what} failed: a new worker could not start; the "
                                            f"old workers keep serving:\n"
                                            f"{m.boot_errors[generation]}"}
        if m.stopping:
            return {"ok": False, "message": "pyd is stopping"}
        current = [w for w in m.workers.values() if w.generation == generation
                   and w.phase in ("serving", "retiring")]
        old = [w for w in m.workers.values() if w.generation < generation]
        if len(current) >= m.target and not old:
            return {"ok": True, "message": f"{what}: {len(current)} workers replaced"}
        gevent.sleep(0.1)
    return {"ok": False, "message": f"{what} did not finish in time; see the log"}


def cmd_reopenlog(m, args, progress) -> dict:
    m.reopen_logs()
    return {"ok": True, "message": "log files reopened"}


def _stop(m, how: str) -> dict:
    m.stop(how)
    return {"ok": True, "data": {"pid": m.pid}}


def cmd_stop(m, args, progress) -> dict:
    return _stop(m, "fast")


def cmd_graceful_stop(m, args, progress) -> dict:
    return _stop(m, "graceful")


def cmd_hard_stop(m, args, progress) -> dict:
    return _stop(m, "hard")


def cmd_upgrade(m, args, progress) -> dict:
    from pyd.master.upgrade import upgrade

    progress("starting a new master")
    ok, message = upgrade(m)
    return {"ok": ok, "message": message}


def cmd_workers(m, args, progress) -> dict:
    """Set the number of workers (within min-workers/max-workers)."""
    m.set_target(int(args["n"]))
    return {"ok": True, "message": f"workers: {m.target}"}



def cmd_cron(m, args, progress) -> dict:
    """`pyd cron list` (next and last runs) and `pyd cron run NAME` (now, once; waits)."""
    return m.service.cron(args.get("action", "list"), args.get("name"), progress)


def cmd_process(m, args, progress) -> dict:
    """`pyd process list` and `pyd process restart NAME` (NAME:N for one copy)."""
    return m.service.process(args.get("action", "list"), args.get("name"), progress)
