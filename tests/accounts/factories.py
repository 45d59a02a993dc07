from __future__ import annotations

import factory

from accounts.models import User
from billing.signup import user_signup


class UserFactory(factory.django.DjangoModelFactory):
    """A user with an account and its first free grant, made the way signup makes them."""

    class Meta:
        model = User

    email = factory.Sequence(lambda n: f"user{n}@example.com")
    password = "correct-horse-battery"

    @classmethod
    def _create(cls, model_class, *args, **kwargs):  # type: ignore[no-untyped-def]
        return user_signup(email=kwargs["email"], password=kwargs["password"], now=kwargs.get("now"))
