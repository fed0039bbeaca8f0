# twinflow: the two set-up commands of the README.
#   make demo   install what is missing, build, run the example twin workflow
#   make test   install what is missing, build, run the whole test suite
# System packages are installed by hpc/setup-deps.sh (only the missing ones; needs root).

CARGO ?= cargo
RUNS_DIR ?= runs

.PHONY: deps demo test bench schema fmt lint

deps:
	bash hpc/setup-deps.sh --python

demo: deps
	$(CARGO) build --release -p twinflow-cli
	./target/release/twinflow validate examples/hello.yaml
	./target/release/twinflow plan examples/hello.yaml -p members=4
	./target/release/twinflow run examples/hello.yaml -p members=4 -p mode=full --runs-dir $(RUNS_DIR)
	./target/release/twinflow status latest --runs-dir $(RUNS_DIR)

# The SLURM tests run against a real one-node cluster (hpc/slurm-local.sh), started here
# and stopped afterwards whatever the result. Everything is built once with MPI enabled so
# the `twin-kernel` next to `twinflow` can run multi-rank steps under mpiexec/srun.
test: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy --workspace --all-targets --features twinflow-kernels/mpi -- -D warnings
	bash hpc/slurm-local.sh start
	status=0; \
	$(CARGO) test --workspace --no-fail-fast --features twinflow-kernels/mpi || status=$$?; \
	bash hpc/slurm-local.sh stop; \
	exit $$status

bench:
	$(CARGO) bench -p twinflow-engine --bench engine

schema:
	$(CARGO) run -q -p twinflow-cli -- schema > schemas/workflow.schema.json
