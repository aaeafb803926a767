"""One round at a time per campaign.

A scheduled round and a drift-triggered round of the same campaign must never
query concurrently. ``round_lock`` is the single place that guarantees it.

Two mechanisms, chosen by ``[lock] backend``:

* ``ledger`` (default): a lock row in the ledger's ``meta`` table
  (``<campaign>:round_lock`` = owner + lease expiry), taken in one
  transaction. It needs no Prefect server, so it also holds on the ephemeral
  API and between a served round and a ``labelloop round`` typed by hand, and
  it works the same on SQLite and PostgreSQL. The holder renews the lease
  from a background thread. A round killed with ``kill -9`` leaves a lock
  behind: on the same host the next round sees that the holder's process is
  gone and takes the lock at once; from another host it waits for the lease
  (``lease_seconds``) to expire.
* ``prefect``: a Prefect global concurrency limit
  ``labelloop-campaign-<name>`` (limit 1, created if missing), visible in the
  Prefect UI under Concurrency. Needs a reachable API.
* ``both``: the Prefect limit, then the ledger lock.

A second round waits (``on_busy = "wait"``, up to ``timeout_seconds``) or
stops at once with :class:`RoundBusyError` (``on_busy = "exit"``).

The lock is re-entrant within one process: a flow that already holds it (the
reopen flow ingesting, then starting a round as a subflow) does not block on
itself.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import socket
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, Iterator

from labelloop.flows.runtime import Campaign
from labelloop.integrations.ledger import Ledger, LedgerError

log = logging.getLogger("labelloop.lock")

LOCK_KEY = "round_lock"
_POLL_SECONDS = 1.0
_held: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar("labelloop_round_locks", default=frozenset())


class RoundBusyError(LedgerError):
    """Another round of the same campaign holds the lock (and this one was told not to wait)."""


def prefect_limit_name(campaign: str) -> str:
    return f"labelloop-campaign-{campaign}"


# --------------------------------------------------------------------------- ledger lock
def _now() -> float:
    return time.time()


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _holder_is_dead(holder: dict[str, Any]) -> bool:
    """True when the holder ran on this host and its process no longer exists (killed, crashed).

    Only a same-host check is possible without a server; a zombie (killed but not yet
    reaped) counts as dead. Another host's holder is trusted until its lease runs out.
    """
    pid = holder.get("pid")
    if holder.get("host") != socket.gethostname() or not isinstance(pid, int) or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return fh.read().rsplit(")", 1)[-1].split()[0] == "Z"
    except OSError:
        return False


def _owner_label() -> str:
    label = f"{socket.gethostname()}:pid{os.getpid()}"
    if "prefect" not in sys.modules:  # no Prefect loaded, no flow run: don't import it (`labelloop status`)
        return label
    try:
        from prefect.context import FlowRunContext

        ctx = FlowRunContext.get()
        if ctx is not None and ctx.flow_run is not None:
            label += f":flow-run/{ctx.flow_run.name or ctx.flow_run.id}"
    except Exception:  # noqa: BLE001 - a label only
        pass
    return label


class LedgerLock:
    """A lease in the ledger (``Ledger.update_lease``): each step is one transaction that holds the row."""

    def __init__(self, ledger: Ledger, lease_seconds: float = 300.0, key: str = LOCK_KEY):
        self.ledger = ledger
        self.lease = float(lease_seconds)
        self.name = key
        self.token = uuid.uuid4().hex
        self.label = _owner_label()

    def read(self) -> dict[str, Any] | None:
        """The current holder (``owner``, ``label``, ``since``, ``expires``) or None when free."""
        info = _parse(self.ledger.lease(self.name))
        if info is None or info.get("expires", 0) < _now() or _holder_is_dead(info):
            return None
        return info

    def try_acquire(self) -> dict[str, Any] | None:
        """Take the lock if it is free or expired. Returns None on success, else the holder's record."""
        now = _now()
        mine = {"owner": self.token, "label": self.label, "since": now, "expires": now + self.lease,
                "host": socket.gethostname(), "pid": os.getpid()}
        busy: list[dict[str, Any]] = []

        def decide(value: str) -> str | None:
            cur = _parse(value)
            if cur is not None and cur.get("owner") != self.token and cur.get("expires", 0) >= now:
                if not _holder_is_dead(cur):
                    busy.append(cur)
                    return None
                log.warning("taking over the round lock of %s: that process is gone (killed?)", cur.get("label"))
            return json.dumps(mine)

        self.ledger.update_lease(self.name, decide)
        return busy[0] if busy else None

    def renew(self) -> bool:
        now = _now()
        renewed: list[bool] = []

        def decide(value: str) -> str | None:
            cur = _parse(value)
            if cur is None or cur.get("owner") != self.token:
                return None
            renewed.append(True)
            return json.dumps({**cur, "expires": now + self.lease})

        self.ledger.update_lease(self.name, decide)
        return bool(renewed)

    def release(self) -> None:
        def decide(value: str) -> str | None:
            cur = _parse(value)
            return "" if cur is not None and cur.get("owner") == self.token else None

        self.ledger.update_lease(self.name, decide)


