"""latentserve-client: a Python client and command line for the latentserve HTTP API (encode, decode, reconstruct,
sample), with .npy bodies, splitting of large inputs, typed errors and retries. Needs httpx and numpy only.

    from latentserve_client import Client

    with Client("http://127.0.0.1:8000", model="vae", version=1) as client:
        posterior = client.encode("digit.png")      # .mean, .scale: float32 (1, K)
        digits = client.sample(16, seed=1)          # (16, 28, 28), the same digits for the same seed
"""

from latentserve_client._core import DEFAULT_MAX_ITEMS, NO_RETRY, USER_AGENT, Retry
from latentserve_client._version import __version__
from latentserve_client.client import AsyncClient, Client
from latentserve_client.errors import (
    BY_TYPE,
    BadReply,
    ClientClosedRequest,
    ClientTimeout,
    ConnectionFailed,
    HTTPError,
    Internal,
    InvalidArgument,
    InvalidInput,
    LatentServeError,
    MethodNotAllowed,
    NotConnected,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    RequestTimeout,
    ServiceError,
    Timeout,
    TransportError,
    Unauthorized,
    Unavailable,
    UnknownModel,
    UnsupportedMediaType,
)
from latentserve_client.replies import Posterior, Scores

__all__ = [
    "BY_TYPE",
    "DEFAULT_MAX_ITEMS",
    "NO_RETRY",
    "USER_AGENT",
    "AsyncClient",
    "BadReply",
    "Client",
    "ClientClosedRequest",
    "ClientTimeout",
    "ConnectionFailed",
    "HTTPError",
    "Internal",
    "InvalidArgument",
    "InvalidInput",
    "LatentServeError",
    "MethodNotAllowed",
    "NotConnected",
    "NotFound",
    "Overloaded",
    "PayloadTooLarge",
    "Posterior",
    "RequestTimeout",
    "Retry",
    "Scores",
    "ServiceError",
    "Timeout",
    "TransportError",
    "Unauthorized",
    "Unavailable",
    "UnknownModel",
    "UnsupportedMediaType",
    "__version__",
]
