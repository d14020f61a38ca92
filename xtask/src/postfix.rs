//! A private Postfix instance for the relay benchmark: its own configuration, queue, data
//! directory and log under one work directory, relaying example.com to one next hop.
//!
//! The instance leaves Postfix's defaults alone where they shape performance (destination
//! concurrency, connection caching, and fsync, which Postfix always does); it only turns off
//! what a loopback benchmark must not touch (DNS, local delivery, chroot).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::process;
use crate::{Context, Failure};

/// How long `postfix stop` gets before the instance's processes are killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the stop wait looks at the master.
const STOP_POLL: Duration = Duration::from_millis(50);

/// The hostname the instance calls itself.
const HOSTNAME: &str = "bench.invalid";

/// The domain the instance relays (the benchmark's recipients are `rcpt@example.com`).
pub const RELAY_DOMAIN: &str = "example.com";

/// The master.cf services besides smtpd, all with chroot off (5th column `n`).
pub const SERVICES: &str = "\
pickup     unix  n       -       n       60      1       pickup
cleanup    unix  n       -       n       -       0       cleanup
qmgr       unix  n       -       n       300     1       qmgr
rewrite    unix  -       -       n       -       -       trivial-rewrite
bounce     unix  -       -       n       -       0       bounce
defer      unix  -       -       n       -       0       bounce
trace      unix  -       -       n       -       0       bounce
verify     unix  -       -       n       -       1       verify
flush      unix  n       -       n       1000?   0       flush
proxymap   unix  -       -       n       -       -       proxymap
proxywrite unix  -       -       n       -       1       proxymap
smtp       unix  -       -       n       -       -       smtp
relay      unix  -       -       n       -       -       smtp
showq      unix  n       -       n       -       -       showq
error      unix  -       -       n       -       -       error
retry      unix  -       -       n       -       -       error
discard    unix  -       -       n       -       -       discard
local      unix  -       n       n       -       -       local
virtual    unix  -       n       n       -       -       virtual
lmtp       unix  -       -       n       -       -       lmtp
anvil      unix  -       -       n       -       1       anvil
scache     unix  -       -       n       -       1       scache
postlog    unix-dgram n  -       n       -       1       postlogd
";

/// Where an instance keeps everything, under one work directory.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    pub root: PathBuf,
    pub config_dir: PathBuf,
    pub queue_dir: PathBuf,
    pub data_dir: PathBuf,
    pub log_file: PathBuf,
}

impl Layout {
    pub fn under(root: &Path) -> Layout {
        Layout {
            root: root.to_path_buf(),
            config_dir: root.join("conf"),
            queue_dir: root.join("queue"),
            data_dir: root.join("data"),
            log_file: root.join("postfix.log"),
        }
    }

    fn master_pid_file(&self) -> PathBuf {
        self.queue_dir.join("pid").join("master.pid")
    }
}

/// The `compatibility_level` that the installed Postfix accepts, from its `mail_version`
/// (3.6 and later take "3.6"; earlier 3.x take levels 0 to 2).
pub fn compatibility_level(mail_version: &str) -> &'static str {
    let mut parts = mail_version
        .trim()
        .split('.')
        .map(|part| part.parse::<u32>());
    match (parts.next(), parts.next()) {
        (Some(Ok(major)), Some(Ok(minor))) if (major, minor) >= (3, 6) => "3.6",
        _ => "2",
    }
}

/// main.cf of the instance: relay `example.com` to `[127.0.0.1]:next_hop_port`.
pub fn main_cf(layout: &Layout, compatibility_level: &str, next_hop_port: u16) -> String {
    format!(
        "\
# Private Postfix instance of `cargo xtask bench relay` (generated).
compatibility_level = {compatibility_level}
queue_directory = {queue}
data_directory = {data}
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = {HOSTNAME}
mydestination =
mynetworks = 127.0.0.0/8
relay_domains = {RELAY_DOMAIN}
transport_maps = inline:{{ {RELAY_DOMAIN}=relay:[127.0.0.1]:{next_hop_port} }}
smtp_dns_support_level = disabled
alias_maps =
alias_database =
biff = no
maillog_file = {log}
maillog_file_prefixes = {root}
",
        queue = layout.queue_dir.display(),
        data = layout.data_dir.display(),
        log = layout.log_file.display(),
        root = layout.root.display(),
    )
}

/// master.cf of the instance: smtpd on 127.0.0.1:`smtpd_port` and the daemons a relay needs.
pub fn master_cf(smtpd_port: u16) -> String {
    format!(
        "# Private Postfix instance of `cargo xtask bench relay` (generated).\n\
         127.0.0.1:{smtpd_port} inet n - n - - smtpd\n{SERVICES}"
    )
}

