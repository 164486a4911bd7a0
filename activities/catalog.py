"""Catalog look-ups, so workflows get policy without reading files."""

from __future__ import annotations

from temporalio import activity

from runbook.catalog import Catalog, ServiceEntry
from runbook.models import ServiceLookup

from .errors import permanent


class CatalogActivities:
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    @activity.defn(name="catalog.lookup")
    async def lookup(self, request: ServiceLookup) -> ServiceEntry:
        entry = self.catalog.find(request.namespace, request.deployment)
        if entry is None:
            known = ", ".join(f"{s.namespace}/{s.deployment}" for s in self.catalog.services) or "none"
            raise permanent(
                f"deployment {request.namespace}/{request.deployment} is not in the service catalog (known: {known}); add it to the catalog file",
                "UnknownService",
            )
        return entry
