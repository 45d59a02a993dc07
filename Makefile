# The two commands of the README: `make run` and `make test`. Both install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 8000

.PHONY: install run test lint check-ledger clean

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

install: $(STAMP)

run: install
	mkdir -p var/celery/queue var/celery/processed var/celery/control
	DJANGO_SETTINGS_MODULE=config.settings.local $(BIN)/python manage.py migrate --noinput
	DJANGO_SETTINGS_MODULE=config.settings.local $(BIN)/python manage.py seed
	@echo ""
	@echo "API:       http://127.0.0.1:$(PORT)/api/v1/"
	@echo "API docs:  http://127.0.0.1:$(PORT)/api/docs/"
	@echo "Admin:     http://127.0.0.1:$(PORT)/admin/  (make an operator: $(BIN)/python manage.py createsuperuser)"
	@echo "Health:    http://127.0.0.1:$(PORT)/healthz  http://127.0.0.1:$(PORT)/readyz"
	@echo "Service key for the generation service: $(BIN)/python manage.py create_service_key generation"
	@echo "Payments:  set STRIPE_SECRET_KEY and STRIPE_WEBHOOK_SECRET (and STRIPE_API_BASE for localstripe) to enable buying"
	@echo ""
	PATH="$(CURDIR)/$(BIN):$$PATH" DJANGO_SETTINGS_MODULE=config.settings.local PORT=$(PORT) $(BIN)/honcho start

test: lint
	$(BIN)/pytest -n 2 --dist loadfile

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

check-ledger: install
	$(BIN)/python manage.py check_ledger

clean:
	rm -rf $(VENV) var db.sqlite3
