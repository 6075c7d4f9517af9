"""Toolchain images: the OS, compiler, CMake, CUDA where needed, Python and the kit's locked Python
dependencies; never the kit itself, which is mounted at /moebench. Built reproducibly where the kit
builds the OS itself (rootfs recipe), digest-pinned in lock.yaml, run through the Docker Engine API.
Takes lock.yaml's image entries; gives loaded images and runs of the kit's tasks inside them."""
