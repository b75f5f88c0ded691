"""botocore clients through the bounded read: every HTTP request a boto3/botocore client makes goes through
:func:`rotator.httpio.fetch`, so it has a **total deadline** and a **body cap**.

botocore's own HTTP session has per-socket-read timeouts only (``connect_timeout``/``read_timeout``, 60 s each by
default: a peer, or something in its place, dripping one byte a second holds a call for ever) and reads every
answer whole, error answers included. :func:`bound` registers a handler on the client's ``before-send.<service
id>`` event: botocore (``Endpoint._do_get_response``) emits it with the signed request and sends the request
itself only when no handler returned a ``botocore.awsrequest.AWSResponse`` (the hook moto's in-process mock
answers through). Only the HTTP send is replaced: signing (each attempt is signed again before the event),
retries with their backoff and quota, the ``needs-retry`` hooks and the parsing of answers stay botocore's.

What botocore would have used is kept: the client's ``verify`` (``AWS_CA_BUNDLE``, ``ca_bundle``, a ``verify``
argument; ``True`` is botocore's CA bundle), the proxy botocore chose for the endpoint (``Config(proxies=...)``,
else ``HTTPS_PROXY``/``HTTP_PROXY`` unless ``NO_PROXY`` exempts the host) with its ``Proxy-Authorization``, a
client certificate, the socket options (``tcp_keepalive``) and ``max_pool_connections`` connections kept alive
per endpoint host. The total deadline replaces botocore's per-read timeouts.

Failures are raised as botocore's own exception classes, so its retry modes treat them as they treat their own
(all of them are retried by the ``standard`` and ``adaptive`` modes): a passed deadline is ``ReadTimeoutError``
(``ConnectTimeoutError`` when it passed while connecting, before anything was sent), a refused or unresolvable
connection ``EndpointConnectionError``, a proxy failure ``ProxyConnectionError``, TLS ``SSLError``, a broken
answer ``ConnectionClosedError``, and an answer above the cap :class:`ResponseTooLargeError` (an
``HTTPClientError``). Messages name the endpoint without its query or credentials, never a header or a body.

Request quotas (issue 27): :func:`limit_calls` charges every HTTP attempt of a client against the process's
:class:`rotator.quotas.RateLimits` before it is sent (a ``before-send`` handler registered first, so it runs before
the bounded send), and reports each throttled answer back (a ``needs-retry`` handler, per attempt, like
:func:`record_calls`).

Imported by the AWS store, the SNS notifier and the ``ecs``/``lambda`` reload targets only, when botocore is
there (the ``aws`` extra): it imports botocore at module level, and nothing heavier than urllib3 besides.
:func:`client` makes a client the way all of them want it.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import urllib3
from botocore import exceptions as bex
from botocore.awsrequest import AWSResponse
from botocore.httpsession import get_cert_path
from urllib3 import exceptions as u3

from rotator import httpio
from rotator.quotas import Charge, RateLimits, retry_after_seconds

__all__ = ["THROTTLING_CODES", "BoundSend", "ResponseTooLargeError", "bound", "limit_calls", "record_calls"]

#: the error codes of a request refused for its rate (botocore's throttling list without the codes that mean
#: something else in Secrets Manager: ``LimitExceededException`` is a resource limit, such as too many versions)
THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "SlowDown",
    }
)


class ResponseTooLargeError(bex.HTTPClientError):  # type: ignore[misc]  # botocore is untyped
    """The answer is larger than the client's cap; it was not read past it."""

    fmt = 'The answer from endpoint URL "{endpoint_url}" is larger than {limit} bytes'


