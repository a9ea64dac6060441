//! The command lines of the cluster's processes, and the CNI configuration the kubelet reads.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;

use super::{
    CLUSTER_DOMAIN, CNI_BIN_DIR, DNSMASQ, ETCD_PEER_PORT, ETCD_PORT, KUBE_PORT, KUBELET_PORT,
    NODE_NAME, PAUSE_IMAGE, POD_CIDR, SERVICE_CIDR,
};

/// Where the cluster's files are, and the node's address.
#[derive(Debug)]
pub struct Layout {
    /// The run directory: etcd's data, kubeconfigs, the kubelet's root, logs of the run.
    pub run_dir: PathBuf,
    /// The Kubernetes binaries.
    pub bin: PathBuf,
    /// The node's address (the Docker bridge's).
    pub node_ip: Ipv4Addr,
}

impl Layout {
    fn run(&self, name: &str) -> String {
        self.run_dir.join(name).display().to_string()
    }

    fn pki(&self, name: &str) -> String {
        self.run_dir.join("pki").join(name).display().to_string()
    }

    fn kubeconfig(&self, name: &str) -> String {
        format!("--kubeconfig={}", self.run(name))
    }

    /// etcd, without fsync: the data lives for one run.
    pub fn etcd(&self) -> Command {
        let mut cmd = Command::new(self.bin.join("etcd"));
        // etcd 3.4 refuses to start on architectures other than amd64 and ppc64le unless told.
        if std::env::consts::ARCH == "aarch64" {
            cmd.env("ETCD_UNSUPPORTED_ARCH", "arm64");
        }
        let client = format!("http://127.0.0.1:{ETCD_PORT}");
        let peer = format!("http://127.0.0.1:{ETCD_PEER_PORT}");
        cmd.args([
            "--name=chatflow-test".into(),
            format!("--data-dir={}", self.run("etcd")),
            format!("--listen-client-urls={client}"),
            format!("--advertise-client-urls={client}"),
            format!("--listen-peer-urls={peer}"),
            format!("--initial-advertise-peer-urls={peer}"),
            format!("--initial-cluster=chatflow-test={peer}"),
            "--unsafe-no-fsync".into(),
            "--logger=zap".into(),
            "--log-outputs=stderr".into(),
        ]);
        cmd
    }

    /// The API server. Priority and fairness queues requests of competing tenants; tests have one.
    /// The kubelet is reached by IP: its name would go to this machine's resolver, off the machine.
    pub fn apiserver(&self) -> Command {
        let mut cmd = Command::new(self.bin.join("kube-apiserver"));
        let ip = self.node_ip;
        cmd.args([
            format!("--etcd-servers=http://127.0.0.1:{ETCD_PORT}"),
            format!("--bind-address={ip}"),
            format!("--advertise-address={ip}"),
            format!("--secure-port={KUBE_PORT}"),
            "--insecure-port=0".into(),
            format!("--cert-dir={}", self.run("pki")),
            format!("--tls-cert-file={}", self.pki("apiserver.crt")),
            format!("--tls-private-key-file={}", self.pki("apiserver.key")),
            format!("--client-ca-file={}", self.pki("ca.crt")),
            format!("--token-auth-file={}", self.pki("tokens.csv")),
            "--authorization-mode=Node,RBAC".into(),
            "--service-account-issuer=https://kubernetes.default.svc".into(),
            format!("--service-account-key-file={}", self.pki("sa.pub")),
            format!("--service-account-signing-key-file={}", self.pki("sa.key")),
            format!("--service-cluster-ip-range={SERVICE_CIDR}"),
            "--enable-priority-and-fairness=false".into(),
            "--allow-privileged=true".into(),
            "--kubelet-preferred-address-types=InternalIP".into(),
            format!(
                "--kubelet-client-certificate={}",
                self.pki("apiserver-kubelet-client.crt")
            ),
            format!(
                "--kubelet-client-key={}",
                self.pki("apiserver-kubelet-client.key")
            ),
        ]);
        cmd
    }

    /// The controller manager. Like the scheduler, it serves nothing the tests use, so no ports:
    /// nothing to collide with.
    pub fn controller_manager(&self) -> Command {
        let mut cmd = Command::new(self.bin.join("kube-controller-manager"));
        cmd.args([
            self.kubeconfig("kcm.kubeconfig"),
            "--leader-elect=false".into(),
            "--port=0".into(),
            "--secure-port=0".into(),
            format!("--service-account-private-key-file={}", self.pki("sa.key")),
            format!("--root-ca-file={}", self.pki("ca.crt")),
            "--use-service-account-credentials=true".into(),
            "--cluster-name=chatflow-test".into(),
        ]);
        cmd
    }

    /// The scheduler.
    pub fn scheduler(&self) -> Command {
        let mut cmd = Command::new(self.bin.join("kube-scheduler"));
        cmd.args([
            self.kubeconfig("scheduler.kubeconfig"),
            "--leader-elect=false".into(),
            "--port=0".into(),
            "--secure-port=0".into(),
        ]);
        cmd
    }

