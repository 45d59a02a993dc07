"""The operator console in the Django admin: accounts and keys (accounts.py), the money rows and
their actions (money.py), the overview and the audit trail (overview.py), beat's periodic tasks
(schedules.py). The console's own actions go through the confirmation flow of confirm.py."""

from . import accounts, money, overview, schedules

__all__ = ["accounts", "money", "overview", "schedules"]
