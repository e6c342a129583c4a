#!/bin/sh
# Writes an empty source file for each of the package's own targets (Cargo.toml's [lib] and
# [[bin]] paths) under the directory given, so the image's dependency layer
# (deploy/Dockerfile) builds every dependency without the package's sources.
# deploy/validate.sh checks that the stubs and Cargo.lock still resolve.
set -eu
cd "$1"
mkdir -p src/bin/fault-harness src/bin/bench
printf '' > src/lib.rs
echo 'fn main() {}' > src/main.rs
echo 'fn main() {}' > src/bin/fault-harness/main.rs
echo 'fn main() {}' > src/bin/bench/main.rs