def record_calls(client: Any, service: str) -> None:
    """Record every HTTP attempt ``client`` makes, retried or final, with ``record_call(service, operation,
    <error code, HTTP status or exception class>)``: a handler on botocore's ``needs-retry`` event."""
    from rotator.observability import record_call

    def on_attempt(
        response: Any = None, caught_exception: BaseException | None = None, operation: Any = None, **_: Any
    ) -> None:
        op = getattr(operation, "name", "unknown")
        status: str | int = "unknown"
        if caught_exception is not None:
            status = type(caught_exception).__name__
        elif response is not None:
            http, parsed = response
            code = parsed.get("Error", {}).get("Code") if isinstance(parsed, dict) else None
            status = code or getattr(http, "status_code", None) or "unknown"
        record_call(service, op, status)

    event = f"needs-retry.{client.meta.service_model.service_id.hyphenize()}"
    client.meta.events.register(event, on_attempt, unique_id=f"rotator-calls-{service}-{id(client)}")


def limit_calls(client: Any, limits: RateLimits, charges: Callable[[str], Sequence[Charge]]) -> None:
    """Charge every HTTP attempt ``client`` makes, retries included, against ``limits`` before it is sent, and
    report every throttled answer (:data:`THROTTLING_CODES`, or HTTP 429) with :meth:`RateLimits.throttled`.

    ``charges(operation)`` names what one request of the operation (botocore's name: ``PutSecretValue``) counts
    against; ``()``: nothing. The charge is a ``before-send`` handler registered first (botocore calls the
    handlers of the most specific event name first, then those of one name in the order first, middle, last),
    so it runs before :func:`bound`'s send; botocore emits the event once per attempt, after signing."""
    service = client.meta.service_model.service_id.hyphenize()
    sent = threading.local()  # when this thread's attempt went out: botocore sends an attempt on its caller's thread

    def before_send(event_name: str = "", **_: Any) -> None:
        limits.acquire(charges(event_name.rsplit(".", 1)[-1]))
        sent.at = time.monotonic()

    def on_attempt(response: Any = None, operation: Any = None, **_: Any) -> None:
        at = getattr(sent, "at", None)
        if at is not None:  # the service counted it somewhere between sending and now
            limits.answered(charges(getattr(operation, "name", "")), time.monotonic() - at)
            sent.at = None
        if response is None:
            return
        http, parsed = response
        code = parsed.get("Error", {}).get("Code") if isinstance(parsed, dict) else None
        if code not in THROTTLING_CODES and getattr(http, "status_code", None) != 429:
            return
        headers = getattr(http, "headers", None) or {}
        limits.throttled(
            charges(getattr(operation, "name", "")), retry_after=retry_after_seconds(headers.get("Retry-After"))
        )

    events = client.meta.events
    events.register_first(f"before-send.{service}", before_send, unique_id=f"rotator-limits-send-{id(client)}")
    events.register(f"needs-retry.{service}", on_attempt, unique_id=f"rotator-limits-refusal-{id(client)}")


def bound(client: Any, *, timeout: float, max_body: int) -> BoundSend:
    """Make ``client`` (a botocore client) send every request through :func:`rotator.httpio.fetch`: each HTTP
    attempt ends within ``timeout`` seconds in total and reads at most ``max_body`` bytes of answer.

    Returns the handler; its :meth:`BoundSend.close` closes its connection pools (after ``client.close()``).
    """
    send = BoundSend(client, timeout=timeout, max_body=max_body)
    service = client.meta.service_model.service_id.hyphenize()
    client.meta.events.register(f"before-send.{service}", send, unique_id="rotator-botohttp-bound-send")
    return send


