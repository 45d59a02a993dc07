"""Default data shared by the seeding migration and `manage.py seed`."""

OPERATIONS = [
    ("generation", 1, "Generate images from a prompt"),
    ("edit", 1, "Edit an image"),
    ("variation", 1, "Make variations of an image"),
]

# (slug, name, credits, price_cents, currency): the pack DESIGN.md names, 115 credits for $15.
CREDIT_PACKS = [
    ("credits-115", "115 credits", 115, 1500, "usd"),
]
