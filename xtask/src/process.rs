//! Child processes: commands run to completion (and stopped when a signal arrives), and servers
//! started as sessions of their own so that a stop reaches every process they spawn.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use crate::say;

/// The signal that asked this program to stop (SIGINT, SIGTERM or SIGHUP), or 0.
static INTERRUPT: OnceLock<Arc<AtomicUsize>> = OnceLock::new();

/// From here on, SIGINT, SIGTERM and SIGHUP are recorded instead of killing the program, so it
/// can stop the servers first; `interrupted` reports them.
pub fn catch_signals() -> Result<()> {
    let flag = INTERRUPT.get_or_init(|| Arc::new(AtomicUsize::new(0)));
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        signal_hook::flag::register_usize(signal as i32, Arc::clone(flag), signal as usize)
            .with_context(|| format!("catching {signal}"))?;
    }
    Ok(())
}

/// Set once the servers are being stopped: from then on a signal no longer cuts commands short,
/// or the stop itself would be left half done.
static STOPPING: AtomicBool = AtomicBool::new(false);

/// Lets the commands of the stop run to completion whatever signal arrived.
pub fn stopping() {
    STOPPING.store(true, Ordering::SeqCst);
}

/// A signal that should cut the current step short: one received before the stop began.
fn cut_short() -> Option<Signal> {
    interrupted().filter(|_| !STOPPING.load(Ordering::SeqCst))
}

/// The signal received since `catch_signals`, if any.
pub fn interrupted() -> Option<Signal> {
    let raw = INTERRUPT.get()?.load(Ordering::SeqCst);
    Signal::try_from(raw as i32).ok().filter(|_| raw != 0)
}

/// Fails once a signal has arrived, so long start-ups give up between steps.
pub fn check_interrupt() -> Result<()> {
    match cut_short() {
        Some(signal) => bail!("stopped by {signal}"),
        None => Ok(()),
    }
}

/// Waits for CHILD, polling so that a signal to this program stops it (the signal is passed on)
/// instead of leaving it running.
pub fn wait_interruptibly(child: &mut Child) -> Result<ExitStatus> {
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if let Some(signal) = cut_short() {
            let pid = Pid::from_raw(child.id() as i32);
            // A child leading its own process group gets the signal with everything it started.
            if nix::unistd::getpgid(Some(pid)) == Ok(pid) {
                let _ = killpg(pid, signal);
            } else {
                let _ = kill(pid, signal);
            }
            // A command that ignores the signal gets SIGKILL: the servers must still be stopped.
            if !wait_until(Duration::from_secs(30), || {
                matches!(child.try_wait(), Ok(Some(_)))
            }) {
                let _ = child.kill();
            }
            let status = child.wait()?;
            bail!("stopped by {signal} (the command ended with {status})");
        }
        sleep(Duration::from_millis(50));
    }
}

/// Runs CMD to completion with its output where CMD sends it; fails unless it succeeds.
pub fn run(cmd: &mut Command) -> Result<()> {
    let what = describe(cmd);
    let status = wait_interruptibly(&mut cmd.spawn().with_context(|| format!("running {what}"))?)?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

/// True when CMD runs and succeeds; its output is discarded.
pub fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd.spawn()
        .ok()
        .and_then(|mut child| wait_interruptibly(&mut child).ok())
        .is_some_and(|status| status.success())
}

