"""Default data shared by the seeding migration and `manage.py seed`."""

OPERATIONS = [
    ("generation", 1, "Generate images from a prompt"),
    ("edit", 1, "Edit an image"),
    ("variation", 1, "Make variations of an image"),
]
