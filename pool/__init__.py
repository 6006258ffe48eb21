"""The account pool: accounts from config and auth files, cooldowns, and selection."""

from pool.account import Account, Family, UpstreamKind, family_of_model
from pool.cooldown import Cooldown, CooldownBook, Failure, FailureKind
from pool.loader import AuthFileProblem, auth_index, load_accounts
from pool.pool import (
    AccountPool,
    AccountState,
    AccountStatus,
    AllCooling,
    Exhausted,
    NotServed,
    Picked,
    PickResult,
)

__all__ = [
    "Account",
    "AccountPool",
    "AccountState",
    "AccountStatus",
    "AllCooling",
    "AuthFileProblem",
    "Cooldown",
    "CooldownBook",
    "Exhausted",
    "Failure",
    "FailureKind",
    "Family",
    "NotServed",
    "PickResult",
    "Picked",
    "UpstreamKind",
    "auth_index",
    "family_of_model",
    "load_accounts",
]
