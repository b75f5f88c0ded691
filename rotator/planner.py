"""The lifecycle rules: a pure function from (policy, observation, now) to a plan.

No I/O, no clock reads, no logging: everything the rules need arrives as arguments, so the property tests
can drive it through crashes, races and clock jumps. The lifecycle (DESIGN section 2):

- the **active** key is the newest key at the issuer that some target holds (as any enabled version);
- **publish**: every target that does not hold the active key as current gets it, copied from a target that
  holds it (a key's plaintext lives only in memory and in the stores);
- **due**: the active key's remaining life is within ``rotate_before`` (less the allowed clock skew), or for
  keys that never expire its age reached ``rotate_every``; no key at all, an expired key, or targets holding
  a key the issuer no longer lists are due now, with a warning;
- **window**: a due rotation starts only while the policy's window is open and no freeze holds (a rotation
  that has started, one asked for, an expired key or no key at all do not wait), unless waiting for the next
  opening would leave the key less than ``grace + interval + clock_skew`` (+ ``reload_timeout`` with reload
  targets) before it expires: then it starts now, with a warning (``OUTSIDE_WINDOW_NOTE``);
- **create**: a new key, published to every target in the same pass; while a younger key that no target
  holds exists (a pass that crashed after creating, or a concurrent pass now publishing it), no second key is
  created until ``orphan_after`` has passed;
- **revoke**: an older key goes once every target holds the active key as current, the last of them for at
  least ``grace``, and every pickup check agrees; its versions are retired first, then it is revoked, so a
  crash in between leaves it listed and the next pass finishes the job;
- **sweep**: a key no target ever held is revoked ``orphan_after`` after it was issued;
- **retire**: enabled, non-current versions holding keys the issuer no longer lists are retired;
- **reload**: once every target holds the active key as current, the policy's reload targets restart their
  consumers (at most ``reload_max_parallel`` rollouts at once; an emergency starts them all), and old keys
  stay until every observable rollout is done; a rollout past ``reload_timeout``, or one the service says
  failed, is reported and started again once per ``reload_timeout``. A target that cannot be observed (a
  webhook) is sent on every pass while old keys wait.

While any target cannot be read, nothing is revoked and nothing is published to that target.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from rotator import windows
from rotator.config import Policy, format_duration
from rotator.model import (
    Action,
    CreateKey,
    KeyInfo,
    Observation,
    Phase,
    PickupVerdict,
    Plan,
    Publish,
    Reload,
    ReloadStatus,
    Retire,
    Revoke,
    SecretState,
)

#: the note a due rotation that had to start outside its window (or inside a freeze) begins with
OUTSIDE_WINDOW_NOTE = "! outside window"


@dataclass(frozen=True)
class Options:
    """How a pass asks the planner to behave beyond the policy."""

    clock_skew: timedelta = timedelta(0)
    drift_check: bool = False  # read the stores even in steady state
    force: bool = False  # rotate now (``rotator rotate``) unless a rotation is already under way
    emergency: bool = False  # revoke replaced keys as soon as every target holds the new one
    verify_for: timedelta = timedelta(0)  # read the stores while the newest key is younger than this
    interval: timedelta = timedelta(0)  # the time between passes (a wait must leave room for the next one)
    # the pass deadline: a pass starts no mutation after it, so a key its creator has not published by then
    # (plus clock_skew, issued_at being the issuer's clock) never will be. None: wait orphan_after
    pass_timeout: timedelta | None = None


def due_at(policy: Policy, key: KeyInfo, skew: timedelta = timedelta(0)) -> datetime | None:
    """When ``key`` is due for replacement under ``policy``, or ``None`` if never."""
    if key.expires_at is not None:
        lifetime = key.expires_at - key.issued_at
        before = policy.rotate_before
        if isinstance(before, float):
            margin = lifetime * before
        elif isinstance(before, timedelta):
            margin = before
        else:  # policy says never-expiring but the key expires: rotate at the default quarter of its life
            margin = lifetime * 0.25
        return key.expires_at - margin - skew
    if policy.rotate_every is not None:
        return key.issued_at + policy.rotate_every
    return None


def expired(key: KeyInfo, now: datetime, skew: timedelta = timedelta(0)) -> bool:
    return key.expires_at is not None and key.expires_at - skew <= now


def window_wait(
    policy: Policy, key: KeyInfo, due: datetime, now: datetime, opts: Options, notes: list[str]
) -> datetime | None:
    """For a key that is due at ``now``: the moment its rotation may start if it must wait for the window (or
    a freeze), or None to start now. Waiting is allowed only while the key would still have ``grace +
    interval + clock_skew`` (+ ``reload_timeout`` with reload targets) left at that moment; else the
    rotation starts now, outside the window, with a warning."""
    if policy.window is None and not policy.freezes:
        return None
    g = windows.gate(policy.window, policy.freezes, now)
    if g.open:
        return None
    margin = policy.grace + opts.interval + opts.clock_skew
    terms = "grace + interval + clock_skew"
    if policy.reload:
        margin += policy.reload_timeout
        terms += " + reload_timeout"
    if key.expires_at is None or (g.next_start is not None and key.expires_at - g.next_start >= margin):
        if g.next_start is None:
            notes.append(
                f"! key {key.key_id} is due (due at {_fmt_time(due)}) but {g.why} nothing opens within "
                f"{format_duration(windows.HORIZON)}; it never expires, so it waits"
            )
            return now + windows.HORIZON  # looked at again on every pass meanwhile
        notes.append(
            f"key {key.key_id} is due (due at {_fmt_time(due)}), waits for the window opening at "
            f"{_fmt_time(g.next_start)}: now {g.why}"
        )
        return g.next_start
    opening = f"the next opening ({_fmt_time(g.next_start)})" if g.next_start else "no opening in sight"
    notes.append(
        f"{OUTSIDE_WINDOW_NOTE} for {policy.name}: key {key.key_id} is due and expires at "
        f"{_fmt_time(key.expires_at)}; {opening} would leave it less than {terms} ({format_duration(margin)}): "
        f"rotating now, {g.why}"
    )
    return None


def _order(keys: tuple[KeyInfo, ...]) -> list[KeyInfo]:
    return sorted(keys, key=lambda k: (k.issued_at, k.key_id))


def _min(*times: datetime | None) -> datetime | None:
    present = [t for t in times if t is not None]
    return min(present) if present else None


def _fmt_time(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def plan(policy: Policy, obs: Observation, now: datetime, opts: Options = Options()) -> Plan:
    """Decide what to do for one policy. Pure: the same inputs always give the same plan."""
    keys = _order(tuple(k for k in obs.keys if k.policy == policy.name))
    skew = opts.clock_skew

    if obs.targets is None:
        return _plan_without_targets(policy, keys, now, opts)

    notes: list[str] = []
    states: dict[str, SecretState] = {}
    unknown: list[str] = []
    for t in policy.targets:
        o = obs.targets.get(t.id)
        if o is None or o.state is None:
            unknown.append(t.id)
            notes.append(f"! target {t.id} could not be read: {o.error if o else 'not observed'}")
        else:
            states[t.id] = o.state

    by_id = {k.key_id: k for k in keys}
    live_ids = set(by_id)

    def holders(key_id: str, *, current_only: bool = False, enabled_only: bool = True) -> list[str]:
        out = []
        for tid, s in states.items():
            if current_only:
                if s.current_key_id == key_id:
                    out.append(tid)
            elif any(
                v.key_id == key_id
                and (v.enabled or not enabled_only or v.current)
                # a key a native rotation has only staged is not held yet: that rotation may still fail
                and not (enabled_only and s.native and v.pending)
                for v in s.versions
            ):
                out.append(tid)
        return out

    # the active key: the newest key that some target holds. The issuer dates keys to the second, so two keys
    # created within one second tie: then the one a target holds as current is the newer (it was promoted)
    active: KeyInfo | None = None
    held = [k for k in keys if holders(k.key_id)]
    if held:
        active = max(held, key=lambda k: (k.issued_at, bool(holders(k.key_id, current_only=True)), k.key_id))

    for tid, s in states.items():
        if s.current_key_id is not None and s.current_key_id not in live_ids:
            notes.append(
                f"! target {tid} holds key {s.current_key_id}, which the issuer no longer lists "
                "(revoked or expired outside rotator): replacing it now"
            )
        elif s.foreign:
            notes.append(f"! target {tid} holds a value rotator did not write")

    # keys younger than the active one that no target holds: created by a pass that died before publishing,
    # or by a concurrent pass that is publishing them right now
    newer = [k for k in keys if active is None or (k.issued_at, k.key_id) > (active.issued_at, active.key_id)]
    ever_held = {k.key_id for k in keys if holders(k.key_id, enabled_only=False)}
    pending = [k for k in newer if k.key_id not in ever_held]
    fresh_pending = [k for k in pending if now - k.issued_at < policy.orphan_after]

    actions: list[Action] = []
    wake: datetime | None = None
    phase: Phase = "steady"
    window_opens: datetime | None = None

    # orphans: keys no target ever held, older than orphan_after (a target that cannot be read might hold one)
    for k in keys:
        if k.key_id not in ever_held and (active is None or k.key_id != active.key_id):
            if unknown:
                continue
            if now - k.issued_at >= policy.orphan_after:
                actions.append(Revoke(policy.name, k.key_id, "orphan: created but never stored", (), orphan=True))
            else:
                wake = _min(wake, k.issued_at + policy.orphan_after)

    # is a new key needed?
    create_reason: str | None = None
    if active is None:
        create_reason = "no key: no target holds a key the issuer lists"
        phase = "no-key"
    elif expired(active, now, skew):
        create_reason = f"key {active.key_id} expired at {_fmt_time(active.expires_at)}"  # type: ignore[arg-type]
        notes.append(f"! {create_reason}")
        phase = "expired"
    else:
        d = due_at(policy, active, skew)
        # a rotation has started once its new key exists: publishing it and retrying go on outside the window
        opens = None
        if d is not None and now >= d and not newer and not opts.force:
            opens = window_wait(policy, active, d, now, opts, notes)
        if opens is not None:
            phase, window_opens = "awaiting-window", opens
            wake = _min(wake, opens)
        elif d is not None and now >= d:
            create_reason = f"key {active.key_id} is due (due at {_fmt_time(d)})"
            phase = "due"
        elif opts.force and (opts.emergency or all(k.key_id == active.key_id for k in keys)):
            # a plain request waits for a rotation under way; an emergency (a leaked key) never waits
            create_reason = "emergency rotation requested" if opts.emergency else "rotation requested"
            phase = "due"
        else:
            wake = _min(wake, d)

    native = sorted(tid for tid, st in states.items() if st.native)
    if create_reason is not None and native:
        # one writer per secret: the store's own rotation (rotator's rotation function) makes the new key, and
        # the passes copy it to the other targets once it is current there
        notes.append(
            f"{create_reason}: the new key comes from the native rotation of {', '.join(native)} "
            "(Secrets Manager's schedule runs rotator's rotation function); this pass creates none"
        )
        create_reason = None

    if create_reason is not None:
        # wait for a pending key only while its creator may still publish it, and only with room to spare.
        # A pass starts no mutation after its deadline, so the wait ends pass_timeout (+ clock_skew) after the
        # key was created (orphan_after is when it is swept, a different question; with no key at all, the
        # back-off below counts lost keys over orphan_after). The key made when the wait ends must still reach
        # the consumers before the old one expires: the next pass may come an interval later, and consumers
        # need grace (the margin config checks rotate_before against). A duplicate is cheap: it is swept.
        live_for = policy.orphan_after
        if opts.pass_timeout is not None and active is not None:
            live_for = min(live_for, opts.pass_timeout + skew)
        publishable = [k for k in fresh_pending if now - k.issued_at < live_for]
        p = publishable[-1] if publishable else None
        until = p.issued_at + live_for if p else now
        # with no key at all there is nothing to outlive: retry at once after one lost key, but after two, wait,
        # or a store that refuses every write would make each pass create another key
        if active is None:
            outlives = len(fresh_pending) >= 2
        else:
            room = policy.grace + opts.interval
            outlives = active.expires_at is None or active.expires_at - skew - until >= room
        if p is not None and outlives:
            notes.append(
                f"waiting for key {p.key_id} (created {_fmt_time(p.issued_at)}, held by no target yet; a pass "
                f"may be publishing it) until {_fmt_time(until)} before creating another"
            )
            wake = _min(wake, until)
            phase = "publishing"
            create_reason = None
        else:
            actions.append(CreateKey(policy.name, create_reason))

    # finish publishing the active key (unless a newer one is being created now)
    publishing = False
    if active is not None and create_reason is None:
        sources = holders(active.key_id)
        # prefer a target where it is current (read-back verified) as the copy source
        current_sources = [t for t in sources if states[t].current_key_id == active.key_id]
        source = (current_sources or sources)[0]
        for t in policy.targets:
            if t.id in states and states[t.id].current_key_id != active.key_id:
                publishing = True
                if states[t.id].native:
                    continue  # its native rotation makes the key current there (it is the one writer)
                actions.append(Publish(policy.name, active.key_id, t.id, source))
        if publishing:
            phase = "publishing"

    # retire versions holding keys the issuer no longer lists
    for tid, s in states.items():
        for v in s.versions:
            if v.enabled and not v.current and v.key_id is not None and v.key_id not in live_ids:
                actions.append(Retire(policy.name, v.key_id, tid, "the issuer no longer lists this key"))

    # revoke replaced keys once grace (and pickup) allow
    # a key a native rotation has staged and not yet finished is that rotation's, not an old key
    native_staged = {v.key_id for st in states.values() if st.native for v in st.versions if v.pending and v.key_id}
    old = [
        k
        for k in keys
        if active is not None and k.key_id != active.key_id and k.key_id in ever_held and k.key_id not in native_staged
    ]
    needs_pickup: str | None = None
    needs_reload: str | None = None
    if old and active is not None:
        busy = publishing or create_reason is not None
        reloads = _Reloads()
        if policy.reload and not busy and not unknown:
            reloads = _reloads(policy, obs.reloads, active, now, opts, notes)
            actions.extend(reloads.actions)
            wake, needs_reload = _min(wake, reloads.wake), reloads.needs
            if reloads.blocked is not None and phase == "steady":
                phase = "reloading"
        gate = _revocation_gate(
            policy, obs, opts, active, old, states, bool(unknown), busy, now, notes, reloads.blocked
        )
        wake, needs_pickup = _min(wake, gate.wake), gate.needs_pickup
        if gate.blocked is not None:
            phase = "awaiting-pickup" if phase == "steady" else phase
            notes.append(f"{len(old)} old key(s) kept: {gate.blocked}")
        else:
            for k in old:
                retire_in = tuple(tid for tid in holders(k.key_id) if states[tid].current_key_id != k.key_id)
                why = "emergency: replaced" if opts.emergency else "replaced"
                actions.append(Revoke(policy.name, k.key_id, why, retire_in))
            if phase == "steady":
                phase = "revoking"

    if phase == "steady" and any(isinstance(a, Revoke | Retire) for a in actions):
        phase = "revoking"
    return Plan(
        policy=policy.name,
        phase=phase,
        actions=tuple(actions),
        wake_at=wake,
        needs_pickup=needs_pickup,
        needs_reload=needs_reload,
        current_key=active.key_id if active else None,
        notes=tuple(notes),
        window_opens=window_opens,
    )


@dataclass(frozen=True)
class _Gate:
    """Why old keys must stay (``blocked``, or ``None``: revoke), and when that may change on its own."""

    blocked: str | None = None
    wake: datetime | None = None
    needs_pickup: str | None = None


def _revocation_gate(
    policy: Policy,
    obs: Observation,
    opts: Options,
    active: KeyInfo,
    old: list[KeyInfo],
    states: dict[str, SecretState],
    unknown: bool,
    busy: bool,
    now: datetime,
    notes: list[str],
    reloads_blocked: str | None = None,
) -> _Gate:
    """May the keys ``active`` replaced be revoked now? Every target must hold ``active`` as current, every
    rollout of the policy's reload targets must be done, the last target must hold ``active`` for at least
    ``grace``, and every pickup verdict must agree (an emergency skips reloads, grace and pickup)."""
    if unknown:
        return _Gate("some targets could not be read")
    if busy:
        return _Gate(f"key {active.key_id} is not yet current in every target")
    sinces = [states[t.id].current_since for t in policy.targets]
    if any(s is None for s in sinces):
        return _Gate("a target does not say since when it holds the new key")
    last = max(s for s in sinces if s is not None)
    if opts.emergency:
        return _Gate()
    if reloads_blocked is not None:
        return _Gate(reloads_blocked)
    grace_end = last + policy.grace
    if now < grace_end:
        return _Gate(
            f"grace: the last target took key {active.key_id} at {_fmt_time(last)}; "
            f"old keys stay valid until {_fmt_time(grace_end)} ({format_duration(policy.grace)} grace)",
            wake=grace_end,
        )
    if obs.pickup is not None:
        return _pickup_gate(policy, obs.pickup, active, old, last, now, notes)
    if policy.pickup:
        return _Gate("pickup checks have not been asked yet", needs_pickup=active.key_id)
    return _Gate()


def _pickup_gate(
    policy: Policy,
    verdicts: tuple[PickupVerdict, ...],
    active: KeyInfo,
    old: list[KeyInfo],
    last: datetime,
    now: datetime,
    notes: list[str],
) -> _Gate:
    """Lagging consumers keep the old keys, until ``revoke_after``; past ``max_wait`` they raise an alert."""
    lagging = [v for v in verdicts if v.key_id == active.key_id and not v.ok]
    if not lagging:
        return _Gate()
    who = "; ".join(f"{v.check}: {', '.join(v.lagging) or v.detail}" for v in lagging)
    waited = format_duration(now - last)
    blocked = f"pickup: consumers lag on key {active.key_id} since {_fmt_time(last)} ({waited}): {who}"
    for k in old:
        if k.expires_at is not None:
            blocked += f"; old key {k.key_id} expires at {_fmt_time(k.expires_at)} regardless"
    if policy.revoke_after is not None and now >= last + policy.revoke_after:
        after = format_duration(policy.revoke_after)
        notes.append(f"! pickup: revoking anyway, revoke_after ({after}) passed; lagging: {who}")
        return _Gate()
    wake = last + policy.revoke_after if policy.revoke_after is not None else None
    if policy.max_wait is not None:
        if now >= last + policy.max_wait:
            notes.append(
                f"! pickup overdue for {policy.name}: consumers still lag {waited} after key {active.key_id} "
                f"was published: {who}"
            )
        else:
            wake = _min(wake, last + policy.max_wait)
    return _Gate(blocked, wake)


#: the note that says a reload failed or timed out (rotator.notify raises ``reload_failed`` on it)
RELOAD_FAILED_NOTE = "! reload failed"


@dataclass(frozen=True)
class _Reloads:
    """The reloads to start now, why old keys must wait for reloads (or ``None``), and when that may change."""

    actions: tuple[Reload, ...] = ()
    blocked: str | None = None
    wake: datetime | None = None
    needs: str | None = None


def _reloads(
    policy: Policy,
    statuses: tuple[ReloadStatus, ...] | None,
    active: KeyInfo,
    now: datetime,
    opts: Options,
    notes: list[str],
) -> _Reloads:
    """Which reload units to start for ``active``, from what the services show (never from memory)."""
    mine = [s for s in statuses or () if s.key_id == active.key_id]
    if not mine:  # not observed for this key (a status for another key is no evidence)
        return _Reloads(blocked="reload targets have not been observed yet", needs=active.key_id)
    timeout = policy.reload_timeout
    start: list[tuple[ReloadStatus, str]] = []
    signals: list[ReloadStatus] = []
    lag: list[str] = []
    in_flight = 0
    wake: datetime | None = None
    done = 0
    for s in mine:
        if not s.observable:
            signals.append(s)  # sent on every pass while old keys wait: at least once
            continue
        detail = f" ({s.detail})" if s.detail else ""
        if s.state == "done":
            done += 1
        elif s.state == "rolling":
            if s.since is not None and now - s.since >= timeout:
                notes.append(
                    f"{RELOAD_FAILED_NOTE} for {policy.name}: {s.id} has been rolling out key {active.key_id} since "
                    f"{_fmt_time(s.since)}, longer than reload_timeout ({format_duration(timeout)}){detail}; "
                    "starting it again"
                )
                start.append((s, "timed out: started again"))
                lag.append(f"{s.id} timed out")
            else:
                in_flight += 1 if s.rollout else 0
                wake = _min(wake, s.since + timeout if s.since is not None else None)
                since = f" since {_fmt_time(s.since)}" if s.since is not None else ""
                lag.append(f"{s.id} rolling{since}{detail}")
        elif s.state == "failed":
            again = s.since is None or now - s.since >= timeout
            retry = "starting it again" if again or s.since is None else f"again at {_fmt_time(s.since + timeout)}"
            notes.append(
                f"{RELOAD_FAILED_NOTE} for {policy.name}: {s.id} failed to roll out key {active.key_id}{detail}; "
                + retry
            )
            if again:
                start.append((s, "failed: started again"))
            elif s.since is not None:
                wake = _min(wake, s.since + timeout)
            lag.append(f"{s.id} failed")
        elif s.state == "pending":
            start.append((s, f"key {active.key_id} is current in every target"))
            lag.append(f"{s.id} not reloaded yet")
        else:  # waiting, unknown: nothing can be started, and nothing is known to be done
            lag.append(f"{s.id} {s.state}{detail}")
    slots = len(start) if opts.emergency else max(0, policy.reload_max_parallel - in_flight)
    actions = [Reload(policy.name, active.key_id, s.target, s.unit, why, s.type, s.rollout) for s, why in start[:slots]]
    if len(start) > slots:
        notes.append(
            f"{len(start) - slots} reload(s) wait for a slot: {in_flight + slots} of reload_max_parallel "
            f"({policy.reload_max_parallel}) rolling"
        )
    actions += [
        Reload(policy.name, active.key_id, s.target, s.unit, "old keys wait for consumers", s.type, s.rollout)
        for s in signals
    ]
    observable = len(mine) - len(signals)
    blocked = None
    if lag:
        blocked = f"reloads: {done} of {observable} done: {'; '.join(lag)}"
    return _Reloads(tuple(actions), blocked, wake)


def _plan_without_targets(policy: Policy, keys: list[KeyInfo], now: datetime, opts: Options) -> Plan:
    """Steady state needs no store reads: one live key, not due, not expired, older than ``verify_for`` (so
    a target that missed a new key is retried on the next passes), and no drift check due."""
    if len(keys) == 1 and not opts.drift_check and not opts.force and not opts.emergency:
        k = keys[0]
        if now - k.issued_at < opts.verify_for:
            return Plan(policy=policy.name, phase="unknown", needs_targets=True, current_key=k.key_id)
        d = due_at(policy, k, opts.clock_skew)
        if not expired(k, now, opts.clock_skew) and (d is None or now < d):
            return Plan(policy=policy.name, phase="steady", wake_at=d, current_key=k.key_id)
        if not expired(k, now, opts.clock_skew) and d is not None:
            # due, and waiting for the window: no store reads until it opens (a steady pass's cost)
            notes: list[str] = []
            opens = window_wait(policy, k, d, now, opts, notes)
            if opens is not None:
                return Plan(
                    policy=policy.name,
                    phase="awaiting-window",
                    wake_at=opens,
                    current_key=k.key_id,
                    notes=tuple(notes),
                    window_opens=opens,
                )
    return Plan(policy=policy.name, phase="unknown", needs_targets=True, current_key=keys[-1].key_id if keys else None)
