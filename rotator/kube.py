"""The Kubernetes API as rotator talks to it: one client loader and one bounded JSON request.

Shared by the ``kubernetes`` pickup check (:mod:`rotator.pickup.kubernetes`), the ``kubernetes`` reload target
(:mod:`rotator.reload.kubernetes`) and leader election (:mod:`rotator.runtime.leader`).

- :func:`load_api_client` builds a ``kubernetes.client.ApiClient`` from the in-cluster service account or a
  kubeconfig file: the client library keeps what it is good at (kubeconfig contexts, exec plugins, client
  certificates, re-reading a rotated service-account token, proxies).
- :func:`call` runs one request for a backend and turns every way it can fail into one short reason
  (:func:`explain` for an answered status), recorded once;
- :class:`KubeApi` makes the requests themselves through that client's connection pool and credentials, but
  with :func:`rotator.httpio.fetch`: a **total deadline** per request (the client library's
  ``_request_timeout`` is per socket read, so an API server, or something in its place, dripping one byte a
  second holds a call for ever), a **body cap** (the client library reads every answer whole, error answers
  included) and JSON with a **nesting limit**. Answers stay plain JSON objects; nothing is deserialised into
  the typed models.

``kubernetes`` (the extra ``momento-rotator[k8s]``) is imported by :func:`load_api_client` only; :class:`KubeApi`
takes the client it is given.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from typing import Any

from rotator import httpio
from rotator.errors import PickupError
from rotator.observability import record_call, redact_text

__all__ = ["KubeApi", "KubeStatus", "call", "explain", "load_api_client"]


class KubeStatus(Exception):
    """The API server answered ``status`` (not 2xx); ``reason`` is its Status object's ``reason``
    (``NotFound``, ``Forbidden``, ``Conflict``...) or empty. Never holds the answer's ``message``."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"HTTP {status}{' ' + reason if reason else ''}")
        self.status = status
        self.reason = reason


def explain(status: int, reason: str, *, forbidden: str, rbac_hint: str) -> str:
    """A status the API server answered, as a reason a user can act on; ``forbidden``: what was refused
    (``get pods in namespace payments``), ``rbac_hint``: where the RBAC to apply is."""
    if status == 403:
        return f"forbidden: {forbidden} is not granted (see {rbac_hint})"
    if status == 401:
        return "unauthorized: the API server rejected rotator's credentials"
    if status == 404:
        return "not found"
    if status == 409:
        return "conflict"
    if status == 0:
        return f"unreachable: {reason or 'no HTTP answer'}"
    return f"status {status}{' ' + reason if reason else ''}"


def call(
    service: str, op: str, fn: Callable[[], Any], *, timeout: float, explain: Callable[[KubeStatus], str]
) -> tuple[str | None, Any]:
    """Run one API request ``fn``: ``(None, result)`` or ``(why it failed, None)``, recorded once either way
    as ``(service, op, status)``. ``explain`` words an answered status; nothing else from the answer (which
    may hold data) is ever shown."""
    import urllib3

    try:
        result = fn()
    except KubeStatus as exc:
        record_call(service, op, exc.status)
        return explain(exc), None
    except httpio.DeadlineExceeded:
        record_call(service, op, "DeadlineExceeded")
        return f"no answer within {timeout:g}s", None
    except httpio.BodyTooLarge as exc:
        record_call(service, op, "BodyTooLarge")
        return f"unreadable answer: {exc}", None
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        record_call(service, op, type(exc).__name__)
        return f"unreachable: {type(exc).__name__}", None
    except ValueError as exc:  # a body the client could not read
        record_call(service, op, type(exc).__name__)
        return f"unreadable answer: {type(exc).__name__}", None
    record_call(service, op, 200)
    return None, result


