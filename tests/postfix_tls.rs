//! Postfix as a TLS peer in both directions: a private Postfix instance delivers into our
//! inbound with STARTTLS, and our outbound delivers into a Postfix smtpd with STARTTLS,
//! verifying its certificate against a test CA. Loopback only; needs root (`postfix start`).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const POSTFIX: &str = "/usr/sbin/postfix";
const POSTCONF: &str = "/usr/sbin/postconf";
const SENDMAIL: &str = "/usr/sbin/sendmail";

/// How long `postfix stop` gets before the instance's processes are killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// master.cf services besides smtpd, all with chroot off (5th column `n`).
const SERVICES: &str = "\
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
anvil      unix  -       -       n       -       1       anvil
scache     unix  -       -       n       -       1       scache
tlsmgr     unix  -       -       n       1000?   1       tlsmgr
postlog    unix-dgram n  -       n       -       1       postlogd
";

/// A private Postfix instance under one directory: own configuration, queue, data
/// directory and log. Stopped, and any process of it left killed, when dropped.
struct Postfix {
    config_dir: PathBuf,
    log: PathBuf,
    master: u32,
}

impl Postfix {
    /// Writes main.cf (the common settings plus `extra`) and master.cf (smtpd on
    /// `smtpd_port` if given), starts the instance and waits for its smtpd.
    fn start(root: &Path, extra: &str, smtpd_port: Option<u16>) -> Postfix {
        assert!(is_root(), "the Postfix tests need root (postfix start)");
        let config_dir = root.join("conf");
        let queue_dir = root.join("queue");
        let data_dir = root.join("data");
        let log = root.join("postfix.log");
        for dir in [&config_dir, &queue_dir, &data_dir] {
            std::fs::create_dir_all(dir).unwrap();
        }
        let status = Command::new("chown")
            .arg("postfix")
            .arg(&data_dir)
            .status()
            .unwrap();
        assert!(status.success());
        let main = format!(
            "compatibility_level = {level}\n\
             queue_directory = {queue}\n\
             data_directory = {data}\n\
             inet_interfaces = 127.0.0.1\n\
             inet_protocols = ipv4\n\
             myhostname = postfix.test\n\
             myorigin = postfix.test\n\
             mydestination =\n\
             mynetworks = 127.0.0.0/8\n\
             smtp_dns_support_level = disabled\n\
             alias_maps =\n\
             alias_database =\n\
             biff = no\n\
             maillog_file = {log}\n\
             maillog_file_prefixes = {root}\n\
             {extra}\n",
            level = compatibility_level(),
            queue = queue_dir.display(),
            data = data_dir.display(),
            log = log.display(),
            root = root.display(),
        );
        std::fs::write(config_dir.join("main.cf"), main).unwrap();
        let smtpd = smtpd_port
            .map(|port| format!("127.0.0.1:{port} inet n - n - - smtpd\n"))
            .unwrap_or_default();
        std::fs::write(config_dir.join("master.cf"), format!("{smtpd}{SERVICES}")).unwrap();
        let out = Command::new(POSTFIX)
            .arg("-c")
            .arg(&config_dir)
            .arg("start")
            .stdin(Stdio::null())
            .output()
            .expect("postfix (Debian package postfix)");
        let pid_file = queue_dir.join("pid").join("master.pid");
        let master = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(0);
        let instance = Postfix {
            config_dir,
            log,
            master,
        };
        assert!(
            out.status.success() && master != 0,
            "postfix start failed: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            instance.log_text()
        );
        if let Some(port) = smtpd_port {
            wait_until("Postfix's smtpd to listen", || {
                std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            });
        }
        instance
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_for_log(&self, needle: &str) -> String {
        let start = Instant::now();
        loop {
            let text = self.log_text();
            if text.contains(needle) {
                return text;
            }
            assert!(
                start.elapsed() < WAIT,
                "timed out waiting for {needle:?} in Postfix's log:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Hands a message to the instance with its own sendmail (`sendmail -C DIR`).
    fn sendmail(&self, from: &str, to: &str, message: &[u8]) {
        use std::io::Write;
        let mut child = Command::new(SENDMAIL)
            .arg("-C")
            .arg(&self.config_dir)
            .arg("-f")
            .arg(from)
            .arg("--")
            .arg(to)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("Postfix's sendmail");
        child.stdin.take().unwrap().write_all(message).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "sendmail failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let members = descendants(self.master);
        let _ = Command::new(POSTFIX)
            .arg("-c")
            .arg(&self.config_dir)
            .arg("stop")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let start = Instant::now();
        while start.elapsed() < STOP_TIMEOUT && members.iter().any(|&pid| alive(pid)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        for pid in members.into_iter().filter(|&pid| alive(pid)) {
            let Ok(pid) = i32::try_from(pid) else {
                continue;
            };
            // SAFETY: kill has no memory preconditions; the pid is one of the instance's.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// "3.6" for Postfix 3.6 and later, else "2".
fn compatibility_level() -> &'static str {
    let out = Command::new(POSTCONF)
        .args(["-d", "-h", "mail_version"])
        .output()
        .expect("postconf");
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    match (parts.next(), parts.next()) {
        (Some(major), Some(minor)) if (major, minor) >= (3, 6) => "3.6",
        _ => "2",
    }
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// `root` and every process below it, from each process's parent in `/proc/PID/stat`.
fn descendants(root: u32) -> Vec<u32> {
    if root == 0 {
        return Vec::new();
    }
    let mut parents: Vec<(u32, u32)> = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // The fields after the command name, which is in parentheses and may hold spaces.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|p| p.parse().ok()) {
            parents.push((pid, ppid));
        }
    }
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parents
                .iter()
                .filter(|&&(_, ppid)| ppid == parent)
                .map(|&(pid, _)| pid),
        );
        i += 1;
    }
    found
}

/// The value of the first trace header our gateway added (the `by gw.example.com` one).
fn our_received_header(content: &str) -> String {
    let mut header = String::new();
    let mut inside = false;
    for line in content.split("\r\n") {
        if inside {
            if line.starts_with([' ', '\t']) {
                header.push_str(line);
                continue;
            }
            if header.contains("by gw.example.com") {
                return header;
            }
            inside = false;
        }
        if line.is_empty() {
            break;
        }
        if line.starts_with("Received:") {
            header = line.to_string();
            inside = true;
        }
    }
    panic!("no Received header by gw.example.com in\n{content}");
}

#[test]
fn postfix_delivers_into_our_inbound_with_starttls() {
    let dir = TempDir::new("postfix-tls-in");
    let sink = Sink::start();
    let gw = Gateway::start(
        dir.path(),
        &format!(
            "set classify 10 remote 127.0.0.0/8 category INTERNAL\n\
             set route example.com relay [127.0.0.1]:{}\n",
            sink.addr.port()
        ),
    );
    let postfix_dir = dir.path().join("postfix");
    let postfix = Postfix::start(
        &postfix_dir,
        &format!(
            "relayhost = [127.0.0.1]:{}\n\
             smtp_tls_security_level = encrypt\n\
             smtp_tls_loglevel = 1\n",
            gw.inbound
        ),
        None,
    );
    postfix.sendmail(
        "alice@example.org",
        "bob@example.com",
        b"Subject: from postfix\n\nover STARTTLS from Postfix\n",
    );

    let msgs = sink.wait_for(1);
    assert_eq!(msgs.len(), 1);
    assert!(
        msgs[0].mail.starts_with("<alice@example.org>"),
        "{:?}",
        msgs[0].mail
    );
    assert_eq!(msgs[0].rcpts, ["<bob@example.com>"]);
    let content = String::from_utf8_lossy(&msgs[0].content).into_owned();
    assert!(content.contains("Subject: from postfix\r\n"), "{content}");
    assert!(
        content.contains("over STARTTLS from Postfix\r\n"),
        "{content}"
    );
    let received = our_received_header(&content);
    assert!(
        received.contains("with ESMTPS (using TLSv1.3 with cipher TLS13_"),
        "{received}"
    );
    // Postfix's own view of the session: encrypted with TLS 1.3 to our inbound port.
    let log = postfix.wait_for_log("status=sent");
    let established = format!(
        "TLS connection established to 127.0.0.1[127.0.0.1]:{}: TLSv1.3 with cipher",
        gw.inbound
    );
    assert!(log.contains(&established), "{log}");
    assert!(
        log.contains(&format!(
            "relay=127.0.0.1[127.0.0.1]:{}, delay=",
            gw.inbound
        )),
        "{log}"
    );
    gw.wait_for_log("Anonymous TLS connection established from");
    assert!(gw.log_text().contains("[127.0.0.1]: TLSv1.3 with cipher"));
}

#[test]
fn our_outbound_delivers_into_postfix_with_verified_starttls() {
    let dir = TempDir::new("postfix-tls-out");
    let ca = TestCa::new(dir.path());
    let (cert, key) = ca.server("server", "127.0.0.1", "IP:127.0.0.1");
    let ca = ca.cert;
    let sink = Sink::start();
    let postfix_dir = dir.path().join("postfix");
    let smtpd_port = free_port();
    let postfix = Postfix::start(
        &postfix_dir,
        &format!(
            "relay_domains = example.com\n\
             transport_maps = inline:{{ example.com=relay:[127.0.0.1]:{sink} }}\n\
             smtpd_tls_cert_file = {cert}\n\
             smtpd_tls_key_file = {key}\n\
             smtpd_tls_security_level = may\n\
             smtpd_tls_loglevel = 1\n\
             smtpd_tls_received_header = yes\n",
            sink = sink.addr.port(),
            cert = cert.display(),
            key = key.display(),
        ),
        Some(smtpd_port),
    );
    let gw = Gateway::start(
        dir.path(),
        &format!(
            "set classify 10 remote 127.0.0.0/8 category INTERNAL\n\
             set route example.com relay [127.0.0.1]:{smtpd_port}\n\
             set route example.com channel tcp_out\n\
             set channel tcp_out keywords \"musttlsclient\"\n\
             set tls server-ca-file \"{}\"\n",
            ca.display()
        ),
    );
    python(&format!(
        r#"
import smtplib
with smtplib.SMTP("127.0.0.1", {port}, timeout=30) as s:
    s.sendmail("alice@example.org", ["bob@example.com"], b"Subject: to postfix\r\n\r\nverified hop into Postfix\r\n")
"#,
        port = gw.inbound
    ));

    let msgs = sink.wait_for(1);
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].rcpts, ["<bob@example.com>"]);
    let content = String::from_utf8_lossy(&msgs[0].content).into_owned();
    assert!(content.contains("Subject: to postfix\r\n"), "{content}");
    assert!(
        content.contains("verified hop into Postfix\r\n"),
        "{content}"
    );
    // Postfix's trace header records the TLS session our outbound negotiated.
    assert!(
        content.contains("(using TLSv1.3 with cipher TLS_"),
        "{content}"
    );
    assert!(
        content.contains("by postfix.test (Postfix) with ESMTPS"),
        "{content}"
    );
    gw.wait_for_log(&format!(
        "Verified TLS connection established to 127.0.0.1[127.0.0.1]:{smtpd_port}: TLSv1.3 with cipher"
    ));
    let log = postfix.wait_for_log("TLS connection established from");
    assert!(
        log.contains("Anonymous TLS connection established from localhost[127.0.0.1]: TLSv1.3")
            || log
                .contains("Anonymous TLS connection established from unknown[127.0.0.1]: TLSv1.3"),
        "{log}"
    );
}
