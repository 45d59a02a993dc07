"""What accounts announce to the apps built on them (accounts imports none of them): sent inside
the transaction of the change, so a receiver's writes commit or roll back with it."""

from django.dispatch import Signal

# Sent with `account` (just suspended, row locked) and `reason`.
account_suspended = Signal()
