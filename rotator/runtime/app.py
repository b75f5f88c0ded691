"""Wiring: from a validated config to an engine with its issuer and stores.

Only what the config names is opened, and a store's SDK is imported only when that store is opened, so a
Lambda configured for AWS loads neither Azure nor Google code.
"""

from __future__ import annotations

import contextlib
import gc
import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from rotator import keys as keyfmt
from rotator.config import Config, SecretSource
from rotator.engine import Clock, Engine, system_clock
from rotator.errors import ConfigError, ConfigIssue, KeyFormatError, RotatorError
from rotator.issuers.base import KeyIssuer
from rotator.model import SECRETS, SecretText
from rotator.quotas import RateLimits
from rotator.stores.base import SecretStore, StoreContext, TargetRef
from rotator.stores.registry import open_store


@dataclass
class App:
    """An engine and everything it owns; :meth:`close` releases it all."""

    config: Config
    engine: Engine
    issuer: KeyIssuer
    stores: dict[str, SecretStore]
    closers: list[Callable[[], None]] = field(default_factory=list)

    def close(self) -> None:
        for close in reversed(self.closers):
            with contextlib.suppress(Exception):  # closing must not mask the real outcome
                close()
        self.closers.clear()

    def __enter__(self) -> App:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read_source(source: SecretSource, stores: dict[str, SecretStore], what: str) -> SecretText:
    """Read a secret from an env var, a file, or the current version of a configured store's secret."""
    path = f"issuer.{what}"
    if source.env:
        value = os.environ.get(source.env, "").strip()
        if not value:
            raise ConfigError(
                [
                    ConfigIssue(
                        path,
                        f"environment variable {source.env} is empty or not set; "
                        "export it with a Momento API key that has the Owner role",
                    )
                ]
            )
        return SecretText(value)
    if source.file:
        p = Path(source.file).expanduser()
        try:
            value = p.read_text().strip()
        except OSError as exc:
            raise ConfigError(
                [
                    ConfigIssue(
                        path,
                        f"cannot read {p}: {exc.strerror}; put the key in that file (mode 0600) or use {{env: VAR}}",
                    )
                ]
            ) from None
        if not value:
            raise ConfigError([ConfigIssue(path, f"{p} is empty; put a Momento API key with the Owner role in it")])
        return SecretText(value)
    assert source.store and source.secret
    store = stores[source.store]
    ref = TargetRef(source.store, source.secret, "rotator-management")
    state = store.inspect(ref)
    if state.current_key_id is None:
        if source.bootstrap_env:
            # first start: rotator has not written its own key there yet; the self: true policy will
            return _read_source(SecretSource(env=source.bootstrap_env), stores, what)
        why = "does not exist" if not state.exists else "has no current version written by rotator"
        raise ConfigError(
            [
                ConfigIssue(
                    path,
                    f"secret {source.secret!r} in store {source.store!r} {why}; set bootstrap_env: VAR to start from a "
                    "key in an environment variable (a policy with self: true then writes its own), or use {env: VAR}",
                )
            ]
        )
    return keyfmt.parse_api_key(source.format, store.read(ref, state.current_key_id))


def _check_not_expired(key: SecretText, source: SecretSource | None, now: datetime) -> None:
    """A management key whose own ``exp`` claim has passed is reported at start-up, with the remedy."""
    claims = keyfmt.jwt_claims(key.reveal().strip())
    exp = claims.get("exp") if claims else None
    if isinstance(exp, int | float) and exp <= now.timestamp():
        when = datetime.fromtimestamp(exp, tz=now.tzinfo).strftime("%Y-%m-%dT%H:%M:%SZ")
        where = source.describe() if source else "the emulator's bootstrap key file"
        raise ConfigError(
            [
                ConfigIssue(
                    "issuer.management_key",
                    f"the management key (from {where}) expired at {when}: create a new API key with the Owner role in "
                    f"the Momento console, put it in {where}, and let a policy with self: true keep it fresh",
                )
            ]
        )


