"""The evidence stage: what one lab hands another. attest.py signs an in-toto/SLSA statement of a
build, bundle.py packs a lab's records with the builds they name into a reproducible tarball, badges.py
says what such a bundle supports of each ACM artifact badge, and compare.py sets two labs' evidence side
by side (artifacts, work, numbers). Takes builds and records; gives attestations, bundles, badges and
verdicts."""
