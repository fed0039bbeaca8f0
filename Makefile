# twinflow: the two set-up commands of the README.
#   make demo   install what is missing, build, run the example twin workflow
#   make test   install what is missing, build, run the whole test suite
# System packages are installed by hpc/setup-deps.sh (only the missing ones; needs root).

CARGO ?= cargo
RUNS_DIR ?= runs

.PHONY: deps demo test bench schema fmt lint

deps:
	bash hpc/setup-deps.sh --python

# The flood twin at CI size (examples/flood-mini.yaml): terrain, 4 flood members on 2 MPI
# ranks each, merged, summarized into a CF NetCDF and a PNG exceedance map.
demo: deps
	$(CARGO) build --release -p twinflow-cli
	$(CARGO) build --release -p twinflow-kernels --features mpi
	./target/release/twinflow validate examples/flood-mini.yaml
	./target/release/twinflow plan examples/flood-mini.yaml
	TWINFLOW_KERNEL_BIN=$(CURDIR)/target/release/twin-kernel \
		./target/release/twinflow run examples/flood-mini.yaml --runs-dir $(RUNS_DIR)
	./target/release/twinflow status latest --runs-dir $(RUNS_DIR)
	@run=$$(ls -td $(RUNS_DIR)/*/ | head -n 1); \
	echo "summary (NetCDF): $${run}steps/twin/summary/out/summary.nc"; \
	echo "exceedance map (PNG): $${run}steps/twin/summary/out/exceedance.png"

# The SLURM tests run against a real one-node cluster (hpc/slurm-local.sh), started here
# and stopped afterwards whatever the result. Everything is built once with MPI enabled so
# the `twin-kernel` next to `twinflow` can run multi-rank steps under mpiexec/srun.
test: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy --workspace --all-targets --features twinflow-kernels/mpi -- -D warnings
	$(CARGO) build --workspace --features twinflow-kernels/mpi
	bash hpc/slurm-local.sh start
	status=0; \
	$(CARGO) test --workspace --no-fail-fast --features twinflow-kernels/mpi || status=$$?; \
	bash hpc/slurm-local.sh stop; \
	exit $$status

bench:
	$(CARGO) bench -p twinflow-engine --bench engine

schema:
	$(CARGO) run -q -p twinflow-cli -- schema > schemas/workflow.schema.json
