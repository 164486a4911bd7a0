"""Connecting to Temporal, the same way for the worker and the CLI."""

from __future__ import annotations

from temporalio.client import Client, TLSConfig
from temporalio.runtime import Runtime
from temporalio.service import RPCError

from workflows import search_attributes as sa

from .codec import codec_from_settings, data_converter_for
from .settings import Settings
from .telemetry import client_interceptors, configure_tracing


class TemporalUnreachable(Exception):
    pass


async def connect(settings: Settings, *, runtime: Runtime | None = None) -> Client:
    """A client for the settings; with codec keys set, payloads are encrypted
    with the same codec the worker uses. A bad key raises CodecSettingsError."""
    converter = data_converter_for(codec_from_settings(settings))
    tls: TLSConfig | bool = settings.temporal_tls or bool(settings.temporal_api_key)
    if settings.temporal_tls_cert and settings.temporal_tls_key:
        tls = TLSConfig(client_cert=settings.temporal_tls_cert.read_bytes(), client_private_key=settings.temporal_tls_key.read_bytes())
    try:
        return await Client.connect(
            settings.temporal_address,
            namespace=settings.temporal_namespace,
            tls=tls,
            api_key=settings.temporal_api_key.get_secret_value() if settings.temporal_api_key else None,
            data_converter=converter,
            interceptors=client_interceptors(configure_tracing(settings)),
            runtime=runtime,
        )
    except RuntimeError as exc:
        raise TemporalUnreachable(f"cannot reach Temporal at {settings.temporal_address}: {str(exc).splitlines()[0]}") from None


async def ensure_search_attributes(client: Client) -> list[str]:
    """Register modoru's search attributes where they are missing; returns the
    names added. Temporal Cloud namespaces need them added through its console."""
    from temporalio.api.enums.v1 import IndexedValueType
    from temporalio.api.operatorservice.v1 import (
        AddSearchAttributesRequest,
        ListSearchAttributesRequest,
    )

    try:
        existing = await client.operator_service.list_search_attributes(ListSearchAttributesRequest(namespace=client.namespace))
    except RPCError:
        return []
    missing = [key.name for key in sa.ALL if key.name not in existing.custom_attributes]
    if missing:
        await client.operator_service.add_search_attributes(AddSearchAttributesRequest(
            namespace=client.namespace,
            search_attributes={name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD for name in missing},
        ))
    return missing
