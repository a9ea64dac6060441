//! Builds the Kubernetes binaries the test cluster runs, once, into the cache.
//!
//! No registry these machines reach ships Kubernetes binaries; Debian bookworm's `kubernetes`
//! source package carries the upstream 1.20.2 tree with everything vendored and builds with
//! Debian's Go 1.19. etcd 3.4 comes from the same archive, and the pause binary, which every pod's
//! sandbox container runs, is compiled from the same tree. Changing any pin rebuilds it all.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::process::step;
use crate::{apt, cache, say};

const SOURCE_VERSION: &str = "1.20.5+really1.20.2-1.1+deb12u1";
const DEBS: [&str; 4] = [
    "golang-1.19-go",
    "golang-1.19-src",
    "golang-github-modern-go-reflect2-dev",
    "etcd-server",
];
const GO_VERSION: &str = "1.19";
const COMMANDS: [&str; 5] = [
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
];
/// Bump when the patches or the build steps change, so cached binaries are rebuilt.
const RECIPE: u32 = 2;

fn kube_dir() -> PathBuf {
    cache::root().join("kube")
}

/// Where the built binaries are.
pub fn bin_dir() -> PathBuf {
    kube_dir().join("bin")
}

// The marker holds what the binaries were built from, so changing a pin rebuilds them.
fn spec() -> String {
    format!(
        "kubernetes={SOURCE_VERSION} {} build={}+pause recipe={RECIPE}",
        DEBS.join(" "),
        COMMANDS.join(" ")
    )
}

/// True when the binaries in the cache were built from the current pins.
pub fn installed() -> bool {
    let bin = bin_dir();
    fs::read_to_string(bin.join(".chatflow-installed")).is_ok_and(|m| m == spec())
        && COMMANDS
            .iter()
            .chain(&["etcd", "pause"])
            .all(|cmd| bin.join(cmd).is_file())
}

/// Builds the binaries unless the cache has them.
pub fn install() -> Result<()> {
    if installed() {
        return Ok(());
    }
    cache::with_lock(
        "kube-install",
        || if installed() { Ok(()) } else { build() },
    )
}

fn build() -> Result<()> {
    let kube = kube_dir();
    let work = kube.join("work");
    let bin = bin_dir();
    let log = cache::log("kube-install")?;
    let start = Instant::now();
    // dpkg-dev for dpkg-source (with patch and xz to apply Debian's patches), make for the
    // Kubernetes build, gcc and the static C library for pause; bare Debian images have none.
    apt::ensure_commands(&[
        "apt-get:apt",
        "dpkg-deb:dpkg",
        "dpkg-source:dpkg-dev",
        "patch:patch",
        "xz:xz-utils",
        "make:make",
    ])?;
    apt::ensure_packages(&["gcc", "libc6-dev"])?;
    say!(
        "building {} {SOURCE_VERSION} and fetching etcd into {} (5-10 min on 2 cores, 1.4 GB of memory; log: {})",
        COMMANDS.join(" "),
        kube.display(),
        log.display()
    );
    fs::write(&log, "")?;
    // No valid marker means an earlier build died half-way or used other pins: start from nothing.
    let _ = fs::remove_dir_all(&work);
    let _ = fs::remove_dir_all(&bin);
    let result = build_in(&work, &bin, &log);
    // The build tree, Go's cache and the downloads take about 4 GB; only the binaries are kept.
    let _ = fs::remove_dir_all(&work);
    if result.is_err() {
        let _ = fs::remove_dir_all(&bin);
    }
    result?;
    say!(
        "Kubernetes binaries, etcd and pause ready in {} ({} s)",
        bin.display(),
        start.elapsed().as_secs()
    );
    Ok(())
}

/// The build's places under its work directory.
struct Tree {
    work: PathBuf,
    /// The private apt state.
    apt: PathBuf,
    /// Downloads: the source package and the .debs.
    dl: PathBuf,
    /// The .debs unpacked: Go, etcd, Debian's reflect2.
    root: PathBuf,
    /// The kubernetes sources.
    src: PathBuf,
    /// Commands the build expects that the machine may lack.
    shim: PathBuf,
}

fn build_in(work: &Path, bin: &Path, log: &Path) -> Result<()> {
    let tree = Tree {
        work: work.to_owned(),
        apt: work.join("apt"),
        dl: work.join("dl"),
        root: work.join("root"),
        src: work.join("src"),
        shim: work.join("shim"),
    };
    download(&tree, log)?;
    let (debs, dsc) = unpack(&tree, log)?;
    make(&tree, log)?;
    save(&tree, bin, log, &debs, &dsc)
}

