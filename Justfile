# imgmode tasks. `just` is not in Debian 12: `cargo install just`, or use the cargo xtask
# commands these recipes wrap.

default:
    @just --list

# install the Debian packages imgmode needs (root)
deps:
    cargo xtask deps

# build the default base image into the local store
build-base:
    cargo build -p imgmode
    ./target/debug/imgmode base build

# base image plus a qcow2 disk at target/imgmode-base.qcow2
build-disk:
    cargo xtask build

# a seed image from nothing: base, seed-system (test cluster) VM, imgmode seed create in the
# guest; the seed lands in the local store (imgmode-seed) and target/seed/seed.oci-archive
build-seed:
    cargo xtask build-seed

# unit and integration tests
test:
    cargo test --workspace

# VM scenarios (all, or the ones named)
vmtest *SCENARIOS:
    cargo xtask vmtest {{SCENARIOS}}

# benchmarks: ratios against baselines measured in the same run
bench:
    cargo xtask bench

# everything CI runs
ci:
    cargo xtask deps
    cargo xtask ci
