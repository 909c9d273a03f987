import mpi4py

mpi4py.rc.thread_level = "single"  # one event loop per rank; MPI is never called from two threads

from paracel.runtime import main  # noqa: E402

main()
