//! Debian packages: installing what a step needs, and the archive this machine's apt uses.

use std::process::{Command, Stdio};

use anyhow::{Result, bail};

use crate::process::{self, command_exists};
use crate::say;

/// Installs PACKAGES with apt-get. CI starts from a bare Debian image as root; elsewhere this only
/// says what is missing.
pub fn install(packages: &[&str]) -> Result<()> {
    if packages.is_empty() {
        return Ok(());
    }
    let list = packages.join(" ");
    if !nix::unistd::geteuid().is_root() || !command_exists("apt-get") {
        bail!("missing tools; on Debian: apt-get install -y {list}");
    }
    say!("installing {list} with apt-get");
    let apt_install = || {
        let mut cmd = Command::new("apt-get");
        cmd.env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(packages)
            .stdout(Stdio::null());
        cmd
    };
    // A fresh machine has no package lists yet; only refresh them when the install needs it.
    if process::succeeds(&mut apt_install()) {
        return Ok(());
    }
    let updated = process::succeeds(Command::new("apt-get").args(["update", "-qq"]));
    if !updated || process::run(&mut apt_install()).is_err() {
        bail!("apt-get install {list} failed");
    }
    Ok(())
}

/// Fails, saying what it is needed for and how to install it, unless COMMAND is installed.
pub fn require(command: &str, why: &str) -> Result<()> {
    if !command_exists(command) {
        bail!(
            "{command} is needed {why} and is not installed (on Debian: apt-get install -y {command})"
        );
    }
    Ok(())
}

/// Installs the packages behind missing commands. Each pair is COMMAND:PACKAGE, where COMMAND
/// may be an absolute path to insist on the package's own binary.
pub fn ensure_commands(pairs: &[&str]) -> Result<()> {
    let mut missing = Vec::new();
    for pair in pairs {
        let (cmd, package) = pair.split_once(':').unwrap_or((pair, pair));
        if !command_exists(cmd) && !missing.contains(&package) {
            missing.push(package);
        }
    }
    install(&missing)
}

/// Installs the named packages that are not installed yet: for what no command reveals, such as
/// the static C library.
pub fn ensure_packages(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| {
            process::output(Command::new("dpkg-query").args(["-W", "-f=${Status}", p]))
                .map_or(true, |status| status != "install ok installed")
        })
        .collect();
    install(&missing)
}

/// The Debian archive URLs (main, security) this machine's apt is set up with: machines here reach
/// Debian only through the configured mirror, which need not be deb.debian.org.
/// CHATFLOW_DEBIAN_MIRROR and CHATFLOW_DEBIAN_SECURITY_MIRROR override them.
pub fn mirrors() -> (String, String) {
    let var = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
    let (mut main, mut security) = (
        var("CHATFLOW_DEBIAN_MIRROR"),
        var("CHATFLOW_DEBIAN_SECURITY_MIRROR"),
    );
    if main.is_none() || security.is_none() {
        // apt's own view of its sources, whatever their format (one-line or deb822).
        let uris = Command::new("apt-get")
            .args(["update", "--print-uris"])
            .stderr(Stdio::null())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let (found_main, found_security) = mirrors_in(&uris);
        main = main.or(found_main);
        security = security.or(found_security);
    }
    (
        main.unwrap_or_else(|| "http://deb.debian.org/debian".into()),
        security.unwrap_or_else(|| "http://deb.debian.org/debian-security".into()),
    )
}

/// The first Debian main and security archives in `apt-get update --print-uris` output.
fn mirrors_in(uris: &str) -> (Option<String>, Option<String>) {
    let (mut main, mut security) = (None, None);
    for line in uris.lines() {
        let Some(url) = line.strip_prefix('\'').and_then(|l| l.split('\'').next()) else {
            continue;
        };
        let Some((base, rest)) = url.split_once("/dists/") else {
            continue;
        };
        let Some(suite) = rest.strip_suffix("/InRelease") else {
            continue;
        };
        if suite.contains('/') {
            continue;
        }
        if suite.ends_with("-security") {
            security.get_or_insert_with(|| base.to_owned());
        } else if is_debian_suite(suite) {
            main.get_or_insert_with(|| base.to_owned());
        }
    }
    (main, security)
}

/// Debian's own suite names: third-party repositories use others.
fn is_debian_suite(suite: &str) -> bool {
    let (release, variant) = suite.split_once('-').unwrap_or((suite, ""));
    match release {
        "bookworm" | "trixie" | "bullseye" | "stable" | "oldstable" => true,
        "sid" | "testing" | "unstable" => variant.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_are_read_from_apts_uris() {
        let uris = "\
'http://mirror.example/debian/dists/bookworm/main/i18n/Translation-en' x 0
'http://mirror.example/debian/dists/bookworm/InRelease' x 0
'http://mirror.example/debian/dists/bookworm-updates/InRelease' x 0
'http://security.example/debian-security/dists/bookworm-security/InRelease' x 0
";
        let (main, security) = mirrors_in(uris);
        assert_eq!(main.as_deref(), Some("http://mirror.example/debian"));
        assert_eq!(
            security.as_deref(),
            Some("http://security.example/debian-security")
        );
        assert_eq!(
            mirrors_in("'http://x/dists/focal/InRelease' x 0"),
            (None, None)
        );
    }
}