/// The installed Postfix's version (`postconf -d -h mail_version`).
pub fn installed_version(postconf: &Path) -> Result<String, Failure> {
    let output = Command::new(postconf)
        .args(["-d", "-h", "mail_version"])
        .stdin(Stdio::null())
        .output()
        .context("running postconf")?;
    let version = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if !output.status.success() || version.is_empty() {
        return Err(Failure(format!(
            "postconf -d -h mail_version failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(version)
}

/// A started instance, stopped (and its processes killed if need be) when dropped.
pub struct Instance {
    postfix: PathBuf,
    layout: Layout,
    master: u32,
    stopped: bool,
}

impl Instance {
    /// Writes main.cf and master.cf (their whole text given), starts the instance with
    /// `postfix -c DIR start` and reads its master's pid.
    pub fn start_with(
        postfix: &Path,
        layout: Layout,
        main_cf: &str,
        master_cf: &str,
    ) -> Result<Instance, Failure> {
        let root_text = layout.root.display().to_string();
        if root_text.contains(|c: char| c.is_whitespace() || ",{}=#".contains(c)) {
            return Err(Failure(format!(
                "the work directory {root_text} cannot appear in main.cf (whitespace or one of ,{{}}=#)"
            )));
        }
        for dir in [&layout.config_dir, &layout.queue_dir] {
            fs::create_dir_all(dir).context(format_args!("creating {}", dir.display()))?;
        }
        let main = layout.config_dir.join("main.cf");
        fs::write(&main, main_cf).context(format_args!("writing {}", main.display()))?;
        let master = layout.config_dir.join("master.cf");
        fs::write(&master, master_cf).context(format_args!("writing {}", master.display()))?;

        let output = Command::new(postfix)
            .arg("-c")
            .arg(&layout.config_dir)
            .arg("start")
            .stdin(Stdio::null())
            .output()
            .context("running postfix start")?;
        let started = output.status.success();
        match read_pid(&layout.master_pid_file()) {
            Some(master) if started => Ok(Instance {
                postfix: postfix.to_path_buf(),
                layout,
                master,
                stopped: false,
            }),
            pid => {
                if let Some(master) = pid {
                    // Stop whatever did start before reporting.
                    Instance {
                        postfix: postfix.to_path_buf(),
                        layout: layout.clone(),
                        master,
                        stopped: false,
                    }
                    .stop();
                }
                Err(Failure(format!(
                    "postfix -c {} start failed ({}): {} {}\n{}",
                    layout.config_dir.display(),
                    output.status,
                    String::from_utf8_lossy(&output.stdout).trim(),
                    String::from_utf8_lossy(&output.stderr).trim(),
                    process::log_tail(&layout.log_file),
                )))
            }
        }
    }

    pub fn master_pid(&self) -> u32 {
        self.master
    }

    pub fn log_file(&self) -> &Path {
        &self.layout.log_file
    }

    pub fn check_running(&self) -> Result<(), Failure> {
        if process::is_alive(self.master) {
            Ok(())
        } else {
            Err(Failure(format!(
                "the Postfix master (pid {}) has exited; {}",
                self.master,
                process::log_tail(&self.layout.log_file)
            )))
        }
    }

    /// `postfix -c DIR stop`, then SIGKILL for any process of the instance still there
    /// after [`STOP_TIMEOUT`].
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let members = process::descendants(&process::process_table(), self.master);
        let _ = Command::new(&self.postfix)
            .arg("-c")
            .arg(&self.layout.config_dir)
            .arg("stop")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline && members.iter().any(|&pid| process::is_alive(pid)) {
            thread::sleep(STOP_POLL);
        }
        process::kill_remaining(&members);
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The pid in Postfix's `pid/master.pid` (a right-aligned decimal number).
fn read_pid(path: &Path) -> Option<u32> {
    parse_pid(&fs::read_to_string(path).ok()?)
}

fn parse_pid(text: &str) -> Option<u32> {
    text.trim().parse().ok().filter(|&pid| pid > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> Layout {
        Layout::under(Path::new("/w/postfix"))
    }

    #[test]
    fn compatibility_level_follows_the_version() {
        assert_eq!(compatibility_level("3.7.11"), "3.6");
        assert_eq!(compatibility_level("3.6.0"), "3.6");
        assert_eq!(compatibility_level("4.0.1\n"), "3.6");
        assert_eq!(compatibility_level("3.5.18"), "2");
        assert_eq!(compatibility_level("3"), "2");
        assert_eq!(compatibility_level(""), "2");
    }

    #[test]
    fn main_cf_relays_example_com_to_the_next_hop_and_logs_inside_the_work_dir() {
        let text = main_cf(&layout(), "3.6", 4321);
        for line in [
            "compatibility_level = 3.6",
            "queue_directory = /w/postfix/queue",
            "data_directory = /w/postfix/data",
            "inet_interfaces = 127.0.0.1",
            "mynetworks = 127.0.0.0/8",
            "mydestination =",
            "relay_domains = example.com",
            "transport_maps = inline:{ example.com=relay:[127.0.0.1]:4321 }",
            "smtp_dns_support_level = disabled",
            "maillog_file = /w/postfix/postfix.log",
            "maillog_file_prefixes = /w/postfix",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }

    #[test]
    fn master_cf_runs_smtpd_on_the_port_and_nothing_chrooted() {
        let text = master_cf(2600);
        assert!(text.contains("\n127.0.0.1:2600 inet n - n - - smtpd\n"));
        let services: Vec<Vec<&str>> = text
            .lines()
            .filter(|line| !line.starts_with('#'))
            .map(|line| line.split_whitespace().collect())
            .collect();
        for service in &services {
            assert_eq!(service.len(), 8, "{service:?}");
            assert_eq!(service[4], "n", "chroot on in {service:?}");
        }
        for name in [
            "pickup", "cleanup", "qmgr", "rewrite", "bounce", "defer", "trace", "verify", "flush",
            "proxymap", "smtp", "relay", "showq", "error", "retry", "discard", "local", "virtual",
            "lmtp", "anvil", "scache", "postlog",
        ] {
            assert!(services.iter().any(|s| s[0] == name), "missing {name}");
        }
    }

    #[test]
    fn master_pid_file_is_read() {
        assert_eq!(parse_pid("                            5436\n"), Some(5436));
        assert_eq!(parse_pid(""), None);
        assert_eq!(parse_pid("0"), None);
        assert_eq!(parse_pid("x"), None);
        assert_eq!(
            layout().master_pid_file(),
            Path::new("/w/postfix/queue/pid/master.pid")
        );
    }
}