    /// Cluster DNS: only names under cluster.local, from a hosts directory dns-sync keeps in step
    /// with the Services (dnsmasq re-reads it by itself). No upstream: other names get no answer
    /// rather than a lookup off the machine. Its own user, as dnsmasq-base creates none.
    pub fn dnsmasq(&self) -> Command {
        let mut cmd = Command::new(DNSMASQ);
        cmd.args([
            "--keep-in-foreground".into(),
            "--conf-file=/dev/null".into(),
            format!("--pid-file={}", self.run("dns/dnsmasq.pid")),
            format!("--listen-address={}", self.node_ip),
            "--bind-interfaces".into(),
            "--port=53".into(),
            "--no-resolv".into(),
            "--no-hosts".into(),
            "--no-poll".into(),
            "--domain-needed".into(),
            "--bogus-priv".into(),
            format!("--local=/{CLUSTER_DOMAIN}/"),
            format!("--hostsdir={}", self.run("dns/hosts.d")),
            "--log-facility=-".into(),
            "--user=root".into(),
        ]);
        cmd
    }

    /// This program's watcher that writes the Services into dnsmasq's hosts directory.
    pub fn dns_sync(&self) -> std::io::Result<Command> {
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.args(["watch", "services"])
            .arg(self.run("kubeconfig"))
            .arg(self.run("dns/hosts.d"))
            .arg(CLUSTER_DOMAIN);
        Ok(cmd)
    }

    /// The CNI configuration. The bridge plugin with hairpin mode, or a pod calling its own
    /// Service hangs when kube-proxy picks the pod itself; the firewall plugin, or Docker's
    /// FORWARD policy (DROP) drops pod to pod traffic through a Service.
    pub fn cni_config(&self) -> String {
        serde_json::json!({
            "cniVersion": "0.4.0", "name": "chatflow", "plugins": [
                {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false,
                 "hairpinMode": true,
                 "ipam": {"type": "host-local", "dataDir": self.run("cni/ipam"),
                          "ranges": [[{"subnet": POD_CIDR}]], "routes": [{"dst": "0.0.0.0/0"}]}},
                {"type": "firewall"},
            ]
        })
        .to_string()
    }

    /// The kubelet on dockershim, with Docker's cgroup driver CGROUP_DRIVER.
    pub fn kubelet(&self, cgroup_driver: &str) -> Command {
        let ip = self.node_ip;
        let mut cmd = Command::new(self.bin.join("kubelet"));
        // The kubelet's built-in ECR credential provider looks for AWS credentials at start-up,
        // which would include a call to the instance metadata address.
        cmd.env("AWS_EC2_METADATA_DISABLED", "true");
        // --oom-score-adj=0 and the patched binary: negative scores need CAP_SYS_RESOURCE.
        // --image-gc-high-threshold=100: the images exist only here, and collecting one loses it.
        // --resolv-conf=: pods get the cluster DNS and none of this machine's resolver settings.
        // --node-status-update-frequency=2s: the node turns Ready at the second status, 10 s
        //   after registering by default. Unchanged statuses are still only sent every 5 minutes.
        // Every path under the run directory, so the stop finds everything the kubelet made.
        cmd.args([
            self.kubeconfig("kubelet.kubeconfig"),
            "--container-runtime=docker".into(),
            "--docker-endpoint=unix:///var/run/docker.sock".into(),
            format!(
                "--container-runtime-endpoint=unix://{}",
                self.run("dockershim.sock")
            ),
            format!("--pod-infra-container-image={PAUSE_IMAGE}"),
            format!("--cgroup-driver={cgroup_driver}"),
            "--fail-swap-on=false".into(),
            format!("--root-dir={}", self.run("kubelet")),
            format!(
                "--experimental-dockershim-root-directory={}",
                self.run("dockershim")
            ),
            format!("--volume-plugin-dir={}", self.run("volume-plugins")),
            format!("--cert-dir={}", self.run("kubelet/pki")),
            format!("--hostname-override={NODE_NAME}"),
            format!("--node-ip={ip}"),
            format!("--address={ip}"),
            format!("--port={KUBELET_PORT}"),
            "--read-only-port=0".into(),
            "--healthz-port=0".into(),
            "--anonymous-auth=false".into(),
            format!("--client-ca-file={}", self.pki("ca.crt")),
            "--authorization-mode=Webhook".into(),
            "--oom-score-adj=0".into(),
            "--node-status-update-frequency=2s".into(),
            "--image-gc-high-threshold=100".into(),
            "--image-gc-low-threshold=99".into(),
            "--eviction-hard=memory.available<100Mi,nodefs.available<1%,imagefs.available<1%"
                .into(),
            format!("--cluster-dns={ip}"),
            format!("--cluster-domain={CLUSTER_DOMAIN}"),
            "--resolv-conf=".into(),
            "--network-plugin=cni".into(),
            format!("--cni-bin-dir={CNI_BIN_DIR}"),
            format!("--cni-conf-dir={}", self.run("cni/net.d")),
            format!("--cni-cache-dir={}", self.run("cni/cache")),
        ]);
        cmd
    }

    /// kube-proxy in iptables mode. The conntrack timeouts at 0 leave this machine's settings
    /// alone.
    pub fn proxy(&self) -> Command {
        let mut cmd = Command::new(self.bin.join("kube-proxy"));
        cmd.args([
            self.kubeconfig("proxy.kubeconfig"),
            "--proxy-mode=iptables".into(),
            format!("--hostname-override={NODE_NAME}"),
            format!("--cluster-cidr={POD_CIDR}"),
            "--oom-score-adj=0".into(),
            "--conntrack-max-per-core=0".into(),
            "--conntrack-tcp-timeout-established=0".into(),
            "--conntrack-tcp-timeout-close-wait=0".into(),
            format!("--bind-address={}", self.node_ip),
            "--metrics-bind-address=127.0.0.1:10249".into(),
            "--healthz-bind-address=127.0.0.1:10256".into(),
        ]);
        cmd
    }
}
