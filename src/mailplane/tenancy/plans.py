"""The plan catalogue. Limits live in code; an organization may override them."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class PlanName(StrEnum):
    STARTER = "starter"
    PRO = "pro"
    ENTERPRISE = "enterprise"


@dataclass(frozen=True, slots=True)
class Plan:
    name: PlanName
    mailboxes_included: int | None  # None: unlimited
    relay_servers_allowed: int | None
    api_sending: bool
    monthly_sends_included: int
    # Seed 002: "30-day log retention (standard)"; an account may be given more or less
    # (Organization.log_retention_days_override).
    log_retention_days: int = 30


PLANS: dict[PlanName, Plan] = {
    PlanName.STARTER: Plan(PlanName.STARTER, 30, 1, False, 10_000),
    PlanName.PRO: Plan(PlanName.PRO, 500, 5, True, 10_000),
    PlanName.ENTERPRISE: Plan(PlanName.ENTERPRISE, None, None, True, 10_000),
}
