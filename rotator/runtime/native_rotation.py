"""Secrets Manager native rotation: the four steps, for secrets whose rotation schedule points at rotator.

The secret must be an ``aws`` target of a configured policy (matched by name or ARN). Every step first checks
that ``ClientRequestToken`` is a version of the secret labelled ``AWSPENDING`` (Secrets Manager creates it when
it starts the rotation) and returns at once when it is ``AWSCURRENT`` (done); any other token is refused before
anything is created. Each step is safe to replay and returns early when its work is done:

- ``createSecret``: if the token's version already has a value, nothing. Otherwise create a Momento key for the
  policy and put it under the token, labelled ``AWSPENDING``. (A Lambda that dies between the two leaves a
  marked key no target holds: a later pass sweeps it after ``orphan_after``.)
- ``setSecret``: nothing: a Momento key is live the moment it is created.
- ``testSecret``: the pending value parses as the policy's payload, holds a Momento API key, and the issuer
  lists that key as live and unexpired.
- ``finishSecret``: move ``AWSCURRENT`` to the token's version (refused while it has no value).

The old key is **not** revoked here: the next rotator pass (the scheduled handler, a CronJob or the daemon)
copies the new key to the policy's other targets and revokes the old one after ``grace`` and pickup, as for any
rotation.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, cast

from rotator import keys as keyfmt
from rotator.config import Policy, Target
from rotator.errors import ConfigError, ConfigIssue, RotatorError
from rotator.observability import get_logger
from rotator.runtime.app import App
from rotator.stores.base import NativeRotation, VersionMeta

log = get_logger()

STEPS = ("createSecret", "setSecret", "testSecret", "finishSecret")


class NativeRotationError(RotatorError):
    """A rotation step cannot go on; Secrets Manager marks the rotation failed and retries it later."""


def _name_of(secret_id: str) -> str:
    """A secret's name from its name or ARN (an ARN ends in ``secret:<name>-<6 random characters>``)."""
    if secret_id.startswith("arn:") and ":secret:" in secret_id:
        name = secret_id.split(":secret:", 1)[1]
        return name[:-7] if len(name) > 7 and name[-7] == "-" else name
    return secret_id


def find_target(app: App, secret_id: str) -> tuple[Policy, Target]:
    """The policy and target that own ``secret_id``, in a store that declares native rotation (AWS Secrets
    Manager). Raises ConfigError when no policy writes it."""
    wanted = {secret_id, _name_of(secret_id)}
    for policy in app.config.policies:
        for t in policy.targets:
            store = app.stores.get(t.store)
            if store is not None and store.capabilities.native_rotation and ({t.secret, _name_of(t.secret)} & wanted):
                return policy, t
    raise ConfigError(
        [
            ConfigIssue(
                "SecretId",
                f"no policy has an aws target for secret {secret_id!r}; add one, "
                "or point the secret's rotation at another function",
            )
        ]
    )


def run_step(app: App, event: dict[str, Any]) -> dict[str, Any]:
    step, secret_id, token = event.get("Step"), event.get("SecretId"), event.get("ClientRequestToken")
    if step not in STEPS or not isinstance(secret_id, str) or not isinstance(token, str):
        raise NativeRotationError(
            f"not a Secrets Manager rotation event (Step {step!r}): expected Step in "
            f"{', '.join(STEPS)}, SecretId and ClientRequestToken"
        )
    policy, target = find_target(app, secret_id)
    store = cast(NativeRotation, app.stores[target.store])  # find_target took a store that declares it
    ref = app.engine.ref(policy, target)
    stages, enabled, _ = store.rotation_state(ref)
    log.info("native rotation step", step=step, policy=policy.name, target=target.id, version=token)
    if not enabled:
        raise NativeRotationError(f"secret {secret_id} is not enabled for rotation")
    # AWS's contract for every step (its rotation function template does the same, before any work): the token
    # must be a version of the secret that Secrets Manager labelled AWSPENDING when it started this rotation
    # ("During rotation, Secrets Manager creates an AWSPENDING version ID before creating the new secret
    # version", DescribeSecret API reference), or AWSCURRENT when the rotation is over. Anything else is refused
    # before a key is created, so a stray or replayed event cannot take AWSPENDING from the rotation in progress.
    labels = stages.get(token)
    if labels is None:
        raise NativeRotationError(
            f"version {token} of {secret_id} has no stage for rotation: Secrets Manager did not start a rotation "
            "with this token (start one with aws secretsmanager rotate-secret)"
        )
    if "AWSCURRENT" in labels:
        return {"step": step, "status": "done: the version is AWSCURRENT already"}
    if "AWSPENDING" not in labels:
        raise NativeRotationError(f"version {token} of {secret_id} is not AWSPENDING: a newer rotation replaced it")

    if step == "createSecret":
        if store.read_version(ref, token) is not None:
            return {"step": step, "status": "done: the pending version exists"}
        engine = app.engine
        now = engine.clock()
        expires = None if policy.lifetime is None else (now + policy.lifetime).replace(microsecond=0)
        issued = engine.issuer.create_key(engine.resolve_role(policy.role), policy.key_description, expires)
        payload = keyfmt.render(
            target.format,
            issued.api_key,
            endpoint=engine.endpoint,
            key_id=issued.info.key_id,
            expires_at=issued.info.expires_at,
        )
        meta = VersionMeta(issued.info.key_id, policy.name, issued.info.expires_at, payload.content_type, policy.role)
        if target.endpoint_secret:
            engine.ensure_endpoint(policy, target, app.stores[target.store])
        # RotationToken: AWS requires it on PutSecretValue for cross-account rotation and rotation under an
        # assumed role (PutSecretValue API reference); sensitive, so never logged
        rotation_token = event.get("RotationToken")
        store.put_pending(
            ref, payload.value, meta, token, rotation_token=rotation_token if isinstance(rotation_token, str) else None
        )
        log.info("created key for native rotation", new_key_id=issued.info.key_id, version=token)
        return {"step": step, "status": "created", "key_id": issued.info.key_id}

    if step == "setSecret":
        return {"step": step, "status": "nothing to set: a Momento key is live once created"}

    if step == "testSecret":
        value = store.read_version(ref, token)
        if value is None:
            raise NativeRotationError(f"version {token} has no value: createSecret did not finish")
        key_id = keyfmt.payload_key_id(value)
        api_key = keyfmt.parse_api_key(target.format, value)
        if keyfmt.key_kind(api_key) == "unknown":
            raise NativeRotationError(f"version {token} does not hold a Momento API key")
        live = {k.key_id: k for k in app.engine.issuer.list_keys()}
        key = live.get(key_id or "")
        if key is None:
            raise NativeRotationError(f"the pending key {key_id} is not live at Momento")
        if key.expires_at is not None and key.expires_at - app.engine.clock() < timedelta(0):
            raise NativeRotationError(f"the pending key {key_id} has expired")
        return {"step": step, "status": "ok", "key_id": key_id}

    # Secrets Manager calls finishSecret after testSecret; still, never make an empty version current
    if store.read_version(ref, token) is None:
        raise NativeRotationError(f"version {token} has no value: createSecret did not finish")
    store.finish(ref, token)
    log.info("native rotation finished: the old key is revoked by a later pass after grace", version=token)
    return {"step": step, "status": "AWSCURRENT moved"}
