"""The fleet stage: the study on a lab's machines at once over SSH (configs/fleet.yaml). reproduce.py
syncs the kit at this commit to every host, reproduces there and brings the records back; host.py is
one host's connection (Fabric); inspect.py reports each host's state and re-hashes its binaries.
Takes the fleet's hosts; gives every host's records and its state, side by side."""