/// A private apt state under the work directory, with Debian's archive as its sources, and the
/// options that point apt-get at it: nothing is installed system-wide and the machine's own
/// lists and pins stay untouched, while apt.conf.d (proxies, snapshot-mirror date checks) still
/// applies.
fn private_apt(tree: &Tree) -> Result<(Vec<String>, String, String)> {
    let Tree {
        apt,
        dl,
        root,
        shim,
        ..
    } = tree;
    for dir in [
        "etc/sources.list.d",
        "etc/preferences.d",
        "state/lists/partial",
        "cache/archives/partial",
    ] {
        fs::create_dir_all(apt.join(dir))?;
    }
    for dir in [dl, root, shim] {
        fs::create_dir_all(dir)?;
    }
    fs::write(apt.join("state/status"), "")?;

    let (main, security) = apt::mirrors();
    let signed = if Path::new("/usr/share/keyrings/debian-archive-keyring.gpg").exists() {
        "[signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
    } else {
        ""
    };
    fs::write(
        apt.join("etc/sources.list"),
        format!(
            "deb {signed}{main} bookworm main\ndeb-src {signed}{main} bookworm main\n\
             deb {signed}{security} bookworm-security main\ndeb-src {signed}{security} bookworm-security main\n"
        ),
    )?;
    let a = |p: &str| apt.join(p).display().to_string();
    let mut aptopts = vec![
        format!("Dir::Etc::SourceList={}", a("etc/sources.list")),
        format!("Dir::Etc::SourceParts={}", a("etc/sources.list.d")),
        format!("Dir::Etc::Preferences={}", a("etc/preferences")),
        format!("Dir::Etc::PreferencesParts={}", a("etc/preferences.d")),
        format!("Dir::State={}", a("state")),
        format!("Dir::State::status={}", a("state/status")),
        format!("Dir::Cache={}", a("cache")),
        "Acquire::Languages=none".into(),
        "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false".into(),
    ];
    // The sandbox user _apt could not write into a cache under a private home directory.
    if nix::unistd::geteuid().is_root() {
        aptopts.push("APT::Sandbox::User=root".into());
    }
    Ok((aptopts, main, security))
}

/// Downloads the kubernetes source package and the .debs.
fn download(tree: &Tree, log: &Path) -> Result<()> {
    let Tree { work, dl, .. } = tree;
    let (aptopts, main, security) = private_apt(tree)?;
    let apt_get = |dir: &Path, args: &[&str]| {
        let mut cmd = Command::new("apt-get");
        cmd.current_dir(dir);
        for opt in &aptopts {
            cmd.arg("-o").arg(opt);
        }
        cmd.arg("-q").args(args);
        cmd
    };
    step(
        log,
        &format!("apt-get update (Debian bookworm from {main} and {security})"),
        &mut apt_get(work, &["update"]),
    )?;
    step(
        log,
        &format!("downloading the kubernetes {SOURCE_VERSION} source package"),
        &mut apt_get(
            dl,
            &[
                "source",
                "--download-only",
                &format!("kubernetes={SOURCE_VERSION}"),
            ],
        ),
    )?;
    let mut download = vec!["download"];
    download.extend(DEBS);
    step(
        log,
        &format!("downloading {}", DEBS.join(" ")),
        &mut apt_get(dl, &download),
    )?;
    Ok(())
}

/// Unpacks the .debs and the sources, then patches the sources; the .debs and the .dsc used.
fn unpack(tree: &Tree, log: &Path) -> Result<(Vec<PathBuf>, PathBuf)> {
    let Tree { dl, root, src, .. } = tree;
    let mut debs: Vec<PathBuf> = fs::read_dir(dl)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    debs.sort();
    for deb in &debs {
        let name = deb.file_name().unwrap_or_default().to_string_lossy();
        step(
            log,
            &format!("unpacking {name}"),
            Command::new("dpkg-deb").arg("-x").arg(deb).arg(root),
        )?;
    }
    // apt-get source already checked the files against the signed archive index.
    let dsc = dl.join(format!("kubernetes_{SOURCE_VERSION}.dsc"));
    step(
        log,
        "unpacking the kubernetes sources",
        Command::new("dpkg-source")
            .args(["--no-check", "-x"])
            .arg(&dsc)
            .arg(src),
    )?;

    say!("  replacing the vendored reflect2 with 1.0.2");
    swap_reflect2(root, src)?;
    say!("  patching the kubelet to leave oom_score_adj non-negative");
    patch_oom_score_adj(src)?;
    Ok((debs, dsc))
}

