#!/usr/bin/env bash
# Installs what the Kubernetes lab needs: etcd, containerd and runc from Debian, and kube-apiserver,
# kube-controller-manager, kube-scheduler and kubelet v1.20.2 built from Debian's `kubernetes` source package
# (the only Kubernetes server that can be had offline here), plus the pause and workload images.
# Everything built is cached outside the clone, keyed by the package version, and skipped when present; the
# first run takes ~10 minutes (one core). Idempotent; needs root. Prints the cache directory on success.
#
# Environment: TERWAY_K8S_CACHE (default /var/cache/terway-rs/kubernetes) holds <version>/bin and images.
set -euo pipefail

K8S_PKG_VERSION="1.20.5+really1.20.2-1.1+deb12u1"
K8S_TREE="kubernetes-1.20.5+really1.20.2"
CACHE_ROOT="${TERWAY_K8S_CACHE:-/var/cache/terway-rs/kubernetes}"
CACHE="$CACHE_ROOT/$K8S_PKG_VERSION"
SERVERS=(kube-apiserver kube-controller-manager kube-scheduler kubelet)

step=""
trap 'rc=$?; [ $rc -ne 0 ] && echo "terway-rs k8s prerequisites: step \"$step\" failed (exit $rc); fix the cause above and re-run $0 (finished steps are skipped)" >&2' EXIT
progress() {
    step="$1"
    echo "terway-rs k8s prerequisites: $1" >&2
}

if [ "$(id -u)" -ne 0 ]; then
    echo "terway-rs: run as root (the Kubernetes lab runs kubelets and containerd in lab namespaces)" >&2
    exit 1
fi

progress "install etcd, containerd, runc, Go 1.19 and build tools from Debian"
# binutils (strip) and ca-certificates go into the terwayd image the lab builds (crates/terway-lab/src/k8s/image.rs).
pkgs=(etcd-server etcd-client containerd runc golang-1.19-go dpkg-dev busybox-static gcc libc6-dev openssl rsync binutils ca-certificates)
# shellcheck source=apt-lib.sh
. "$(dirname "$0")/apt-lib.sh"
apt_install_missing "${pkgs[@]}"

have_servers() {
    for b in "${SERVERS[@]}" pause; do
        [ -x "$CACHE/bin/$b" ] || return 1
    done
    [ -f "$CACHE/bin/.complete" ]
}

