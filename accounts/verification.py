"""Email verification: a signed link proves that a user receives mail at their address.

The link carries the user's id and email signed with the secret key and a timestamp
(django.core.signing): nothing is stored until it is used, it expires after
EMAIL_VERIFICATION_MAX_AGE_HOURS, and it is void once the email changes. What a verified email
unlocks (the first free credits) is billing's: billing.signup.email_verify.
"""

from __future__ import annotations

from datetime import datetime
from urllib.parse import urlencode

from django.conf import settings
from django.core import signing
from django.core.mail import send_mail
from django.template.loader import render_to_string
from django.urls import reverse

from config.errors import DomainError

from .ids import row_id_of, user_public_id
from .models import User

SALT = "accounts.email-verification"


class VerificationLinkInvalid(DomainError):
    status_code = 400
    code = "verification_link_invalid"
    default_message = "This verification link is not valid."


def email_verification_token(user: User) -> str:
    """Signed, not hidden: it names the user by public id (no row id leaves the database)."""
    return signing.dumps({"user": user_public_id(user.pk), "email": user.email}, salt=SALT)


def email_verification_link(user: User) -> str:
    query = urlencode({"token": email_verification_token(user)})
    return f"{settings.SITE_URL}{reverse('web-verify-email')}?{query}"


def email_verification_user(token: str) -> User:
    """The user a link was made for; VerificationLinkInvalid when it is forged, expired, or its
    email is no longer the user's."""
    try:
        data = signing.loads(token, salt=SALT, max_age=settings.EMAIL_VERIFICATION_MAX_AGE_HOURS * 3600)
    except signing.SignatureExpired:
        raise VerificationLinkInvalid("This verification link has expired; ask for a new one.") from None
    except signing.BadSignature:
        raise VerificationLinkInvalid() from None
    user_id = row_id_of("usr_", str(data.get("user") or ""))
    user = None if user_id is None else User.objects.filter(pk=user_id, email=data.get("email")).first()
    if user is None:
        raise VerificationLinkInvalid()
    return user


def email_verified_mark(*, user: User, now: datetime) -> bool:
    """Record the verification; False when the email was verified already. A compare-and-set,
    so two clicks racing record it once."""
    marked = User.objects.filter(pk=user.pk, email_verified_at__isnull=True).update(email_verified_at=now)
    if marked:
        user.email_verified_at = now
    return bool(marked)


def email_verification_send(*, user_id: int) -> bool:
    """Email the user their link (Django's email framework); False when there is nothing to
    send (the user is gone or verified already)."""
    user = User.objects.filter(pk=user_id, email_verified_at__isnull=True).first()
    if user is None:
        return False
    context = {"link": email_verification_link(user), "hours": settings.EMAIL_VERIFICATION_MAX_AGE_HOURS}
    send_mail(
        subject="Verify your email to get your free credits",
        message=render_to_string("accounts/verify_email.txt", context),
        from_email=None,
        recipient_list=[user.email],
    )
    return True
