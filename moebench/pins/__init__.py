"""The pins stage: llama.cpp at a pinned commit, fetched (source.py: git, archive or PyPI sdist, each
proven by its tree hash) and built deterministically with a manifest (build.py). Takes configs/ and a
device profile; gives binaries and their manifest. lockfile.py is the only writer of configs/lock.yaml
(verify/record.py hands it what was verified)."""
