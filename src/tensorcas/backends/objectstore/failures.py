"""What goes wrong talking to an object store, in tensorcas's terms.

obstore raises its own exceptions, after its own retries; :func:`translated` turns them into
the matching :class:`~tensorcas.errors.StoreError` subclass (bucket missing, access refused,
service busy, endpoint unreachable), with obstore's error as ``__cause__``.  :func:`resend`
is the one retry this client leaves to its caller: a put whose connection failed.
"""

from __future__ import annotations

import itertools
import random
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ...errors import (
    AccessDeniedError,
    BucketNotFoundError,
    ObjectStoreError,
    StoreError,
    StoreUnavailableError,
)


def unless_bucket_missing(exc: FileNotFoundError, location: str) -> None:
    """A 404 is an absent object, unless the bucket (Azure: the container) itself is missing."""
    if _bucket_missing(str(exc)):
        raise BucketNotFoundError(
            f"the bucket of {location} does not exist; create it, or check the URL and the "
            "endpoint (AWS_ENDPOINT_URL; on Azure, the account)"
        ) from exc


def _bucket_missing(text: str) -> bool:
    return "NoSuchBucket" in text or "ContainerNotFound" in text


#: An answer from the service saying it is busy or failing.  Status codes as whole words only: a
#: timing such as "in 107.148503ms" in the client's message is no 503.
_SERVICE_ERROR = re.compile(r"SlowDown|\b50[0234]\b")

_CONNECTION_WORDS = (
    "error sending request",
    "connection",
    "timed out",
    "timeout",
    "dns",
    "reset",
    "closed",
    "eof",
)


def connection_failed(exc: BaseException | None) -> bool:
    """Whether obstore's error is a failed connection (rather than an answer from the service)."""
    text = str(exc).lower()
    return (
        exc is not None
        and "server returned" not in text
        and any(word in text for word in _CONNECTION_WORDS)
    )


@contextmanager
def translated(action: str, where: str) -> Iterator[None]:
    """Turn what obstore raises (after its retries) into the matching ``StoreError``."""
    from obstore.exceptions import AlreadyExistsError

    try:
        yield
    except (StoreError, FileNotFoundError, ValueError, AlreadyExistsError):
        raise  # answers the caller handles
    except Exception as exc:
        raise classify(exc, action, where) from exc


def classify(exc: Exception, action: str, where: str) -> StoreError:
    import obstore.exceptions as oe

    text = str(exc)
    first = text.splitlines()[0] if text else type(exc).__name__
    if _bucket_missing(text):
        return BucketNotFoundError(
            f"{action} {where} failed: the bucket does not exist; create it, or check the URL and "
            "the endpoint (AWS_ENDPOINT_URL; on Azure, the account)"
        )
    if isinstance(exc, (oe.PermissionDeniedError, oe.UnauthenticatedError)) or any(
        code in text
        for code in (
            "InvalidAccessKeyId",
            "AuthenticationFailed",
            "AuthorizationFailure",
            "SignatureDoesNotMatch",
            "AccessDenied",
            "403 Forbidden",
            "ExpiredToken",
        )
    ):
        return AccessDeniedError(
            f"{action} {where} was refused: the credentials are wrong or lack permission "
            f"({first[:300]}); check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, "
            "AZURE_STORAGE_ACCOUNT_NAME/AZURE_STORAGE_ACCOUNT_KEY or storage_options"
        )
    if _SERVICE_ERROR.search(text):
        return StoreUnavailableError(
            f"{action} {where} failed: the service kept answering 'busy' or 'error' (throttling?) "
            f"after retries with backoff ({first[:300]}); nothing half-written is visible; try again later"
        )
    if any(word in text.lower() for word in _CONNECTION_WORDS):
        return StoreUnavailableError(
            f"{action} {where} failed: the endpoint could not be reached or dropped the connection "
            f"after retries with backoff ({first[:300]}); check the endpoint and network, then try "
            "again (nothing half-written is visible)"
        )
    return ObjectStoreError(f"{action} {where} failed: {first[:300]}")


def resend(
    put: Callable[[], object],
    where: str,
    *,
    retries: int,
    backoff: tuple[float, float],
    action: str = "writing",
) -> None:
    """Run ``put``, sent again when the connection failed, at most ``retries`` times, waiting
    from ``backoff[0]`` to ``backoff[1]`` seconds (doubling, with jitter).  obstore resends only
    requests that are safe to repeat; a put is, here: a conditional one that landed before its
    answer was lost finds itself there, and the caller recognises its own bytes."""
    delay, longest = backoff
    for attempt in itertools.count():
        try:
            with translated(action, where):
                put()
            return
        except StoreUnavailableError as exc:
            if attempt >= retries or not connection_failed(exc.__cause__):
                raise
        time.sleep(delay * (0.5 + random.random()))
        delay = min(delay * 2, longest)
