"""The Nix route to the same builds: nix/pins.json generated from the lock (pins.py) and a `nix build`
whose binaries are handed to the kit with a manifest like `invoke build` writes (build.py). Takes the
lock and a device profile; gives binaries in the kit's build layout."""