def open_stores(
    config: Config, *, clock: Clock = system_clock, limits: RateLimits | None = None, **injected: Any
) -> dict[str, SecretStore]:
    """Open every store a policy or the management key uses, all charging one ``limits`` (the process's request
    quotas). Raises MissingExtraError with the pip command."""
    if limits is None:
        limits = RateLimits(enabled=config.rate_limits)
    used = {t.store for p in config.policies for t in p.targets}
    mk = config.issuer.management_key
    if mk is not None and mk.store:
        used.add(mk.store)
    stores: dict[str, SecretStore] = {}
    for name in sorted(used):
        context = StoreContext(
            clock=clock, pass_timeout=config.pass_timeout, options=dict(injected.get(name, {})), limits=limits
        )
        stores[name] = open_store(config.stores[name], context)
    return stores


def settle_heap() -> None:
    """Take what exists now (the config, the clients, the imported modules) out of the cyclic garbage collector's
    walks, for a process that runs pass after pass over the same config (``rotator run``).

    Those objects live as long as the process, yet every full collection would walk them again: at 10,000
    policies that was about a fifth of a steady pass, and the share grows with the fleet. ``gc.freeze()`` moves
    them to a generation that is never walked; they are still freed by reference counting. Call it once, right
    after :func:`build`; not in tests or other processes that build many engines.
    """
    gc.collect()
    gc.freeze()


def build(
    config: Config,
    *,
    clock: Clock = system_clock,
    store_options: dict[str, dict[str, Any]] | None = None,
    preflight: bool | Literal["now"] = True,
) -> App:
    """Open the issuer and the stores named by ``config`` and return the engine over them.

    With ``preflight`` (the default: every command that can mutate gets its engine here) the checks of
    :mod:`rotator.preflight` run, for every policy, before the first pass that plans an action acts (a steady
    pass makes no call for them: it stays one listing); ``"now"`` runs them here, before returning (``run``
    at start-up, ``validate --online``). Read-only commands (status, audit) pass ``preflight=False``. Raises
    ConfigError (exit 2) for a missing management key or endpoint or a failed preflight, MissingExtraError for
    a missing extra; nothing is changed anywhere before that.
    """
    from rotator.issuers.momento import MomentoIssuer

    closers: list[Callable[[], None]] = []
    limits = RateLimits(enabled=config.rate_limits)  # one for the process: every store, worker and the issuer
    stores = open_stores(config, clock=clock, limits=limits, **(store_options or {}))
    closers.extend(s.close for s in stores.values())
    ic = config.issuer
    try:
        url = ic.base_url
        if ic.type == "emulator" and ic.url is None:
            from rotator.issuers.emulator import Emulator

            def emulator_clock() -> float:
                return clock().timestamp()

            try:
                emu = Emulator(
                    ic.emulator.db,
                    port=ic.emulator.port,
                    clock=emulator_clock,
                    latency=ic.emulator.latency.total_seconds(),
                    failure_rate=ic.emulator.failure_rate,
                    bootstrap_key_file=ic.emulator.bootstrap_key_file,
                )
            except (OSError, sqlite3.Error) as exc:
                # a path under a regular file, a read-only volume, a file that is not a database: bad input
                why = getattr(exc, "strerror", None) or str(exc)
                raise ConfigError(
                    [
                        ConfigIssue(
                            "issuer.emulator.db",
                            f"cannot open the emulator's database {ic.emulator.db} (or its key file "
                            f"{ic.emulator.bootstrap_key_file}): {why}; point issuer.emulator.db at a writable path",
                        )
                    ]
                ) from None
            try:
                url = emu.start()
            except OSError as exc:
                emu.stop()
                raise ConfigError(
                    [ConfigIssue("issuer.emulator.port", f"cannot listen on port {ic.emulator.port}: {exc.strerror}")]
                ) from None
            closers.append(emu.stop)
            management_key = emu.bootstrap_key
        elif ic.management_key is not None:
            management_key = _read_source(ic.management_key, stores, "management_key")
        else:  # an external emulator: its bootstrap key file
            management_key = _read_source(SecretSource(file=ic.emulator.bootstrap_key_file), stores, "management_key")
        SECRETS.pin(management_key.reveal())  # scrubbed from every output for the life of the process
        SECRETS.pin_url(url)
        _check_not_expired(management_key, ic.management_key, clock())
        try:
            endpoint = keyfmt.require_endpoint(management_key, ic.endpoint, expect=ic.key_version)
        except KeyFormatError as exc:
            field_ = "endpoint" if str(exc) == keyfmt.MISSING_ENDPOINT else "management_key"
            raise ConfigError([ConfigIssue(f"issuer.{field_}", str(exc))]) from None
        issuer = MomentoIssuer(
            url,
            management_key,
            timeout=ic.timeout.total_seconds(),
            max_attempts=ic.max_attempts,
            page_size=ic.page_size,
            listing_timeout=config.pass_timeout.total_seconds(),
            limits=limits,
        )
        closers.append(issuer.close)
        if preflight == "now":
            from rotator import preflight as preflight_checks

            preflight_checks.check(config, issuer, stores)
    except ConfigError as exc:
        for c in reversed(closers):
            c()
        raise ConfigError(exc.issues, source=config.source) from None
    except (RotatorError, OSError):
        for c in reversed(closers):
            c()
        raise
    pickup = None
    if any(p.pickup for p in config.policies):
        from rotator.pickup.runner import PickupRunner

        pickup = PickupRunner()
        closers.append(pickup.close)
    reloads = None
    if any(p.reload for p in config.policies):
        from rotator.reload.runner import ReloadRunner

        reloads = ReloadRunner(clock=clock)
        closers.append(reloads.close)
    before_first_mutation = None
    if preflight is True:
        from rotator import preflight as preflight_checks

        def before_first_mutation(view: KeyIssuer) -> None:
            preflight_checks.check(config, view, stores)

    engine = Engine(
        config,
        issuer,
        stores,
        endpoint=endpoint,
        clock=clock,
        pickup=pickup,
        preflight=before_first_mutation,
        reloads=reloads,
        limits=limits,
    )
    return App(config, engine, issuer, stores, closers)


