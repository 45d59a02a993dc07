"""The application's URLs plus the bare endpoints the spend benchmark compares it with.

The bare endpoints are the ceilings of a Django view on this server: no authentication, no
idempotency, no ledger. The debit runs the minimal debit SQL (one conditional UPDATE and one
INSERT, in one transaction) on the bench's scratch tables, the same statements pgbench runs; the
read selects one account row. They exist only in the bench's URLconf (bench/settings.py).
"""

from __future__ import annotations

from django.db import connection, transaction
from django.http import HttpRequest, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from config.urls import urlpatterns as app_urlpatterns

# The statements of bench/wrk/pgbench-debit.sql, with the same tables and values.
BARE_DEBIT_UPDATE = "UPDATE bench_balance SET available = available - 1 WHERE id = %s AND available >= 1"
BARE_DEBIT_INSERT = "INSERT INTO bench_spend (account_id, credits, created_at) VALUES (%s, 1, now())"
BARE_READ = "SELECT available_credits, held_credits FROM accounts_account WHERE public_id = %s"


@csrf_exempt
def bare_debit(request: HttpRequest, account: int) -> JsonResponse:
    if request.method != "POST":
        return JsonResponse({"error": "POST only"}, status=405)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(BARE_DEBIT_UPDATE, [account])
        if cursor.rowcount != 1:
            return JsonResponse({"error": "insufficient"}, status=402)
        cursor.execute(BARE_DEBIT_INSERT, [account])
    return JsonResponse({"account": account, "credits": 1}, status=201)


def bare_read(request: HttpRequest, account_id: str) -> JsonResponse:
    with connection.cursor() as cursor:
        cursor.execute(BARE_READ, [account_id])
        row = cursor.fetchone()
    if row is None:
        return JsonResponse({"error": "not found"}, status=404)
    return JsonResponse({"account_id": account_id, "available": row[0], "held": row[1]})


urlpatterns = [
    path("bench/bare/debit/<int:account>", bare_debit),
    path("bench/bare/balance/<str:account_id>", bare_read),
    *app_urlpatterns,
]
