"""Catalog look-ups, so workflows get policy without reading files."""

from __future__ import annotations

from temporalio import activity

from runbook import activity_refs as refs
from runbook.catalog import Catalog, ServiceEntry
from runbook.models import ServiceByName, ServiceLookup

from .errors import permanent


class CatalogActivities:
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    @activity.defn(name=refs.LOOKUP.name)
    async def lookup(self, request: ServiceLookup) -> ServiceEntry:
        entry = self.catalog.find(request.namespace, request.deployment)
        if entry is None:
            known = (
                ", ".join(f"{s.namespace}/{s.deployment}" for s in self.catalog.services) or "none"
            )
            raise permanent(
                f"deployment {request.namespace}/{request.deployment} is not in the service "
                f"catalog (known: {known}); add it to the catalog file",
                "UnknownService",
            )
        return self.catalog.trusted(entry)

    @activity.defn(name=refs.SERVICE.name)
    async def service(self, request: ServiceByName) -> ServiceEntry:
        entry = self.catalog.named(request.name)
        if entry is None:
            known = ", ".join(s.name for s in self.catalog.services) or "none"
            raise permanent(
                f"service {request.name!r} is not in the service catalog (known: {known})",
                "UnknownService",
            )
        return self.catalog.trusted(entry)
