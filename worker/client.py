"""Connecting to Temporal, the same way for the worker and the CLI."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

from temporalio.client import Client, TLSConfig
from temporalio.envconfig import ClientConfigProfile
from temporalio.runtime import Runtime
from temporalio.service import RPCError

from workflows import search_attributes as sa

from .codec import codec_from_settings, data_converter_for
from .settings import Settings
from .telemetry import client_interceptors, configure_tracing

DEFAULT_ADDRESS = "127.0.0.1:7233"
DEFAULT_NAMESPACE = "default"


class TemporalUnreachable(Exception):
    pass


class TemporalConfigError(TemporalUnreachable):
    """Temporal's client configuration (temporal.toml, TEMPORAL_*) cannot be used."""


def connect_config(settings: Settings, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """`Client.connect` arguments as the Temporal CLI and SDKs resolve them:
    the profile (TEMPORAL_PROFILE, default "default") of temporal.toml
    (TEMPORAL_CONFIG_FILE, default ~/.config/temporalio/temporal.toml), then
    TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_API_KEY, TEMPORAL_TLS* over it;
    then modoru's MODORU_TEMPORAL_* settings where set. Nothing set: 127.0.0.1:7233."""
    try:
        profile = ClientConfigProfile.load(override_env_vars=environ)
    except RuntimeError as exc:  # the bridge's ConfigError: a bad file, an unknown profile
        source = (environ if environ is not None else os.environ).get(
            "TEMPORAL_CONFIG_FILE"
        ) or "temporal.toml"
        raise TemporalConfigError(
            f"Temporal client configuration ({source}): {str(exc).splitlines()[0]}"
        ) from None
    config: dict[str, Any] = dict(profile.to_client_connect_config())
    config.setdefault("target_host", DEFAULT_ADDRESS)
    config.setdefault("namespace", DEFAULT_NAMESPACE)
    if settings.temporal_address:
        config["target_host"] = settings.temporal_address
    if settings.temporal_namespace:
        config["namespace"] = settings.temporal_namespace
    if settings.temporal_api_key:
        config["api_key"] = settings.temporal_api_key.get_secret_value()
        config["tls"] = config.get("tls") or True
    if settings.temporal_tls is not None:
        config["tls"] = (config.get("tls") or True) if settings.temporal_tls else False
    if settings.temporal_tls_cert and settings.temporal_tls_key:
        base = config.get("tls")
        base = base if isinstance(base, TLSConfig) else TLSConfig()
        config["tls"] = dataclasses.replace(
            base,
            client_cert=settings.temporal_tls_cert.read_bytes(),
            client_private_key=settings.temporal_tls_key.read_bytes(),
        )
    return config


async def connect(settings: Settings, *, runtime: Runtime | None = None) -> Client:
    """A client for the settings; with codec keys set, payloads are encrypted
    with the same codec the worker uses. A bad key raises CodecSettingsError."""
    converter = data_converter_for(codec_from_settings(settings))
    config = connect_config(settings)
    try:
        return await Client.connect(
            **config,
            data_converter=converter,
            interceptors=client_interceptors(configure_tracing(settings)),
            runtime=runtime,
        )
    except RuntimeError as exc:
        raise TemporalUnreachable(
            f"cannot reach Temporal at {config['target_host']}: {str(exc).splitlines()[0]}"
        ) from None


async def ensure_search_attributes(client: Client) -> list[str]:
    """Register modoru's search attributes where they are missing; returns the
    names added. Temporal Cloud namespaces need them added through its console."""
    from temporalio.api.enums.v1 import IndexedValueType
    from temporalio.api.operatorservice.v1 import (
        AddSearchAttributesRequest,
        ListSearchAttributesRequest,
    )

    try:
        existing = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=client.namespace)
        )
    except RPCError:
        return []
    missing = [key.name for key in sa.ALL if key.name not in existing.custom_attributes]
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=client.namespace,
                search_attributes={
                    name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD for name in missing
                },
            )
        )
    return missing