def _parse(value: str) -> dict[str, Any] | None:
    if not value:
        return None
    try:
        out = json.loads(value)
    except ValueError:
        return None
    return out if isinstance(out, dict) else None


def _describe(holder: dict[str, Any]) -> str:
    return (f"held by {holder.get('label', '?')} since {_iso(float(holder.get('since', 0)))}, "
            f"lease until {_iso(float(holder.get('expires', 0)))}")


@contextmanager
def _ledger_lock(c: Campaign, *, wait: bool, timeout: float, lease: float) -> Iterator[None]:
    lock = LedgerLock(c.ledger, lease_seconds=lease)
    deadline = time.monotonic() + timeout
    announced = False
    while True:
        holder = lock.try_acquire()
        if holder is None:
            break
        if not wait:
            raise RoundBusyError(
                f"campaign {c.name!r}: another round is running ({_describe(holder)}); this one exits "
                f"without querying ([lock] on_busy = \"exit\"). Run it again later, or set on_busy = \"wait\".")
        if time.monotonic() >= deadline:
            raise RoundBusyError(
                f"campaign {c.name!r}: gave up after waiting {timeout:.0f}s for the round lock ({_describe(holder)}).")
        if not announced:
            _announce(waiting_message(c.name, holder, timeout))
            announced = True
        time.sleep(_POLL_SECONDS)
    if announced:
        _announce(f"campaign {c.name!r}: round lock acquired")
    stop = threading.Event()

    def heartbeat() -> None:
        while not stop.wait(max(1.0, lease / 3)):
            try:
                if not lock.renew():
                    log.warning("campaign %r: round lock was taken over (lease expired?)", c.name)
                    return
            except Exception as err:  # noqa: BLE001 - keep the round running; the lease may lapse
                log.warning("campaign %r: could not renew the round lock: %s", c.name, err)

    t = threading.Thread(target=heartbeat, name=f"labelloop-lock-{c.name}", daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join(timeout=5)
        lock.release()


# --------------------------------------------------------------------------- Prefect global concurrency limit
def ensure_prefect_limit(name: str) -> None:
    """Create the global concurrency limit ``name`` (limit 1) unless it exists."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
            return
        except ObjectNotFound:
            pass
        try:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1, active=True))
        except ObjectAlreadyExists:
            pass


@contextmanager
def _prefect_lock(c: Campaign, *, wait: bool, timeout: float, lease: float) -> Iterator[None]:
    from prefect.concurrency.sync import concurrency

    name = prefect_limit_name(c.name)
    ensure_prefect_limit(name)
    try:
        cm = concurrency(name, occupy=1, timeout_seconds=(timeout if wait else 0.5), strict=True,
                         lease_duration=lease)
        cm.__enter__()
    except TimeoutError:
        verb = "exits without querying ([lock] on_busy = \"exit\")" if not wait else f"gave up after {timeout:.0f}s"
        raise RoundBusyError(f"campaign {c.name!r}: another round holds the Prefect concurrency limit "
                             f"{name!r}; this one {verb}.") from None
    try:
        yield
    finally:
        cm.__exit__(None, None, None)


# --------------------------------------------------------------------------- public
@contextmanager
def round_lock(c: Campaign) -> Iterator[None]:
    """Hold the campaign's round lock for the body (re-entrant within one process)."""
    key = f"{c.ledger.safe_url}#{c.name}"
    held = _held.get()
    if key in held:
        yield
        return
    cfg = c.cfg.lock
    wait = cfg.on_busy == "wait"
    token = _held.set(held | {key})
    try:
        if cfg.backend in ("prefect", "both"):
            with _prefect_lock(c, wait=wait, timeout=cfg.timeout_seconds, lease=cfg.lease_seconds):
                if cfg.backend == "both":
                    with _ledger_lock(c, wait=wait, timeout=cfg.timeout_seconds, lease=cfg.lease_seconds):
                        yield
                else:
                    yield
        else:
            with _ledger_lock(c, wait=wait, timeout=cfg.timeout_seconds, lease=cfg.lease_seconds):
                yield
    finally:
        _held.reset(token)


def lock_holder(c: Campaign) -> dict[str, Any] | None:
    """Who holds the campaign's ledger round lock right now (None when free)."""
    rec = LedgerLock(c.ledger).read()
    if rec is not None:
        rec = {**rec, "since": _iso(float(rec.get("since", 0))), "expires": _iso(float(rec.get("expires", 0)))}
    return rec


def waiting_message(campaign: str, holder: dict[str, Any], timeout: float) -> str:
    """The one line a waiting round prints: who holds the lock, since when, how long we wait."""
    return (f"campaign {campaign!r}: waiting for the round lock held by {holder.get('label', '?')} since "
            f"{_iso(float(holder.get('since', 0)))} (lease until {_iso(float(holder.get('expires', 0)))}; "
            f"giving up after {timeout:.0f}s, [lock] timeout_seconds)")


def _announce(msg: str) -> None:
    """Tell the person at the terminal, not only the (WARNING-level) Prefect log: a round that
    sits silently behind another looks hung."""
    from labelloop.flows.logs import say

    say(msg)
    log.info(msg)

