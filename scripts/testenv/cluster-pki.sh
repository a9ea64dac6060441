# shellcheck shell=bash
# Credentials of the test cluster: its CA and certificates, the static tokens of its components
# and their kubeconfigs. Sourced by scripts/testenv.sh.

# Writes a CA; the API server's certificate, for every name and address pods and the host use;
# the client certificate it shows the kubelet; and the service-account key pair.
_chatflow_cluster_pki() {
    local pki="$1" node_ip="$2" service_ip
    # The kubernetes Service takes the first address of the service range.
    service_ip="${CHATFLOW_SERVICE_CIDR%.*/*}.1"
    mkdir -p "$pki" || return 1
    # An explicit config instead of the system openssl.cnf: Go and rustls reject a serving
    # certificate without an IP SAN, and rustls rejects a CA without CA:TRUE.
    cat >"$pki/openssl.cnf" <<CNF || return 1
[req]
distinguished_name = dn
prompt = no
[dn]
CN = chatflow-test
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1,IP:$node_ip,IP:$service_ip,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.$CHATFLOW_CLUSTER_DOMAIN
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[client]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
CNF
    # P-256 keys take milliseconds to make, RSA ones up to a second each.
    local -a ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
    openssl req -x509 -config "$pki/openssl.cnf" -extensions ca "${ec[@]}" \
        -keyout "$pki/ca.key" -out "$pki/ca.crt" -days 30 -subj /CN=chatflow-test-ca &&
        _chatflow_cluster_cert "$pki" apiserver server /CN=kube-apiserver &&
        _chatflow_cluster_cert "$pki" apiserver-kubelet-client client \
            /O=system:masters/CN=kube-apiserver-kubelet-client &&
        openssl ecparam -name prime256v1 -genkey -noout -out "$pki/sa.key" &&
        openssl ec -in "$pki/sa.key" -pubout -out "$pki/sa.pub"
}

_chatflow_cluster_cert() {
    local pki="$1" name="$2" extensions="$3" subject="$4"
    openssl req -new -config "$pki/openssl.cnf" \
        -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$pki/$name.key" -out "$pki/$name.csr" -subj "$subject" &&
        openssl x509 -req -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
            -set_serial "0x$(openssl rand -hex 16)" -days 30 \
            -extfile "$pki/openssl.cnf" -extensions "$extensions" -out "$pki/$name.crt"
}

# Adds a static token for USER (in GROUP) and writes a kubeconfig FILE that uses it. The admin's
# also goes into the header the readiness probe sends.
_chatflow_cluster_identity() {
    local rundir="$1" node_ip="$2" file="$3" user="$4" group="${5:-}" token
    token="$(openssl rand -hex 24)" || return 1
    printf '%s,%s,%s%s\n' "$token" "$user" "$user" "${group:+,\"$group\"}" >>"$rundir/pki/tokens.csv"
    if [[ "$user" == admin ]]; then
        printf 'Authorization: Bearer %s\n' "$token" >"$rundir/auth-header"
    fi
    _chatflow_cluster_write_kubeconfig "$rundir/$file" "https://$node_ip:$CHATFLOW_KUBE_PORT" \
        "$rundir/pki/ca.crt" "$token"
}

# Self-contained (CA inline) so it still works when copied; namespace default like a fresh cluster.
_chatflow_cluster_write_kubeconfig() {
    local file="$1" server="$2" ca_file="$3" token="$4" ca
    ca="$(base64 -w0 <"$ca_file")" || return 1
    (
        umask 077
        cat >"$file" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
  - name: chatflow-test
    cluster:
      server: $server
      certificate-authority-data: $ca
users:
  - name: chatflow-test
    user:
      token: $token
contexts:
  - name: chatflow-test
    context:
      cluster: chatflow-test
      user: chatflow-test
      namespace: default
current-context: chatflow-test
KUBECONFIG
    )
}
