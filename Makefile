# Two commands on a fresh Debian machine, as root:
#   make run    the main job: tracekit-run experiments/ffmpeg.yaml on the
#               local inventory (EXPERIMENT=..., RUN_ARGS='-e dispatch.policy=lpt')
#   make test   the whole test suite
#   make demo   the single-node capture demo (no Ansible)
# Both install what they need first (system packages, then .venv).
#
# Seed habits, as thin aliases of the tracekit CLI:
#   make collect RUN_ID=r1 NODE_ID=cloud1 STAGE=cloud   (alias: start-collect; APPEND=1: a second session of r1)
#   make stop-collect RUN_ID=r1
#   make parse RUN_ID=r1 [NODE_ID=.. STAGE=..]           (tracekit parse <logs dir>/r1)
#   make report RUN_ID=r1                                (tracekit report <logs dir>/r1)
#   make load VM_IP=localhost RATE=50 DURATION=60s       (tracekit load on http://$(VM_IP):$(SVC_PORT)$(ENDPOINT);
#                                                         with RUN_ID the results go into its run folder)
# honouring PROC_MATCH, PROC_MATCH_CMDLINE, PROC_PID_DIR, PROC_INTERVAL_MS, LOGS_DIR.

SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
TRACEKIT := $(VENV)/bin/tracekit
APT_PACKAGES := ffmpeg nginx redis-server openssh-server openssh-client
# The tests also open a report in a headless browser, and run tasks and services in podman containers (runc:
# crun, podman's default, refuses hybrid cgroup machines).
TEST_APT_PACKAGES := chromium podman runc
PYTEST_ARGS ?=
# Tests run in parallel, one per CPU (at most 4); TEST_WORKERS=0 runs them one after the other.
TEST_WORKERS ?= auto

.PHONY: run test deps system-deps venv demo collect start-collect stop-collect status-collect parse report load clean

EXPERIMENT ?= experiments/ffmpeg.yaml
RUN_ARGS ?=

run: deps
	$(VENV)/bin/tracekit-run $(EXPERIMENT) $(RUN_ARGS)

test: APT_PACKAGES += $(TEST_APT_PACKAGES)
test: deps
	$(VENV)/bin/python -m pytest -n $(TEST_WORKERS) --maxprocesses 4 --dist worksteal $(PYTEST_ARGS)

deps: system-deps venv

# Debian packages: install only what is missing (apt lists are empty on a
# fresh machine, hence the update).
system-deps:
	@missing=""; \
	for pkg in $(APT_PACKAGES); do dpkg -s $$pkg >/dev/null 2>&1 || missing="$$missing $$pkg"; done; \
	$(PYTHON) -c 'import ensurepip, venv' >/dev/null 2>&1 || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e '.[test]'
	touch $@

demo: deps
	LOGS_DIR="$(LOGS_DIR)" TRACEKIT="$(TRACEKIT)" bash examples/single-node-demo.sh

# Patterns are handed over through the environment with $(value ...): make
# would otherwise expand the '$|' in '^ffmpeg$|^ffprobe$' and silently break it.
export TRACEKIT_PROC_MATCH := $(value PROC_MATCH)
export TRACEKIT_PROC_MATCH_CMDLINE := $(value PROC_MATCH_CMDLINE)
export TRACEKIT_RUN_ID := $(value RUN_ID)
NODE_ID ?= $(shell hostname)
STAGE ?= cloud
PROC_INTERVAL_MS ?= 1000
LOGS_DIR ?=

collect: venv
	$(TRACEKIT) collect start --node-id "$(NODE_ID)" --stage "$(STAGE)" \
	  --interval-ms "$(PROC_INTERVAL_MS)" \
	  $(if $(LOGS_DIR),--logs-dir "$(LOGS_DIR)") \
	  $(if $(PROC_PID_DIR),--pid-dir "$(PROC_PID_DIR)") \
	  $${TRACEKIT_PROC_MATCH:+--match "$$TRACEKIT_PROC_MATCH"} \
	  $${TRACEKIT_PROC_MATCH_CMDLINE:+--match-cmdline "$$TRACEKIT_PROC_MATCH_CMDLINE"} \
	  $(if $(APPEND),--append)

start-collect: collect

stop-collect: venv
	$(TRACEKIT) collect stop $(if $(LOGS_DIR),--logs-dir "$(LOGS_DIR)")

status-collect: venv
	$(TRACEKIT) collect status $(if $(LOGS_DIR),--logs-dir "$(LOGS_DIR)")

# The run folder names its nodes (NODE_ID and STAGE are the seed's, accepted and not needed).
parse: venv
	@test -n "$(RUN_ID)" || { echo "make parse: RUN_ID=... is required, e.g. make parse RUN_ID=test001" >&2; exit 2; }
	$(TRACEKIT) parse "$(or $(LOGS_DIR),$(TRACEKIT_LOGS_DIR),logs)/$(RUN_ID)"

report: venv
	@test -n "$(RUN_ID)" || { echo "make report: RUN_ID=... is required, e.g. make report RUN_ID=test001" >&2; exit 2; }
	$(TRACEKIT) report "$(or $(LOGS_DIR),$(TRACEKIT_LOGS_DIR),logs)/$(RUN_ID)"

# The example service's port and endpoint (examples/fastapi_svc: make run).
VM_IP ?= localhost
SVC_PORT ?= 8080
ENDPOINT ?= /work
RATE ?= 50
DURATION ?= 60s
LOAD_ARGS ?=

load: venv
	$(TRACEKIT) load --url "http://$(VM_IP):$(SVC_PORT)$(ENDPOINT)" --rate "$(RATE)" --duration "$(DURATION)" \
	  $(if $(RUN_ID),--run-id "$(RUN_ID)") $(if $(LOGS_DIR),--logs-dir "$(LOGS_DIR)") $(LOAD_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