class KubeApi:
    """Bounded JSON requests to the API server of ``api_client`` (a ``kubernetes.client.ApiClient``).

    Each request ends within ``timeout`` seconds in total and reads at most ``max_body`` bytes. Errors:
    :class:`KubeStatus` (any status but 2xx), ``httpio.DeadlineExceeded``/``httpio.BodyTooLarge``, urllib3's
    errors and OSError (no connection, TLS), ValueError (an answer that is not a JSON object).
    """

    def __init__(self, api_client: Any, *, timeout: float, max_body: int) -> None:
        self.timeout = timeout
        self.max_body = max_body
        self._client = api_client
        self._manager = api_client.rest_client.pool_manager
        httpio.watch(self._manager)

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str | int] | None = None,
        body: Mapping[str, Any] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        """``method path`` (e.g. ``/api/v1/namespaces/ns/secrets/name``) with ``query`` and a JSON ``body``
        (sent as ``content_type``: a PATCH names its patch type, e.g. ``application/merge-patch+json``);
        the answer's JSON object."""
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        # the client library's own serialiser: base URL, default headers (User-Agent) and the bearer token,
        # re-read through its refresh hook when the kubelet has rotated it
        _, url, headers, _, _ = self._client.param_serialize(
            method=method,
            resource_path=path,
            query_params=list((query or {}).items()) or None,
            header_params=headers,
            auth_settings=["BearerToken"],
        )
        r = httpio.fetch(
            self._manager,
            method,
            url,
            headers=headers,
            # the client library's serialiser for the body too (a datetime becomes isoformat() text)
            body=json.dumps(self._client.sanitize_for_serialization(dict(body))).encode() if body is not None else None,
            timeout=self.timeout,
            max_body=self.max_body,
        )
        if not 200 <= r.status_code <= 299:
            raise KubeStatus(r.status_code, _reason(r.content))
        data = r.json()
        if not isinstance(data, dict):
            raise ValueError("the answer is not a JSON object")
        return data

    def close(self) -> None:
        self._client.close()


def _reason(body: bytes) -> str:
    """The ``reason`` of a Status object (``{"kind": "Status", "reason": "NotFound", ...}``), or empty."""
    try:
        data = httpio.loads(body)
    except ValueError:
        return ""
    reason = data.get("reason") if isinstance(data, dict) else None
    return reason if isinstance(reason, str) and reason.isalnum() and len(reason) <= 64 else ""


def load_api_client(
    *,
    in_cluster: bool | None,
    kubeconfig: str | None,
    context: str | None,
    service_account_dir: str | None = None,
    what: str = "pickup kubernetes",
    error: Callable[[str], Exception] = PickupError,
) -> Any:
    """A ``kubernetes.client.ApiClient`` from the in-cluster service account or a kubeconfig file.

    ``in_cluster`` None: in-cluster when ``KUBERNETES_SERVICE_HOST`` is set. In-cluster reads the token and
    ``ca.crt`` under ``service_account_dir`` (default: the client library's
    ``/var/run/secrets/kubernetes.io/serviceaccount``) and re-reads the token as the kubelet rotates it.

    Raises: ``error(message)`` (PickupError by default) naming ``what`` and where credentials were looked for.
    """
    from kubernetes import client as k8s
    from kubernetes import config as k8s_config
    from kubernetes.config import incluster_config

    in_cluster = in_cluster if in_cluster is not None else bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
    configuration = k8s.Configuration()
    # untyped in the client library: called through Any
    load_kubeconfig: Any = k8s_config.load_kube_config
    try:
        if in_cluster:
            token_file, cert_file = incluster_config.SERVICE_TOKEN_FILENAME, incluster_config.SERVICE_CERT_FILENAME
            if service_account_dir is not None:
                token_file = os.path.join(service_account_dir, "token")
                cert_file = os.path.join(service_account_dir, "ca.crt")
            loader_class: Any = incluster_config.InClusterConfigLoader
            loader_class(token_filename=token_file, cert_filename=cert_file).load_and_set(configuration)
        else:
            load_kubeconfig(
                config_file=kubeconfig,
                context=context,
                client_configuration=configuration,
                persist_config=False,
            )
    except (k8s_config.ConfigException, OSError, ValueError) as exc:
        where = "the in-cluster service account" if in_cluster else f"kubeconfig {kubeconfig or '(default)'}"
        in_context = f" (context {context})" if context else ""
        why = redact_text(str(exc))[:300] or type(exc).__name__
        raise error(f"{what}: cannot load {where}{in_context}: {why}") from exc
    return k8s.ApiClient(configuration)
