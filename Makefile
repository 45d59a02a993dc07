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

# `make run` needs only Python: the browser is installed for the test suite alone. Without
# DATABASE_URL, config/devserver.py starts the embedded PostgreSQL (data and socket in
# var/postgres), migrates, seeds, prints the URLs and runs honcho (Procfile: web, worker, beat);
# Ctrl-C stops them, then PostgreSQL. `exec`: the supervisor is make's own child, so the SIGTERM
# make passes on when it is itself terminated reaches it.
run: install
	exec env PATH="$(CURDIR)/$(BIN):$$PATH" DJANGO_SETTINGS_MODULE=config.settings.local PORT=$(PORT) \
		$(BIN)/python -m config.devserver

test: lint chromium
	$(BIN)/pytest -n 2 --dist loadfile

# Faults injected into real processes under load (tests/faults): gunicorn workers SIGKILLed, a
# private PostgreSQL stopped and restarted, a private Redis stopped, a key revoked while Redis
# cannot be told, a Celery worker SIGKILLed mid refill, expiry and hold-timeout runs; each
# followed by check_ledger and keys sent vs rows written. Figures in tests/artifacts/faults.txt.
.PHONY: test-faults
test-faults: install
	rm -f tests/artifacts/faults.txt
	$(BIN)/pytest -m faults tests/faults -v

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

check-ledger: install
	$(BIN)/python manage.py check_ledger

# The embedded PostgreSQL's data is under var/: never removed under a running server.
clean:
	@if [ -e var/postgres/postmaster.pid ]; then \
		echo "var/postgres/postmaster.pid exists: stop make run first (after a crash: check no postgres runs on var/postgres, then remove that file)" >&2; \
		exit 1; \
	fi
	rm -rf $(VENV) var

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
.PHONY: bench
bench: install debian-wrk
	$(BIN)/python bench/spend.py $(SPEND_ARGS)

# A benchmark's tool from Debian's package of the same name (debian-wrk, debian-valgrind),
# installed only when missing, and only where apt-get can run.
debian-%:
	@if command -v $* >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y $*; \
	else echo "$* is missing and this is not root: install Debian's $*" >&2; exit 1; fi

# Instructions per request in the web worker (bench/README.md), under callgrind: the spend routes
# against their bare ceilings, in the dedicated database billing_bench_instructions. Steadier than
# `make bench` for changes to the web worker's code; INSTR_ARGS passes options to bench/instructions.py.
INSTR_ARGS ?=
.PHONY: bench-instructions
bench-instructions: install debian-valgrind
	$(BIN)/python bench/instructions.py $(INSTR_ARGS)

# PostgreSQL's instructions per statement (bench/README.md), under callgrind: the SQL of the
# spend routes against their bare ceilings, in a private cluster of the machine's PostgreSQL.
# Repeats within about 0.1%, for changes to the money engine's SQL; SQL_ARGS passes options to
# bench/sql_instructions.py.
SQL_ARGS ?=
.PHONY: bench-sql
bench-sql: install debian-valgrind
	$(BIN)/python bench/sql_instructions.py $(SQL_ARGS)

# The operator console on a large ledger (bench/README.md): 100,000 accounts and 1,000,000 ledger
# entries in the dedicated database billing_bench_admin (dropped and recreated); each admin page
# must answer in under a second. ADMIN_ARGS="--accounts 2000 --entries 20000" for a quick run.
ADMIN_ARGS ?=
.PHONY: bench-admin
bench-admin: install
	$(BIN)/python bench/admin.py $(ADMIN_ARGS)