if ! have_servers; then
    work="$CACHE_ROOT/build"
    rm -rf "$work"
    mkdir -p "$work/apt/lists/partial" "$work/apt/cache/archives/partial" "$work/apt/sources"
    # A private apt configuration with deb-src entries for the machine's own archive and suites: the
    # system's sources stay untouched.
    uris=$(grep -h '^URIs:' /etc/apt/sources.list.d/debian.sources 2>/dev/null | awk '{print $2}' | sort -u)
    [ -n "$uris" ] || uris="http://deb.debian.org/debian http://deb.debian.org/debian-security"
    for u in $uris; do
        case "$u" in
        *security*) echo "deb-src $u bookworm-security main" ;;
        *) echo "deb-src $u bookworm main"; echo "deb-src $u bookworm-updates main" ;;
        esac
    done >"$work/apt/sources/src.list"
    apt_private=(-o APT::Sandbox::User=root -o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$work/apt/sources"
        -o "Dir::State::Lists=$work/apt/lists" -o "Dir::Cache=$work/apt/cache")

    progress "fetch Debian's kubernetes $K8S_PKG_VERSION source package (~35 MB)"
    apt-get "${apt_private[@]}" update -qq
    (cd "$work" && apt-get "${apt_private[@]}" source -qq "kubernetes=$K8S_PKG_VERSION" >/dev/null)
    tree="$work/$K8S_TREE"
    [ -d "$tree/vendor" ] || { echo "no vendor/ in $tree" >&2; exit 1; }

    progress "swap the vendored reflect2 1.0.1 for Debian's 1.0.2 (1.0.1 crashes under Go >= 1.18)"
    (cd "$work" && apt-get -o APT::Sandbox::User=root download -qq golang-github-modern-go-reflect2-dev >/dev/null)
    dpkg-deb -x "$work"/golang-github-modern-go-reflect2-dev_*.deb "$work/reflect2"
    r2="$work/reflect2/usr/share/gocode/src/github.com/modern-go/reflect2"
    [ -f "$r2/reflect2.go" ] || { echo "reflect2 sources not found in the Debian package" >&2; exit 1; }
    rm -f "$tree"/vendor/github.com/modern-go/reflect2/*.go "$tree"/vendor/github.com/modern-go/reflect2/*.s
    cp "$r2"/*.go "$tree/vendor/github.com/modern-go/reflect2/"
    cp "$r2"/*.s "$tree/vendor/github.com/modern-go/reflect2/" 2>/dev/null || true

    progress "build ${SERVERS[*]} v1.20.2 (Go 1.19, GOPATH mode; ~8 minutes on one core)"
    mkdir -p "$tree/.go/src/k8s.io"
    ln -sfn ../../.. "$tree/.go/src/k8s.io/kubernetes"
    # 1.20's build scripts paste GOFLAGS into -tags and fail: parallelism is limited with GOMAXPROCS.
    (
        cd "$tree"
        unset GOFLAGS
        export PATH="/usr/lib/go-1.19/bin:$PATH" GOPATH="$tree/.go" GOPROXY=off CGO_ENABLED=0 \
            KUBE_BUILD_PLATFORMS=linux/amd64 GOCACHE="$work/gocache" GOMAXPROCS="${GOMAXPROCS:-2}"
        make WHAT="cmd/kube-apiserver cmd/kubelet cmd/kube-controller-manager cmd/kube-scheduler" >"$work/make.log" 2>&1 ||
            { tail -30 "$work/make.log" >&2; exit 1; }
    )

    progress "build the pause binary (static)"
    gcc -Os -static -o "$work/pause" "$tree/build/pause/linux/pause.c"

    progress "cache the binaries in $CACHE/bin"
    mkdir -p "$CACHE/bin"
    for b in "${SERVERS[@]}"; do
        install -m 0755 "$tree/_output/bin/$b" "$CACHE/bin/$b"
    done
    install -m 0755 "$work/pause" "$CACHE/bin/pause"
    touch "$CACHE/bin/.complete"
    rm -rf "$work"
fi

# docker-archive image tars (what `ctr images import` reads): one layer holding a static root file system.
make_image() { # name tag rootfs-dir entrypoint-json
    local name="$1" tag="$2" root="$3" entry="$4" out="$CACHE/images/${1##*/}.tar"
    local d
    d=$(mktemp -d)
    tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$root" -cf "$d/layer.tar" .
    local diff
    diff=$(sha256sum "$d/layer.tar" | cut -d' ' -f1)
    printf '{"architecture":"amd64","os":"linux","config":{"Entrypoint":%s,"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"history":[{"created_by":"terway-rs k8s-prereqs.sh"}]}' \
        "$entry" "$diff" >"$d/config.json"
    local cfg
    cfg=$(sha256sum "$d/config.json" | cut -d' ' -f1)
    mv "$d/config.json" "$d/$cfg.json"
    printf '[{"Config":"%s.json","RepoTags":["%s:%s"],"Layers":["layer.tar"]}]' "$cfg" "$name" "$tag" >"$d/manifest.json"
    mkdir -p "$CACHE/images"
    tar -C "$d" -cf "$out.tmp" manifest.json "$cfg.json" layer.tar
    mv "$out.tmp" "$out"
    rm -rf "$d"
}

if [ ! -f "$CACHE/images/pause.tar" ]; then
    progress "build the pause image"
    root=$(mktemp -d)
    install -m 0755 "$CACHE/bin/pause" "$root/pause"
    make_image k8s.gcr.io/pause 3.2 "$root" '["/pause"]'
    rm -rf "$root"
fi
bb_version=$(dpkg-query -W -f='${Version}' busybox-static)
workload_rev=2 # bump when the workload image's content changes
stamp="$CACHE/images/workload-$bb_version-r$workload_rev.stamp"
if [ ! -f "$stamp" ]; then
    progress "build the workload image (Debian's busybox-static $bb_version)"
    root=$(mktemp -d)
    mkdir -p "$root/bin" "$root/tmp" "$root/etc"
    install -m 0755 /bin/busybox "$root/bin/busybox"
    for a in sh sleep nc wget ping ip cat echo ls ps hostname httpd; do
        ln -s busybox "$root/bin/$a"
    done
    echo "root:x:0:0:root:/:/bin/sh" >"$root/etc/passwd"
    # PID 1 of a container gets no default signal handling: without the trap a pod takes its whole
    # grace period to stop.
    make_image terway-lab.local/workload 1 "$root" '["/bin/sh","-c","trap \"exit 0\" TERM INT; sleep 2147483647 & wait"]'
    rm -rf "$root"
    rm -f "$CACHE"/images/workload-*.stamp
    touch "$stamp"
fi
step=""
echo "$CACHE"
