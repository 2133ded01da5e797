"""Everything that does I/O or keeps time: the engine, runner, executor and worker."""
