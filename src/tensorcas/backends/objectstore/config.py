"""Opening an object store from a URL: which schemes, which settings, from where.

A URL (``s3://bucket/prefix``, ``gs://...``, ``az://container/prefix``) becomes an obstore store configured
from the service's standard environment, then from ``storage_options``; the AWS environment
variables obstore does not read by itself (``AWS_ENDPOINT_URL``, ``AWS_DEFAULT_REGION``,
``AWS_PROFILE``) are filled in here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from ...errors import UnsupportedLocationError
from .failures import translated

#: URL schemes this backend opens (obstore's names for S3, Google Cloud Storage and Azure).
SCHEMES = ("s3", "s3a", "gs", "az", "azure", "abfs", "abfss")
#: The Azure Blob Storage ones among them.
AZURE_SCHEMES = ("az", "azure", "abfs", "abfss")


#: Retries of a failed request (5xx, dropped connection, timeout): exponential backoff from
#: 100 ms to 5 s with jitter, given up after 8 retries or 60 s, whichever comes first.
DEFAULT_RETRY: dict[str, Any] = {
    "max_retries": 8,
    "retry_timeout": timedelta(seconds=60),
    "backoff": {
        "init_backoff": timedelta(milliseconds=100),
        "max_backoff": timedelta(seconds=5),
        "base": 2,
    },
}


# Keys of ``storage_options`` that configure the HTTP client rather than the service.
_CLIENT_KEYS = frozenset(
    {
        "allow_http",
        "allow_invalid_certificates",
        "connect_timeout",
        "default_content_type",
        "default_headers",
        "http1_only",
        "http2_only",
        "pool_idle_timeout",
        "pool_max_idle_per_host",
        "proxy_url",
        "proxy_ca_certificate",
        "proxy_excludes",
        "read_timeout",
        "root_certificate",
        "timeout",
        "user_agent",
    }
)


def is_url(location: str) -> bool:
    """Whether ``location`` has a URL scheme (``scheme://...``, or an object store's scheme with
    slashes missing, ``s3:bucket``) rather than being a path."""
    scheme, sep, _ = location.partition("://")
    if sep:
        return scheme.isascii() and scheme.replace("+", "").replace("-", "").isalnum()
    return location.partition(":")[0].lower() in SCHEMES and ":" in location


@dataclass(frozen=True)
class Opened:
    """What :func:`open_url` made of a URL: the obstore store, the location for messages (the URL
    without trailing slashes) and the local cache directory, if ``storage_options`` named one."""

    store: Any
    location: str
    cache_dir: str | None


def open_url(
    url: str, storage_options: Mapping[str, Any] | None, retry: Mapping[str, Any] | None
) -> Opened:
    """The obstore store for ``url`` (see ``ObjectStoreBackend.from_url`` for the settings)."""
    scheme = url.partition("://")[0].lower()
    if scheme not in SCHEMES:
        raise UnsupportedLocationError(
            f"unsupported location {url!r}: tensorcas opens local directories, memory:// and "
            f"object storage ({', '.join(s + '://' for s in SCHEMES)})"
        )
    parts = urlsplit(url)
    if not parts.netloc:
        raise UnsupportedLocationError(
            f"location {url!r} names no bucket; write {scheme}://BUCKET/PREFIX"
        )
    try:
        from obstore.store import from_url
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise UnsupportedLocationError(
            f"opening {url} needs the obstore package: pip install 'tensorcas[s3]'"
        ) from exc
    options = dict(storage_options or {})
    client: dict[str, Any] = {k: options.pop(k) for k in list(options) if k in _CLIENT_KEYS}
    cache_dir = options.pop("cache_dir", None)
    if options.pop("anon", False):
        options["skip_signature"] = True
    kwargs: dict[str, Any] = {}
    if scheme in ("s3", "s3a"):
        _aws_environment(options, client, kwargs)
    elif scheme in AZURE_SCHEMES:
        _azure_options(options, client)
    location = f"{scheme}://{parts.netloc}/{parts.path.strip('/')}".rstrip("/")
    with translated("opening", location):
        store = from_url(  # type: ignore[call-overload]
            url,
            config=options or None,
            client_options=client or None,
            retry_config=dict(retry if retry is not None else DEFAULT_RETRY),
            **kwargs,
        )
    return Opened(store, location, None if cache_dir is None else str(cache_dir))


def put_backoff(retry: Mapping[str, Any] | None) -> tuple[int, tuple[float, float]]:
    """How often, and after how long (first, longest wait in seconds), a put whose connection
    failed is sent again: the same policy as obstore's own retries."""
    retry = DEFAULT_RETRY if retry is None else retry
    backoff = retry.get("backoff", DEFAULT_RETRY["backoff"])
    return int(retry.get("max_retries", DEFAULT_RETRY["max_retries"])), (
        _seconds(backoff.get("init_backoff", timedelta(milliseconds=100))),
        _seconds(backoff.get("max_backoff", timedelta(seconds=5))),
    )

def _aws_environment(
    options: dict[str, Any], client: dict[str, Any], kwargs: dict[str, Any]
) -> None:
    """Fill in what obstore does not take from the AWS environment by itself: the endpoint in
    ``AWS_ENDPOINT_URL`` (plain HTTP allowed when it says ``http://``), ``AWS_DEFAULT_REGION``,
    and a named profile's credentials (``AWS_PROFILE``, through boto3 when it is installed)."""
    env = os.environ
    endpoint = options.get("endpoint") or options.get("endpoint_url")
    if "endpoint_url" in options:
        options["endpoint"] = options.pop("endpoint_url")
    if endpoint is None:
        endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
        if endpoint:
            options["endpoint"] = endpoint
    if endpoint and str(endpoint).startswith("http://"):
        client.setdefault("allow_http", True)
    if "region" not in options and not env.get("AWS_REGION") and env.get("AWS_DEFAULT_REGION"):
        options["region"] = env["AWS_DEFAULT_REGION"]
    profile = options.pop("profile", None) or env.get("AWS_PROFILE")
    explicit = (
        "access_key_id" in options or env.get("AWS_ACCESS_KEY_ID") or options.get("skip_signature")
    )
    if profile and not explicit:
        try:
            import boto3
            from obstore.auth.boto3 import Boto3CredentialProvider
        except ImportError:
            return  # obstore's own chain (instance metadata, web identity...) applies
        session = boto3.Session(profile_name=profile)
        kwargs["credential_provider"] = Boto3CredentialProvider(session)
        if "region" not in options and session.region_name:
            options["region"] = session.region_name


def _azure_options(options: dict[str, Any], client: dict[str, Any]) -> None:
    """obstore reads the Azure environment itself (``AZURE_STORAGE_ACCOUNT_NAME``,
    ``AZURE_STORAGE_ACCOUNT_KEY``, ``AZURE_STORAGE_USE_EMULATOR`` with ``AZURITE_BLOB_STORAGE_URL``
    ``AZURE_STORAGE_ENDPOINT`` ...); here ``endpoint_url`` is taken for ``endpoint`` as for S3, and
    an ``http://`` endpoint (an emulator's) allows plain HTTP."""
    if "endpoint_url" in options:
        options["endpoint"] = options.pop("endpoint_url")
    env = os.environ
    endpoint = (
        options.get("endpoint") or env.get("AZURE_STORAGE_ENDPOINT") or env.get("AZURE_ENDPOINT")
    )
    if endpoint and str(endpoint).startswith("http://"):
        client.setdefault("allow_http", True)


def _seconds(value: Any) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)