#: how far from today ``--now`` may be (either way)
NOW_WINDOW_YEARS = 20


def parse_now(text: str, base: datetime | None = None) -> Clock:
    """``--now``: an ISO 8601 time (``2026-12-01T00:00:00Z``) or an offset from now (``+7d``, ``-1h``).

    It must fall within :data:`NOW_WINDOW_YEARS` years of today. The clock it returns advances with real
    time from that instant, so a long-running command still sees time pass. Raises ConfigError."""
    import time
    from datetime import timedelta

    from rotator.config import parse_duration, redact_secrets

    start_real = time.monotonic()
    today = system_clock()
    base = base or today
    text = text.strip()
    low, high = today - timedelta(days=365 * NOW_WINDOW_YEARS), today + timedelta(days=365 * NOW_WINDOW_YEARS)
    window = f"between {low:%Y-%m-%d} and {high:%Y-%m-%d} ({NOW_WINDOW_YEARS} years either side of today)"
    usage = "use a time like 2026-12-01T00:00:00Z, or an offset like +7d or -1h"
    if not text:
        raise ConfigError([ConfigIssue("--now", f"is empty: {usage}")])
    try:
        if text[:1] in "+-":
            delta = parse_duration(text[1:])
            fixed = base + delta if text[0] == "+" else base - delta
        else:
            fixed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
            if fixed.tzinfo is None:
                raise ValueError("no time zone: add Z or +00:00")
    except (ValueError, OverflowError) as exc:
        why = str(exc) if isinstance(exc, OverflowError) or text[:1] in "+-" else "not ISO 8601"
        message = redact_secrets(f"{text[:80]!r} is not a time ({why}): {usage}")
        raise ConfigError([ConfigIssue("--now", message)]) from None
    if not low <= fixed <= high:
        raise ConfigError([ConfigIssue("--now", f"{fixed:%Y-%m-%dT%H:%M:%SZ} is out of range: it must be {window}")])

    def clock() -> datetime:
        return fixed + timedelta(seconds=time.monotonic() - start_real)

    return clock
