"""What billing announces to the apps built on it (billing imports none of them): sent inside the
transaction of the change, so a receiver's writes commit or roll back with it."""

from django.dispatch import Signal

# Sent with `grant` (a lot just granted by grant_create: a purchase, an adjustment or a
# promotion) and `now` (the business time of the grant).
lot_granted = Signal()
