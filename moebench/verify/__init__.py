"""The verify stage, after pins and models: every source, binary and model re-hashed against the lock
and the build manifests (hashes.py, one line per stage or the full table), and what was verified handed
to the lock's one writer, pins/lockfile.py, when the tasks layer asks (record.py). Takes a device
profile, a pin and the models a run uses; gives checks, and lock entries."""