def client(
    service: str,
    *,
    session: Any = None,
    region: str | None,
    endpoint: str | None,
    config: Any,
    timeout: float,
    max_body: int,
    record_as: str,
    limits: RateLimits | None = None,
    charges: Callable[[str, str], Sequence[Charge]] | None = None,
    **kwargs: Any,
) -> tuple[Any, BoundSend]:
    """A botocore client of ``service`` (from ``session``, else a new ``boto3.session.Session``) that sends
    through the bounded read (:func:`bound`) and records every attempt as ``record_as`` (:func:`record_calls`);
    with ``limits`` and ``charges`` (``(region, operation) -> charges``, the region the client signs for), every
    attempt is charged there too (:func:`limit_calls`).
    Returns the client and its send: close both (the client first). Raises ImportError without boto3."""
    import boto3

    made = session if session is not None else boto3.session.Session()
    args: dict[str, Any] = {"region_name": region, "config": config}
    if endpoint:
        args["endpoint_url"] = endpoint
    args.update(kwargs)  # what a caller injects (tests: credentials, an endpoint) wins
    c = made.client(service, **args)
    send = bound(c, timeout=timeout, max_body=max_body)
    record_calls(c, record_as)
    if limits is not None and charges is not None:
        region = str(c.meta.region_name or "unknown")
        limit_calls(c, limits, lambda operation: charges(region, operation))
    return c, send


def retry_config(max_attempts: int, pool: int) -> Any:
    """botocore's ``Config`` as rotator's clients use it: adaptive retries up to ``max_attempts`` attempts in
    all, ``pool`` connections per host, ``rotator`` in the user agent."""
    from botocore.config import Config

    return Config(
        retries={"mode": "adaptive", "total_max_attempts": max_attempts},
        user_agent_extra="rotator",
        max_pool_connections=pool,
    )


def _where(url: str) -> str:
    """``url`` without its query, fragment or credentials: what a message may name."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _while_connecting(exc: BaseException) -> bool:
    """Whether a passed deadline cut the connection's setup (urllib3's connect timeout is in its context)."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, u3.ConnectTimeoutError) and not isinstance(seen, httpio.DeadlineExceeded):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class _Raw(io.BytesIO):
    """The answer's body, read within the cap, as botocore reads a urllib3 response (``stream()``, ``read()``)."""

    def stream(self, amt: int | None = 65536, decode_content: bool | None = None) -> Iterator[bytes]:
        while True:
            data = self.read(amt)
            if not data:
                return
            yield data

    def release_conn(self) -> None:
        """Nothing to release: the connection went back to its pool when the body was read."""


