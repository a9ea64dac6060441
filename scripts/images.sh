#!/usr/bin/env bash
# Builds the four images (operator, producer, consumer, loadgen) from the Dockerfile and prints
# each one's name and image ID.
#
#     scripts/images.sh TAG                 # from the Dockerfile's default (public) base images
#     scripts/images.sh --local-base TAG    # from base images made here, for machines that reach
#                                           # Debian's archive and crates.io but no registry
#
# --local-base makes two images once and reuses them while their inputs stay the same:
#   chatflow-local/rust:VERSION   debootstrap'd Debian bookworm with gcc and cmake, plus the Rust
#                                 toolchain of this machine's rustc (the Dockerfile's builder)
#   chatflow-local/runtime:VERSION glibc and libgcc from that same rootfs, nothing else
#                                 (the Dockerfile's distroless runtime)
# and passes this machine's CA bundle to the crate download, as a TLS-intercepting proxy needs.
#
# Settings (environment): DOCKER (client; default Debian's /usr/bin/docker when present, whose
# built-in BuildKit needs no buildx plugin), CHATFLOW_DEBIAN_MIRROR (see xtask/src/main.rs).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

images=(operator producer consumer loadgen)
local_base=0
if [[ "${1:-}" == --local-base ]]; then
    local_base=1
    shift
fi
tag="${1:?usage: scripts/images.sh [--local-base] TAG}"

docker_cmd="${DOCKER:-${CHATFLOW_DOCKER:-}}"
if [[ -z "$docker_cmd" ]]; then
    docker_cmd=docker
    [[ -x /usr/bin/docker ]] && docker_cmd=/usr/bin/docker
fi
export DOCKER_BUILDKIT=1

log() { printf 'images: %s\n' "$*" >&2; }

# Bump when the recipe below changes, so cached base images are made again.
recipe=1
runtime_image="chatflow-local/runtime:bookworm-r${recipe}"
if [[ "$local_base" == 1 ]]; then
    # The builder's toolchain is the one this machine builds with, so host and image builds agree.
    rust_sysroot="$(rustc --print sysroot)"
    rust_version="$(rustc --version | awk '{print $2}')"
    builder_image="chatflow-local/rust:${rust_version}-bookworm-r${recipe}"
fi

# The base images' scratch folder (about 2 GB), removed however the script ends.
work=""
trap '[[ -z "$work" ]] || rm -rf "$work"' EXIT

image_exists() { "$docker_cmd" image inspect "$1" >/dev/null 2>&1; }

make_local_base() {
    if image_exists "$builder_image" && image_exists "$runtime_image"; then
        log "reusing $builder_image and $runtime_image"
        return 0
    fi
    cargo xtask ensure-commands debootstrap:debootstrap
    local mirror started=$SECONDS
    mirror="$(cargo xtask debian-mirrors)"
    mirror="${mirror%% *}"
    work="$(mktemp -d "${TMPDIR:-/tmp}/chatflow-base.XXXXXX")"

    log "debootstrap bookworm from $mirror (gcc, cmake)"
    # objcopy (binutils) strips the binaries; ca-certificates serves crates.io without a proxy.
    debootstrap --variant=minbase --include=gcc,libc6-dev,make,cmake,binutils,ca-certificates \
        bookworm "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 || {
        tail -n 30 "$work/debootstrap.log" >&2
        log "debootstrap failed"
        return 1
    }

    # The runtime holds what a Rust binary linked against glibc loads, taken from the rootfs the
    # builder compiles in, so both agree on the glibc version. /tmp is where loadgen may write.
    local rt="$work/runtime" lib
    mkdir -p "$rt/lib/x86_64-linux-gnu" "$rt/lib64" "$rt/etc/ssl/certs" "$rt/tmp"
    chmod 1777 "$rt/tmp"
    for lib in libc.so.6 libm.so.6 libgcc_s.so.1 libpthread.so.0 libdl.so.2 librt.so.1 \
        ld-linux-x86-64.so.2; do
        cp -L "$work/rootfs/lib/x86_64-linux-gnu/$lib" "$rt/lib/x86_64-linux-gnu/"
    done
    ln -s /lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 "$rt/lib64/ld-linux-x86-64.so.2"
    cp "$work/rootfs/etc/ssl/certs/ca-certificates.crt" "$rt/etc/ssl/certs/"
    printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/tmp:/sbin/nologin\n' \
        >"$rt/etc/passwd"
    printf 'root:x:0:\nnonroot:x:65532:\n' >"$rt/etc/group"
    tar -C "$rt" -c . | "$docker_cmd" import \
        --change 'USER 65532:65532' \
        --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
        - "$runtime_image" >/dev/null

    # The Rust image's layout: toolchain under /usr/local, CARGO_HOME=/usr/local/cargo.
    log "adding the Rust toolchain from $rust_sysroot"
    mkdir -p "$work/rootfs/usr/local/rust" "$work/rootfs/usr/local/cargo/bin"
    # share/ is documentation (800 MB); compiling needs bin, lib and libexec.
    cp -a "$rust_sysroot/bin" "$rust_sysroot/lib" "$rust_sysroot/libexec" \
        "$work/rootfs/usr/local/rust/"
    rm -rf "$work/rootfs/var/cache/apt/archives"/*.deb "$work/rootfs/var/lib/apt/lists"/*
    tar -C "$work/rootfs" -c . | "$docker_cmd" import \
        --change 'ENV CARGO_HOME=/usr/local/cargo' \
        --change 'ENV PATH=/usr/local/rust/bin:/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        - "$builder_image" >/dev/null
    log "made $builder_image and $runtime_image in $((SECONDS - started)) s"
}

build_args=(--build-arg "CHATFLOW_COMMIT=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)")
if [[ "$local_base" == 1 ]]; then
    make_local_base
    build_args+=(--build-arg "BUILDER_IMAGE=$builder_image" --build-arg "RUNTIME_IMAGE=$runtime_image")
    ca=/etc/ssl/certs/ca-certificates.crt
    [[ -s "$ca" ]] && build_args+=(--secret "id=cacert,src=$ca")
fi

for image in "${images[@]}"; do
    started=$SECONDS
    log "docker build --target $image -t chatflow/$image:$tag"
    "$docker_cmd" build --target "$image" -t "chatflow/$image:$tag" "${build_args[@]}" . >&2
    log "chatflow/$image:$tag built in $((SECONDS - started)) s"
done
for image in "${images[@]}"; do
    printf 'chatflow/%s:%s %s\n' "$image" "$tag" \
        "$("$docker_cmd" image inspect --format '{{.Id}}' "chatflow/$image:$tag")"
done
