#!/bin/sh
# git's tree id of DIR as moebench.hashing.git_tree_hash computes it: every file, ignored by a .gitignore
# or not, bytes as they are (no line-ending or filter conversion), .git left out, empty directories not
# recorded. nix/package.nix checks the source tree with it; tests/test_nix.py checks it against the kit.
# usage: tree-hash.sh DIR [GIT]
set -eu
dir=$1
git=${2:-git}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cd "$dir"
export GIT_DIR="$scratch/repo" GIT_WORK_TREE=. HOME="$scratch" GIT_CONFIG_NOSYSTEM=1
"$git" init -q
echo '* -text -eol -filter -ident -working-tree-encoding' > "$GIT_DIR/info/attributes"
"$git" -c core.autocrlf=false -c core.fileMode=true -c core.symlinks=true add -A -f .
"$git" write-tree
