# twinflow: the two set-up commands of the README.
#   make demo   install what is missing, build, run the example twin workflow
#   make test   install what is missing, build, run the whole test suite
# System packages are installed by hpc/setup-deps.sh (only the missing ones; needs root).

CARGO ?= cargo
RUNS_DIR ?= runs

.PHONY: deps deps-test demo test bench bench-sim bench-ingest schema fmt lint

# The multi-node test cluster (tests/e2e/slurm_multinode.rs finds it in this directory).
SLURM_NODES = SLURM_LOCAL_DIR=/tmp/twinflow-slurm-nodes SLURM_LOCAL_NODES=4 SLURM_LOCAL_CPUS=2 \
	SLURM_LOCAL_CTLD_PORT=6827 SLURM_LOCAL_SLURMD_PORT=6828 SLURM_LOCAL_LINK_ETC=0

deps:
	bash hpc/setup-deps.sh --python

# What the tests need besides: slurmdbd + MariaDB for plain `sacct` on the test cluster, the
# mosquitto broker (+ clients) for the stream ingest, Chromium to load run reports in, and
# the RO-Crate tools from PyPI (rocrate, roc-validator) in target/provenance-venv that check
# `twinflow export`.
deps-test:
	bash hpc/setup-deps.sh --python --slurmdbd --mqtt --browser
	bash hpc/setup-provenance.sh

# The flood twin at CI size: the what-if ensemble (examples/flood-mini.yaml: terrain, 4 flood
# members on 2 MPI ranks each, merged, summarized into a CF NetCDF and a PNG exceedance
# map), then the cycling twin kept in step with its gauges (examples/flood-twin-mini.yaml).
demo: deps
	$(CARGO) build --release -p twinflow-cli
	$(CARGO) build --release -p twinflow-kernels --features mpi
	./target/release/twinflow validate examples/flood-mini.yaml
	./target/release/twinflow plan examples/flood-mini.yaml
	TWINFLOW_KERNEL_BIN=$(CURDIR)/target/release/twin-kernel \
		./target/release/twinflow run examples/flood-mini.yaml --runs-dir $(RUNS_DIR)
	./target/release/twinflow status latest --runs-dir $(RUNS_DIR)
	@# The example publishes its headline results under results/ (a copy; the run keeps its own).
	@echo "summary (NetCDF): $(CURDIR)/results/flood-mini/summary.nc"
	@echo "exceedance map (PNG): $(CURDIR)/results/flood-mini/exceedance.png"
	@test -f results/flood-mini/summary.nc && test -f results/flood-mini/exceedance.png
	@# Then the twin kept in step with its gauges: the physical twin (nature run + a sensor
	@# delivering a gauge file every 2 s into examples/obs/flood) in the background, and the
	@# cycling twin (examples/flood-twin-mini.yaml) assimilating each file as it arrives.
	TWINFLOW_KERNEL_BIN=$(CURDIR)/target/release/twin-kernel; export TWINFLOW_KERNEL_BIN; \
	mkdir -p $(RUNS_DIR); \
	./target/release/twinflow run examples/flood-nature-mini.yaml --runs-dir $(RUNS_DIR) > $(RUNS_DIR)/flood-nature.log 2>&1 & nature=$$!; \
	./target/release/twinflow run examples/flood-twin-mini.yaml --runs-dir $(RUNS_DIR); status=$$?; \
	wait $$nature || status=1; exit $$status
	@dir=$$(./target/release/twinflow status latest --json --runs-dir $(RUNS_DIR) | python3 -c \
		'import json, sys; print(next(t["dir"] for t in json.load(sys.stdin)["tasks"] if t["task"] == "3600/twin/scores"))'); \
	echo "each cycle's warnings and map: $(CURDIR)/results/flood-twin-mini/POINT/"; \
	echo "scores of the twin against the nature run, every cycle: $$dir/scores.csv"; \
	python3 -c 'import csv, sys; rows = list(csv.reader(open(sys.argv[1]))); \
		[print("".join(f"{c[:10]:>11}" for c in r[:9])) for r in rows]' "$$dir/scores.csv"