/// CMD's standard output when it succeeds; otherwise an error that ends with what it printed on
/// standard error.
pub fn output(cmd: &mut Command) -> Result<String> {
    let what = describe(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        bail!("{what} failed ({}): {}", out.status, stderr.trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Announces WHAT, then runs it as `logged` does.
pub fn step(log: &Path, what: &str, cmd: &mut Command) -> Result<()> {
    say!("  {what}");
    logged(log, what, cmd)
}

/// Runs CMD (doing WHAT) with its output appended to LOG; on failure shows the end of the log.
pub fn logged(log: &Path, what: &str, cmd: &mut Command) -> Result<()> {
    use std::io::Write;
    let mut file = append(log)?;
    writeln!(file, "\n== {what}")?;
    cmd.stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file);
    if let Err(err) = run(cmd) {
        say!("{what} failed; last lines of {}:", log.display());
        show_tail(log, 40);
        return Err(err);
    }
    Ok(())
}

/// Opens PATH for appending, creating it.
pub fn append(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

/// Prints the last N lines of the file at PATH to standard error.
pub fn show_tail(path: &Path, n: usize) {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    for line in &lines[lines.len().saturating_sub(n)..] {
        eprintln!("{line}");
    }
}

/// The command line of CMD, for messages.
pub fn describe(cmd: &Command) -> String {
    let mut words = vec![cmd.get_program().to_string_lossy().into_owned()];
    words.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    words.join(" ")
}

/// True when URL answers a GET with a success status within 2 s.
pub fn http_ok(url: &str) -> bool {
    succeeds(Command::new("curl").args(["-sf", "-o", "/dev/null", "--max-time", "2", url]))
}

/// True when something accepts TCP connections on ADDR.
pub fn port_in_use(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
}

/// True when the command NAME (a name on PATH, or a path) can be run.
pub fn command_exists(name: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if name.contains('/') {
        return executable(Path::new(name));
    }
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| executable(&dir.join(name))))
}

/// One `/proc/PID/stat` line's state and session id. The command name sits in parentheses and
/// may itself hold spaces and parentheses, so the fields are counted from the last `)`.
fn stat_fields(stat: &str) -> Option<(char, i32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let session = fields.nth(2)?.parse().ok()?;
    Some((state, session))
}

/// Process PID's state and session id, if it exists.
fn stat(pid: i32) -> Option<(char, i32)> {
    stat_fields(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// True while process PID runs. A zombie, which a stopped server is until its parent reaps it,
/// does not count.
pub fn alive(pid: i32) -> bool {
    stat(pid).is_some_and(|(state, _)| state != 'Z')
}

/// Live (non-zombie) processes of session SID.
pub fn session_pids(sid: i32) -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| stat(pid).is_some_and(|(state, session)| session == sid && state != 'Z'))
        .collect()
}

/// A server running as a session of its own: its leader's PID is the session id.
#[derive(Debug)]
pub struct Session {
    name: String,
    sid: i32,
    child: Option<Child>,
}

impl Session {
    /// Runs CMD as NAME in a new session with its output in LOG, and writes the session id to
    /// PIDFILE (so a later run can name what an interrupted one left behind).
    pub fn spawn(name: &str, pidfile: &Path, log: &Path, cmd: &Command) -> Result<Session> {
        let _ = fs::remove_file(pidfile);
        // setsid(1) only forks when its caller leads a process group, which a fresh child does
        // not: the child's PID is the new session's id.
        let mut setsid = Command::new("setsid");
        setsid.arg(cmd.get_program()).args(cmd.get_args());
        for (key, value) in cmd.get_envs() {
            match value {
                Some(value) => setsid.env(key, value),
                None => setsid.env_remove(key),
            };
        }
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        setsid
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        let child = setsid
            .spawn()
            .with_context(|| format!("starting {name} with setsid"))?;
        let sid = child.id() as i32;
        fs::write(pidfile, format!("{sid}\n"))?;
        Ok(Session {
            name: name.to_owned(),
            sid,
            child: Some(child),
        })
    }

    /// The server's name, for messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The session id, which is also its leader's PID.
    pub fn sid(&self) -> i32 {
        self.sid
    }

    /// True while any process of the session runs.
    pub fn running(&self) -> bool {
        !session_pids(self.sid).is_empty()
    }

    /// True while the session's leader runs.
    pub fn leader_alive(&self) -> bool {
        alive(self.sid)
    }

    /// Sends SIGNAL to the session's leader alone.
    pub fn signal_leader(&self, signal: Signal) {
        let _ = kill(Pid::from_raw(self.sid), signal);
    }

    /// Polls READY every 250 ms until it holds. Fails, showing the end of LOG, when a signal
    /// arrives, when the session exits first, or after TIMEOUT.
    pub fn await_ready(
        &self,
        log: &Path,
        timeout: Duration,
        mut ready: impl FnMut() -> bool,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while !ready() {
            check_interrupt()?;
            let problem = if !self.running() {
                format!("{} exited during start-up", self.name)
            } else if Instant::now() >= deadline {
                format!("{} was not ready within {} s", self.name, timeout.as_secs())
            } else {
                sleep(Duration::from_millis(250));
                continue;
            };
            say!("{problem}; last lines of {}:", log.display());
            show_tail(log, 30);
            bail!(problem);
        }
        Ok(())
    }

    /// SIGTERM to the whole session, without waiting for it to end.
    pub fn terminate(&self) {
        let _ = killpg(Pid::from_raw(self.sid), Signal::SIGTERM);
    }

    /// SIGTERM to the whole session, SIGKILL to what is left after GRACE.
    pub fn stop(mut self, grace: Duration) {
        let group = Pid::from_raw(self.sid);
        self.terminate();
        if !wait_until(grace, || !self.running()) {
            say!(
                "{} ignored SIGTERM for {} s; killing it",
                self.name,
                grace.as_secs()
            );
            let _ = killpg(group, Signal::SIGKILL);
            // Members that moved to another process group are still in the session.
            for pid in session_pids(self.sid) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            wait_until(Duration::from_secs(5), || !self.running());
        }
        // Reap it if it is our child, so no zombie outlives the stop.
        if let Some(child) = self.child.as_mut() {
            let _ = child.try_wait();
        }
    }
}

/// Polls DONE every 100 ms until it holds (true) or TIMEOUT passes (false).
pub fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        sleep(Duration::from_millis(100));
    }
}

