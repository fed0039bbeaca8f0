/* hpc/mpi-hello.c: tiny MPI check program for hpc/slurm-selftest.sh.
 *
 *   mpicc -O2 -o mpi-hello hpc/mpi-hello.c && srun -n 4 ./mpi-hello
 *
 * Every rank prints one line "rank <i> of <n> on <host> sum=<s> OK".  The sum is an
 * MPI_Allreduce of all ranks (expected n*(n-1)/2), so the ranks really talked to each other.
 * A launcher that does not match the MPI library (e.g. `srun --mpi=none` or Open MPI's
 * mpiexec on an MPICH binary) starts n independent singletons that each print
 * "rank 0 of 1" and exit 0: callers must check that ranks 0..n-1 all report "of <n>".
 */
#include <mpi.h>
#include <stdio.h>

int main(int argc, char **argv) {
    int rank = 0, size = 0, len = 0;
    long mine, sum = -1;
    char host[MPI_MAX_PROCESSOR_NAME] = "";

    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    MPI_Get_processor_name(host, &len);
    mine = rank;
    MPI_Allreduce(&mine, &sum, 1, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
    printf("rank %d of %d on %s sum=%ld %s\n", rank, size, host, sum,
           sum == (long)size * (size - 1) / 2 ? "OK" : "BAD");
    fflush(stdout);
    MPI_Finalize();
    return sum == (long)size * (size - 1) / 2 ? 0 : 1;
}