/// Builds the kubernetes commands with the Go from the .debs.
fn make(tree: &Tree, log: &Path) -> Result<()> {
    let Tree {
        work,
        root,
        src,
        shim,
        ..
    } = tree;
    // The build only ever calls `rsync -pc FILE DIR` to place binaries; CI images have no rsync.
    fs::write(
        shim.join("rsync"),
        "#!/bin/sh\n[ \"$1\" = -pc ] && shift\nexec cp -p \"$@\"\n",
    )?;
    fs::set_permissions(shim.join("rsync"), fs::Permissions::from_mode(0o755))?;

    // make, not go build: make first generates the OpenAPI definitions the server is built with.
    // GOCACHE and GOENV inside the tree keep the caller's Go setup out and the leftovers in one
    // place to delete; GOPROXY=off because the sources are complete and the network is not.
    let what: Vec<String> = COMMANDS.iter().map(|c| format!("cmd/{c}")).collect();
    let what = what.join(" ");
    let goroot = root.join(format!("usr/lib/go-{GO_VERSION}"));
    let path = format!(
        "{}:{}:{}",
        goroot.join("bin").display(),
        shim.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    step(
        log,
        &format!("make WHAT=\"{what}\" (the long part)"),
        Command::new("make")
            .current_dir(src)
            .env("PATH", path)
            .env("GOROOT", &goroot)
            .env("GOCACHE", work.join("gocache"))
            .env("GOENV", "off")
            .env("GOFLAGS", "")
            .env("GOPROXY", "off")
            .env("CGO_ENABLED", "0")
            .arg(format!("WHAT={what}"))
            .arg("GOLDFLAGS=-s -w"),
    )?;
    Ok(())
}

/// Compiles pause, keeps the binaries in `bin` and checks that each runs.
fn save(tree: &Tree, bin: &Path, log: &Path, debs: &[PathBuf], dsc: &Path) -> Result<()> {
    let Tree { root, src, .. } = tree;
    fs::create_dir_all(bin)?;
    // Static, so the image needs nothing but the binary (FROM scratch).
    step(
        log,
        "compiling pause",
        Command::new("gcc")
            .args([
                "-Os",
                "-Wall",
                "-Werror",
                "-static",
                "-DVERSION=v3.4.1-chatflow",
                "-o",
            ])
            .arg(bin.join("pause"))
            .arg(src.join("build/pause/linux/pause.c")),
    )?;
    for cmd in COMMANDS {
        fs::copy(src.join("_output/bin").join(cmd), bin.join(cmd))
            .with_context(|| format!("saving {cmd}"))?;
    }
    fs::copy(root.join("usr/bin/etcd"), bin.join("etcd")).context("saving etcd")?;
    step(
        log,
        "stripping pause",
        Command::new("strip").arg(bin.join("pause")),
    )?;
    for cmd in COMMANDS.iter().chain(&["etcd"]) {
        step(
            log,
            &format!("{cmd} --version"),
            Command::new(bin.join(cmd)).arg("--version"),
        )?;
    }
    step(log, "pause -v", Command::new(bin.join("pause")).arg("-v"))?;
    // What the binaries were built from, for whoever wonders later.
    let _ = fs::copy(dsc, bin.join(dsc.file_name().unwrap_or_default()));
    let names: Vec<String> = debs
        .iter()
        .filter_map(|d| Some(d.file_name()?.to_string_lossy().into_owned()))
        .collect();
    fs::write(bin.join("debs.txt"), names.join("\n") + "\n")?;
    fs::write(bin.join(".chatflow-installed"), spec())?;
    Ok(())
}

/// The vendored reflect2 1.0.1 reads runtime internals that changed in Go 1.18 and fails at run
/// time; Debian's 1.0.2 is a drop-in fix. Its go.mod would make the go tool treat it as a module.
fn swap_reflect2(root: &Path, src: &Path) -> Result<()> {
    let vendored = src.join("vendor/github.com/modern-go/reflect2");
    let debian = root.join("usr/share/gocode/src/github.com/modern-go/reflect2");
    if !debian.is_dir() || !vendored.is_dir() {
        bail!(
            "reflect2 sources not found (expected {} and {})",
            debian.display(),
            vendored.display()
        );
    }
    fs::remove_dir_all(&vendored)?;
    crate::process::run(Command::new("cp").arg("-rL").arg(&debian).arg(&vendored))?;
    let _ = fs::remove_file(vendored.join("go.mod"));
    let _ = fs::remove_file(vendored.join("go.sum"));
    Ok(())
}

/// Processes on these machines lack CAP_SYS_RESOURCE, so runc cannot give a container a negative
/// oom_score_adj, and the kubelet 1.20 hard-codes -998 for every pod's sandbox and -997 for
/// Guaranteed pods: each pod would fail with "can't get final child's PID from pipe: EOF". Clamp
/// both to 0; the kubelet and kube-proxy themselves run with --oom-score-adj=0.
fn patch_oom_score_adj(src: &Path) -> Result<()> {
    let sandbox = src.join("pkg/kubelet/dockershim/docker_sandbox.go");
    let container = src.join("pkg/kubelet/kuberuntime/kuberuntime_container_linux.go");
    let text = fs::read_to_string(&sandbox)?;
    let patched = text.replace(
        "defaultSandboxOOMAdj int = -998\n",
        "defaultSandboxOOMAdj int = 0 // negative values need CAP_SYS_RESOURCE\n",
    );
    let text2 = fs::read_to_string(&container)?;
    let anchor = "int64(m.machineInfo.MemoryCapacity)))\n";
    let patched2 = text2.replacen(
        anchor,
        &format!("{anchor}\tif oomScoreAdj < 0 {{ // negative values need CAP_SYS_RESOURCE\n\t\toomScoreAdj = 0\n\t}}\n"),
        1,
    );
    if patched == text || patched2 == text2 {
        bail!(
            "the oom_score_adj patch did not apply to {} and {}",
            sandbox.display(),
            container.display()
        );
    }
    fs::write(&sandbox, patched)?;
    fs::write(&container, patched2)?;
    Ok(())
}
