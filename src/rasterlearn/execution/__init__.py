"""Running blocks of work in order: on threads in this process, or on a Dask cluster."""
