# The two commands of the README: `make run` and `make test`. Both install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 8000

.PHONY: install chromium run test lint check-ledger clean

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

install: $(STAMP)

# Headless Chromium for tests/test_web_browser.py, from Debian's packages (Playwright's own
# browser download is never used). Installed only when missing, and only where apt-get can run.
chromium:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver; \
	else echo "Chromium is missing and this is not root: install Debian's chromium and chromium-driver" >&2; fi

# `make run` needs only Python: the browser is installed for the test suite alone.

run: install
	mkdir -p var/celery/queue var/celery/processed var/celery/control
	DJANGO_SETTINGS_MODULE=config.settings.local $(BIN)/python manage.py migrate --noinput
	DJANGO_SETTINGS_MODULE=config.settings.local $(BIN)/python manage.py seed
	@echo ""
	@echo "Web:       http://127.0.0.1:$(PORT)/signup  http://127.0.0.1:$(PORT)/billing"
	@echo "API:       http://127.0.0.1:$(PORT)/api/v1/"
	@echo "API docs:  http://127.0.0.1:$(PORT)/api/docs/"
	@echo "Admin:     http://127.0.0.1:$(PORT)/admin/  (make an operator: $(BIN)/python manage.py createsuperuser)"
	@echo "Health:    http://127.0.0.1:$(PORT)/healthz  http://127.0.0.1:$(PORT)/readyz"
	@echo "Service key for the generation service: $(BIN)/python manage.py create_service_key generation"
	@echo "Payments:  set STRIPE_SECRET_KEY and STRIPE_WEBHOOK_SECRET (and STRIPE_API_BASE for localstripe) to enable buying"
	@echo ""
	PATH="$(CURDIR)/$(BIN):$$PATH" DJANGO_SETTINGS_MODULE=config.settings.local PORT=$(PORT) $(BIN)/honcho start

test: lint chromium
	$(BIN)/pytest -n 2 --dist loadfile

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

check-ledger: install
	$(BIN)/python manage.py check_ledger

clean:
	rm -rf $(VENV) var db.sqlite3

# The free monthly refill benchmark (bench/README.md): N accounts in the dedicated PostgreSQL
# database billing_bench (dropped and recreated), real Celery workers on Redis database 13.
# `make bench-refill N=20000` for a quick run; BENCH_ARGS passes more options to bench/refill.py.
N ?= 1500000
BENCH_ARGS ?=
.PHONY: bench-refill
bench-refill: install
	$(BIN)/python bench/refill.py --accounts $(N) $(BENCH_ARGS)

# The spend-path benchmark (bench/README.md): gunicorn with the production settings on the
# dedicated database billing_bench_spend, driven by wrk; pgbench and bare endpoints as ceilings.
# `make bench SPEND_ARGS="--seconds 5"` for a shorter run.
SPEND_ARGS ?=
.PHONY: bench wrk
bench: install wrk
	$(BIN)/python bench/spend.py $(SPEND_ARGS)

# wrk from Debian's packages, installed only when missing, and only where apt-get can run.
wrk:
	@if command -v wrk >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y wrk; \
	else echo "wrk is missing and this is not root: install Debian's wrk" >&2; exit 1; fi
