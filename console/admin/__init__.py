"""The operator console in the Django admin: accounts and keys (accounts.py), the money rows and
their actions (money.py), the overview and the audit trail (overview.py); every action through
the confirmation flow of confirm.py."""

from . import accounts, money, overview

__all__ = ["accounts", "money", "overview"]
