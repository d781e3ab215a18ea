# Two commands set up everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test install install-dev lint messages bench bench-pages bench-peers clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: requirements.txt $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt $(VENV)/.installed
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

.env:
	$(PYTHON) deploy/make_env.py .env

# The last thing before the server's own log: the banner (address, admin user, where its
# password is), printed by ensure_admin, which also creates that admin on a fresh database.
run: install .env
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py collectstatic --noinput --verbosity 0
	$(BIN)/python manage.py ensure_admin --url http://$(HOST):$(PORT)/
	BIND=$(HOST):$(PORT) $(BIN)/gunicorn -c deploy/gunicorn.conf.py bsepar_panel.asgi:application

test: install-dev
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	DJANGO_DEBUG=on $(BIN)/python manage.py makemigrations --check --dry-run

messages: install-dev
	DJANGO_DEBUG=on $(BIN)/python manage.py makemessages -l fa --ignore=.venv --ignore=staticfiles --ignore=tests --ignore=bench
	DJANGO_DEBUG=on $(BIN)/python manage.py compilemessages -l fa --ignore=.venv

bench: install-dev
	$(BIN)/pip install --quiet -r bench/requirements.txt
	$(BIN)/python bench/load.py $(BENCH_ARGS)

bench-pages: install-dev
	$(BIN)/python bench/pages.py $(BENCH_ARGS)

# The LiteLLM proxy in its own venv (bench/.peers/, git-ignored), measured beside the panel.
PEERS_VENV := bench/.peers/venv
$(PEERS_VENV)/.installed: bench/peers-requirements.txt
	$(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/pip install --quiet -r bench/peers-requirements.txt
	touch $@

bench-peers: install-dev $(PEERS_VENV)/.installed
	$(BIN)/python bench/peers.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) staticfiles