/// Reads the PID a pidfile holds.
pub fn read_pid(pidfile: &Path) -> Option<i32> {
    fs::read_to_string(pidfile).ok()?.trim().parse().ok()
}

/// A command running PROGRAM with ARGS.
pub fn command<S: AsRef<OsStr>>(program: S, args: &[&str]) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(args);
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_count_from_the_last_parenthesis() {
        let line = "4242 (odd) name)) S 1 4242 4240 0 -1 4194560 100";
        assert_eq!(stat_fields(line), Some(('S', 4240)));
        assert_eq!(stat_fields("7 (zombie) Z 1 7 7 0"), Some(('Z', 7)));
        assert_eq!(stat_fields("garbage"), None);
    }

    #[test]
    fn this_process_is_alive_and_in_its_session() {
        let me = std::process::id() as i32;
        assert!(alive(me));
        let sid = nix::unistd::getsid(None).unwrap().as_raw();
        assert!(session_pids(sid).contains(&me));
    }

    #[test]
    fn waiting_for_a_server_that_exits_fails_at_once() {
        let dir = std::env::temp_dir().join(format!("xtask-ready-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let cmd = command("sh", &["-c", "echo cannot bind; exit 1"]);
        let session = Session::spawn("quitter", &dir.join("pid"), &dir.join("log"), &cmd).unwrap();
        let started = Instant::now();
        let err = session
            .await_ready(&dir.join("log"), Duration::from_secs(60), || false)
            .unwrap_err();
        assert!(
            err.to_string().contains("quitter exited during start-up"),
            "{err}"
        );
        assert!(started.elapsed() < Duration::from_secs(30));
        let up = Session::spawn(
            "sleeper",
            &dir.join("pid2"),
            &dir.join("log2"),
            &command("sleep", &["60"]),
        )
        .unwrap();
        up.await_ready(&dir.join("log2"), Duration::from_secs(5), || true)
            .unwrap();
        up.stop(Duration::from_secs(5));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_spawned_session_is_stopped_with_its_children() {
        let dir = std::env::temp_dir().join(format!("xtask-session-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let cmd = command("sh", &["-c", "sleep 60 & sleep 60"]);
        let session = Session::spawn("sleeper", &dir.join("pid"), &dir.join("log"), &cmd).unwrap();
        let sid = session.sid();
        assert_eq!(read_pid(&dir.join("pid")), Some(sid));
        assert!(wait_until(Duration::from_secs(5), || session_pids(sid)
            .len()
            >= 2));
        session.stop(Duration::from_secs(5));
        assert!(session_pids(sid).is_empty());
        fs::remove_dir_all(&dir).unwrap();
    }
}
