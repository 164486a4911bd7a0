"""The custom search attributes modoru sets, so the Web UI and `modoru list`
can filter rollbacks. Every Temporal namespace modoru uses must have them."""

from __future__ import annotations

from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes

SERVICE = SearchAttributeKey.for_keyword("ModoruService")
NAMESPACE = SearchAttributeKey.for_keyword("ModoruNamespace")
DEPLOYMENT = SearchAttributeKey.for_keyword("ModoruDeployment")
SEVERITY = SearchAttributeKey.for_keyword("ModoruSeverity")
PHASE = SearchAttributeKey.for_keyword("ModoruPhase")
SLA = SearchAttributeKey.for_keyword("ModoruSla")  # pending | met | breached

ALL = (SERVICE, NAMESPACE, DEPLOYMENT, SEVERITY, PHASE, SLA)


def for_rollback(namespace: str, deployment: str, severity: str) -> TypedSearchAttributes:
    """A new rollback's attributes: planning, its SLA still pending."""
    return TypedSearchAttributes(
        [
            SearchAttributePair(SERVICE, deployment),
            SearchAttributePair(NAMESPACE, namespace),
            SearchAttributePair(DEPLOYMENT, deployment),
            SearchAttributePair(SEVERITY, severity),
            SearchAttributePair(PHASE, "planning"),
            SearchAttributePair(SLA, "pending"),
        ]
    )


def for_guard(namespace: str, deployment: str) -> TypedSearchAttributes:
    return TypedSearchAttributes(
        [
            SearchAttributePair(SERVICE, deployment),
            SearchAttributePair(NAMESPACE, namespace),
            SearchAttributePair(DEPLOYMENT, deployment),
            SearchAttributePair(PHASE, "watching"),
        ]
    )


def for_change(service: str, severity: str) -> TypedSearchAttributes:
    """A migration rollback's or a recovery's attributes."""
    return TypedSearchAttributes(
        [
            SearchAttributePair(SERVICE, service),
            SearchAttributePair(SEVERITY, severity),
            SearchAttributePair(PHASE, "planning"),
        ]
    )
