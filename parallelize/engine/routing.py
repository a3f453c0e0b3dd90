"""Ensembles across providers: send each model's requests to that model's own endpoint.

A recipe's `models:` entries may name a `base_url` and an `api_key_env`. One ChatClient is made
per distinct endpoint and a router picks it by the request's model name, so the executor (and
everything it adds: retries, progress) stays the same one for every call.

A key is only ever sent where it belongs: an entry with its own `base_url` sends no key unless
its `api_key_env` names one, so OPENAI_API_KEY never travels to another provider.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

from ..errors import EndpointError, LLMError, UnreachableError
from ..recipe.vote import ModelEntry
from ..records import ChatRequest, Completion
from .client import ChatClient, Endpoint, check_key
from .executor import Executor


class ModelRouter:
    """Looks like a ChatClient; completes each request on the client of the request's model."""

    def __init__(self, default: ChatClient, routes: Mapping[str, ChatClient]) -> None:
        self.default = default
        self.routes = dict(routes)

    @property
    def endpoint(self) -> Endpoint:
        return self.default.endpoint

    def complete(self, request: ChatRequest, *, timeout: float | None = None) -> Completion:
        """Send one request to its model's endpoint.

        An ensemble member's endpoint that cannot be reached fails that member's calls only
        (a plain, unretried failure): the other members' candidates can still decide the vote.
        """
        client = self.routes.get(request.model, self.default)
        try:
            return client.complete(request, timeout=timeout)
        except UnreachableError as exc:
            if client is self.default:
                raise
            hint = f"check models: {request.model}: base_url in the recipe"
            raise LLMError(exc.message, retryable=False, hint=hint) from None

    def endpoint_for(self, request: ChatRequest) -> Endpoint:
        """The endpoint of the request's model: part of its cache key."""
        return self.routes.get(request.model, self.default).endpoint

    def list_models(self) -> list[str]:
        return self.default.list_models()

    def get_json(self, path: str) -> Any:
        return self.default.get_json(path)


def needs_routing(models: Sequence[ModelEntry]) -> bool:
    """Whether any model lives somewhere other than the default endpoint."""
    return any(m.base_url or m.api_key_env for m in models)


def model_endpoint(entry: ModelEntry, default: Endpoint) -> Endpoint:
    """Where one ensemble entry's requests go, with the key its `api_key_env` names (if any)."""
    key = None
    if entry.api_key_env:
        key = os.environ.get(entry.api_key_env) or None
        check_key(key, entry.api_key_env)
        if key is None:
            raise EndpointError(
                f"models: {entry.name}: api_key_env {entry.api_key_env} is not set",
                hint=f"export {entry.api_key_env}, or remove api_key_env for a server without keys",
            )
    if entry.base_url:
        return Endpoint(entry.base_url.rstrip("/"), key)
    return Endpoint(default.base_url, key or default.api_key, default.api_version)


@contextmanager
def route_models(
    executor: Executor, models: Sequence[ModelEntry], *, timeout: float
) -> Iterator[Executor]:
    """Point the executor at a router while some models live on other endpoints."""
    if not needs_routing(models):
        yield executor
        return
    default = executor.client
    with ExitStack() as stack:
        clients: dict[tuple[str, str | None], ChatClient] = {}
        routes: dict[str, ChatClient] = {}
        for entry in models:
            if not (entry.base_url or entry.api_key_env):
                continue
            endpoint = model_endpoint(entry, default.endpoint)
            key = (endpoint.base_url, entry.api_key_env)
            if key not in clients:
                client = ChatClient(endpoint, timeout=timeout)
                clients[key] = stack.enter_context(client)
            routes[entry.name] = clients[key]
        executor.client = ModelRouter(default, routes)  # type: ignore[assignment]  # duck-typed
        try:
            yield executor
        finally:
            executor.client = default