class BoundSend:
    """The ``before-send`` handler :func:`bound` registers: one bounded request per HTTP attempt."""

    def __init__(self, client: Any, *, timeout: float, max_body: int) -> None:
        self.timeout = timeout
        self.max_body = max_body
        # the settings botocore resolved for the client's own HTTP session (botocore.httpsession.URLLib3Session)
        session = getattr(getattr(client, "_endpoint", None), "http_session", None)
        verify = getattr(session, "_verify", True)
        self._verify: bool | str = get_cert_path(verify) if verify is True else verify
        self._proxies = getattr(session, "_proxy_config", None)
        self._session = session
        self._cert_file: str | None = getattr(session, "_cert_file", None)
        self._key_file: str | None = getattr(session, "_key_file", None)
        self._socket_options: list[Any] | None = getattr(session, "_socket_options", None)
        self._maxsize = int(getattr(client.meta.config, "max_pool_connections", None) or 10)
        self._pools: dict[tuple[str, str], urllib3.PoolManager] = {}
        self._lock = threading.Lock()

    # -- connection pools -------------------------------------------------------------------------------------

    def _proxy(self, url: str) -> tuple[str | None, dict[str, str], Any, bool]:
        """The proxy botocore would use for ``url``: its URL, headers, TLS context and HTTPS forwarding."""
        config = self._proxies
        proxy = config.proxy_url_for(url) if config is not None else None
        if config is None or not proxy:
            return None, {}, None, False
        headers = dict(config.proxy_headers_for(proxy))
        settings = getattr(config, "settings", None) or {}
        setup = getattr(self._session, "_setup_proxy_ssl_context", None)
        context = setup(proxy) if setup is not None else None
        return proxy, headers, context, bool(settings.get("proxy_use_forwarding_for_https"))

    def _pool(self, url: str) -> urllib3.PoolManager:
        parts = urlsplit(url)
        key = (parts.scheme, parts.netloc.lower())
        with self._lock:
            manager = self._pools.get(key)
            if manager is None:
                manager = self._new_pool(url)
                self._pools[key] = manager
            return manager

    def _new_pool(self, url: str) -> urllib3.PoolManager:
        # httpio's TLS settings for this verify value; the proxy is botocore's choice, not the environment's again
        base = httpio.pool(url, timeout=self.timeout, maxsize=self._maxsize, verify=self._verify)
        options = {k: v for k, v in base.connection_pool_kw.items() if not k.startswith("_proxy")}
        if self._cert_file:
            options["cert_file"] = self._cert_file
            options["key_file"] = self._key_file
        if self._socket_options is not None:
            options["socket_options"] = list(self._socket_options)
        proxy, headers, context, forwarding = self._proxy(url)
        manager: urllib3.PoolManager
        if proxy:
            manager = urllib3.ProxyManager(
                proxy,
                proxy_headers=headers,
                proxy_ssl_context=context,
                use_forwarding_for_https=forwarding,
                **options,
            )
        else:
            manager = urllib3.PoolManager(**options)
        httpio.watch(manager)
        return manager

    def close(self) -> None:
        """Close the connection pools. Idempotent."""
        with self._lock:
            pools, self._pools = list(self._pools.values()), {}
        for manager in pools:
            manager.clear()

    # -- the send ---------------------------------------------------------------------------------------------

    def __call__(self, request: Any, **_: Any) -> Any:
        """The answer to botocore's signed ``request`` (an ``AWSPreparedRequest``), or ``None`` to let botocore
        send it itself: a chunked upload or a body given as an iterator (no Secrets Manager or SNS call has one)."""
        headers = {str(k): v.decode("latin-1") if isinstance(v, bytes) else str(v) for k, v in request.headers.items()}
        if any(k.lower() == "transfer-encoding" for k in headers):
            return None
        body = request.body
        if hasattr(body, "read"):
            body = body.read()  # botocore rewinds it before a retry (AWSRequest.reset_stream)
        if isinstance(body, str):
            body = body.encode("utf-8")
        elif isinstance(body, bytearray | memoryview):
            body = bytes(body)
        elif body is not None and not isinstance(body, bytes):
            return None
        url: str = request.url
        where = _where(url)
        try:
            r = httpio.fetch(
                self._pool(url),
                request.method,
                url,
                headers=headers,
                body=body,
                timeout=self.timeout,
                max_body=self.max_body,
            )
        except httpio.BodyTooLarge as exc:
            raise ResponseTooLargeError(endpoint_url=where, limit=exc.limit) from None
        except httpio.DeadlineExceeded as exc:
            if _while_connecting(exc):
                raise bex.ConnectTimeoutError(endpoint_url=where) from None
            raise bex.ReadTimeoutError(endpoint_url=where) from None
        except u3.ProxyError as exc:
            proxy = self._proxy(url)[0]
            raise bex.ProxyConnectionError(proxy_url=_where(proxy or ""), error=type(exc).__name__) from None
        except u3.SSLError as exc:
            raise bex.SSLError(endpoint_url=where, error=type(exc).__name__) from None
        except u3.NewConnectionError as exc:  # refused, unreachable, or a name that does not resolve
            raise bex.EndpointConnectionError(endpoint_url=where, error=type(exc).__name__) from None
        except u3.ConnectTimeoutError:
            raise bex.ConnectTimeoutError(endpoint_url=where) from None
        except u3.ReadTimeoutError:
            raise bex.ReadTimeoutError(endpoint_url=where) from None
        except u3.ProtocolError as exc:
            raise bex.ConnectionClosedError(endpoint_url=where, request=request, error=type(exc).__name__) from None
        except (u3.HTTPError, OSError) as exc:
            raise bex.HTTPClientError(error=type(exc).__name__) from None
        return AWSResponse(url, r.status_code, r.headers, _Raw(r.content))
