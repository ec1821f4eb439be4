"""How big a reference world is: row counts per table and the fractions that shape the fates."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class WorldSize:
    """How big a world to generate: row counts per table and the fractions that shape the fates."""

    customers: int
    jobs_per_customer: int
    documents: int
    contact_persons: int
    interpreting: int
    invoices: int
    consents: int
    third_party: int
    correspondence: int
    privacy_requests: int
    min_versions: int = 1
    max_versions: int = 3
    archive_fraction: float = 0.4
    """Share of documents that also have an archive file (exactly rounded)."""
    held_fraction: float = 0.1
    """Share of customers under legal hold (exactly rounded)."""
    due_fraction: float = 0.5
    """Share of rows (approximately) that are due."""
    null_fraction: float = 0.1
    """Share of rows with a nullable anchor (open job, consent, request) that have it NULL."""

    def __post_init__(self) -> None:
        if self.customers < 1 or self.jobs_per_customer < 0:
            raise ValueError("a world needs at least one customer and jobs_per_customer >= 0")
        if (
            min(
                self.documents,
                self.contact_persons,
                self.interpreting,
                self.invoices,
                self.consents,
                self.third_party,
                self.correspondence,
                self.privacy_requests,
            )
            < 0
        ):
            raise ValueError("row counts must not be negative")
        if self.documents and not self.jobs_per_customer:
            raise ValueError("documents need translation jobs")
        if not 1 <= self.min_versions <= self.max_versions:
            raise ValueError("need 1 <= min_versions <= max_versions")
        for name in ("archive_fraction", "held_fraction", "due_fraction", "null_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1]")

    @property
    def jobs(self) -> int:
        return self.customers * self.jobs_per_customer

    def rows(self, table: str) -> int:
        """How many rows ``table`` gets."""
        return {
            "customers": self.customers,
            "contact_persons": self.contact_persons,
            "translation_jobs": self.jobs,
            "documents": self.documents,
            "interpreting_assignments": self.interpreting,
            "invoices": self.invoices,
            "marketing_consents": self.consents,
            "third_party_data": self.third_party,
            "correspondence": self.correspondence,
            "privacy_requests": self.privacy_requests,
        }[table]

    @classmethod
    def small(cls) -> WorldSize:
        """For tests: 50 customers, every customer present in every table, ~100 documents."""
        return cls(
            customers=50,
            jobs_per_customer=2,
            documents=100,
            contact_persons=60,
            interpreting=60,
            invoices=100,
            consents=60,
            third_party=60,
            correspondence=150,
            privacy_requests=50,
        )

    @classmethod
    def demo(cls) -> WorldSize:
        """For the demo: a few thousand rows per table, 1,200 documents."""
        return cls(
            customers=400,
            jobs_per_customer=3,
            documents=1_200,
            contact_persons=600,
            interpreting=800,
            invoices=2_000,
            consents=500,
            third_party=600,
            correspondence=5_000,
            privacy_requests=400,
        )

    @classmethod
    def benchmark(
        cls,
        *,
        correspondence: int = 2_000_000,
        documents: int = 20_000,
        versions: int = 2,
        archive_files: int = 5_000,
        due_fraction: float = 0.5,
        customers: int = 20_000,
    ) -> WorldSize:
        """For the benchmark: many correspondence rows, documents with ``versions`` each, archive files."""
        if archive_files > documents:
            raise ValueError("archive_files cannot exceed documents")
        return cls(
            customers=customers,
            jobs_per_customer=max(1, math.ceil(documents / customers)),
            documents=documents,
            contact_persons=customers,
            interpreting=customers,
            invoices=2 * customers,
            consents=customers,
            third_party=customers,
            correspondence=correspondence,
            privacy_requests=customers // 4,
            min_versions=versions,
            max_versions=versions,
            archive_fraction=archive_files / documents if documents else 0.0,
            due_fraction=due_fraction,
        )