# The SLURM tests run against a real one-node cluster (hpc/slurm-local.sh) with slurmdbd and
# a private MariaDB, so finished jobs are read with plain `sacct` as on production clusters
# (start-up ~4 s instead of ~1 s; tests cover the `sacct -c`/scontrol fallbacks too). The
# cluster is started here, checked with hpc/slurm-selftest.sh (~7 s) and stopped afterwards
# whatever the result, unless it was already running: then it is used and left running.
# Next to it, a 4-node cluster (one slurmctld, each slurmd in its own network and UTS
# namespace with hostname node1..node4 on a private bridge; its own directory, ports and
# munged) for the node-level tests (tests/e2e/slurm_multinode.rs), started and stopped the
# same way.
# Everything is built once with MPI enabled so the `twin-kernel` next to `twinflow` can run
# multi-rank steps under mpiexec/srun. The ingest's tests need an MQTT broker: a private
# mosquitto on a free loopback port (hpc/mqtt-local.sh, port in target/mqtt/port), started
# and stopped here the same way (a broker already running is used and left running).
test: deps-test
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy --workspace --all-targets --features twinflow-kernels/mpi -- -D warnings
	$(CARGO) build --workspace --features twinflow-kernels/mpi
	@started=0; \
	if bash hpc/slurm-local.sh status >/dev/null 2>&1; then \
		echo "make test: using the SLURM test cluster that is already running (it stays running)"; \
	else \
		SLURM_LOCAL_DBD=1 bash hpc/slurm-local.sh start || exit 1; \
		started=1; \
	fi; \
	nodes_started=0; \
	if env $(SLURM_NODES) bash hpc/slurm-local.sh status >/dev/null 2>&1; then \
		echo "make test: using the multi-node SLURM test cluster that is already running (it stays running)"; \
	elif env $(SLURM_NODES) bash hpc/slurm-local.sh start; then \
		nodes_started=1; \
	else \
		if [ $$started = 1 ]; then bash hpc/slurm-local.sh stop; fi; \
		exit 1; \
	fi; \
	mqtt_started=0; \
	if bash hpc/mqtt-local.sh status >/dev/null 2>&1; then \
		echo "make test: using the MQTT broker that is already running (it stays running)"; \
	elif bash hpc/mqtt-local.sh start; then \
		mqtt_started=1; \
	else \
		if [ $$nodes_started = 1 ]; then env $(SLURM_NODES) bash hpc/slurm-local.sh stop; fi; \
		if [ $$started = 1 ]; then bash hpc/slurm-local.sh stop; fi; \
		exit 1; \
	fi; \
	status=0; \
	bash hpc/slurm-selftest.sh target/slurm-selftest || status=$$?; \
	if [ $$status = 0 ]; then \
		$(CARGO) test --workspace --no-fail-fast --features twinflow-kernels/mpi || status=$$?; \
	fi; \
	if [ $$mqtt_started = 1 ]; then bash hpc/mqtt-local.sh stop; fi; \
	if [ $$nodes_started = 1 ]; then env $(SLURM_NODES) bash hpc/slurm-local.sh stop; fi; \
	if [ $$started = 1 ]; then bash hpc/slurm-local.sh stop; fi; \
	exit $$status

# Engine, then data assimilation (Lorenz-96 RMSE table, LETKF throughput, flood-twin cycle;
# under a minute). LETKF on 1 and 2 MPI ranks: kernels/twin-kernel/bench/assim-scaling.sh.
bench:
	$(CARGO) bench -p twinflow-engine --bench engine
	$(CARGO) bench -p twinflow-assim --bench assim

# The scheduler core and the pilot packing on 10, 100 and 1,000 simulated 64-core nodes
# (10⁶ tasks at 1,000): CPU, peak RSS, utilisation (docs/runs.md, "Past this machine").
# NODES="10 100" limits the scales.
bench-sim:
	$(CARGO) bench -p twinflow-engine --bench sim -- $(NODES)

# The stream ingest against `mosquitto_sub > /dev/null` on the same stream, through a private
# broker (started here and stopped afterwards unless one was already running).
bench-ingest: deps-test
	@started=0; \
	if ! bash hpc/mqtt-local.sh status >/dev/null 2>&1; then bash hpc/mqtt-local.sh start >/dev/null || exit 1; started=1; fi; \
	status=0; $(CARGO) bench -p twinflow-kernels --bench ingest || status=$$?; \
	if [ $$started = 1 ]; then bash hpc/mqtt-local.sh stop; fi; \
	exit $$status

schema:
	$(CARGO) run -q -p twinflow-cli -- schema > schemas/workflow.schema.json
