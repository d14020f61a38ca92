//! Resources running out under the real gateway: a spool filesystem that fills up (a
//! small tmpfs mounted by the test; the tests run as root), a process out of file
//! descriptors (RLIMIT_NOFILE on the gateway), and ten thousand idle sessions.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

/// A tmpfs of `size` mounted on `at` for the life of the value.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .expect("mount");
        assert!(status.success(), "mount -t tmpfs needs root");
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Sends one message of about `size` octets; gives the reply to its end of data (or to
/// the DATA command if refused there).
fn send(gw: &Gateway, subject: &str, size: usize) -> String {
    let mut raw = Raw::connect(gw.inbound_addr());
    raw.replies(1);
    raw.send(
        b"EHLO c.example.org\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n",
    );
    let replies = raw.replies(4);
    if !replies.contains("354") {
        return replies;
    }
    let mut body = format!("Subject: {subject}\r\n\r\n").into_bytes();
    while body.len() < size {
        body.extend_from_slice(b"0123456789 the quick brown fox jumps over the lazy dog\r\n");
    }
    body.extend_from_slice(b".\r\n");
    raw.send(&body);
    let reply = raw.replies(1);
    raw.send(b"QUIT\r\n");
    reply
}

fn fill(path: &Path) {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while f.write_all(&chunk).is_ok() {}
    // The last partial chunk may have gone in; the filesystem is full now.
    while f.write_all(&chunk[..512]).is_ok() {}
}

#[test]
fn a_full_spool_refuses_new_mail_with_452_and_loses_nothing() {
    let dir = TempDir::new("spool-full");
    let _tmpfs = Tmpfs::mount(&dir.path().join("state").join("spool"), "3m");
    let hop = free_port();
    let mut gw = Gateway::start(
        dir.path(),
        &format!(
            "set classify 10 remote 127.0.0.0/8 category INTERNAL\n\
             set route example.com relay [127.0.0.1]:{hop}\n\
             set route example.com avoid-time 1s\n\
             set queue retry \"1h\"\n"
        ),
    );
    // Accepted while there is room: three journal messages and one in its own files;
    // the next hop is down, so all four wait.
    for (i, size) in [2_000, 2_000, 2_000, 300_000].into_iter().enumerate() {
        let reply = send(&gw, &format!("kept {i}"), size);
        assert!(reply.contains("250 2.0.0 Ok: queued as"), "{reply}");
    }
    gw.wait_for_log_count("status=deferred", 4);
    // The spool filesystem fills up.
    let filler = dir.path().join("state").join("spool").join("filler");
    fill(&filler);
    // (A message that fits the journal's last page still goes in: there is room for it.)
    for size in [20_000, 400_000] {
        let reply = send(&gw, "refused", size);
        assert!(reply.contains("452 4.3.1"), "{size}: {reply}");
    }
    // A crash while full loses nothing either.
    gw.restart();
    let reply = send(&gw, "refused after restart", 20_000);
    assert!(reply.contains("452 4.3.1"), "{reply}");
    // Room again, and the next hop back: everything accepted goes, and new mail is taken.
    std::fs::remove_file(&filler).unwrap();
    let sink = Sink::start_on(hop, SinkBehaviour::default());
    let flushed = Command::new(env!("CARGO_BIN_EXE_drawbridge"))
        .args(["queue", "flush", "--state-dir"])
        .arg(&gw.state)
        .status()
        .unwrap();
    assert!(flushed.success());
    let delivered = sink.wait_for(4);
    let mut subjects: Vec<String> = delivered
        .iter()
        .filter_map(|m| {
            let text = String::from_utf8_lossy(&m.content).into_owned();
            text.lines()
                .find_map(|l| l.strip_prefix("Subject: ").map(str::to_string))
        })
        .collect();
    subjects.sort();
    assert_eq!(subjects, ["kept 0", "kept 1", "kept 2", "kept 3"]);
    let reply = send(&gw, "after", 2_000);
    assert!(reply.contains("250 2.0.0 Ok: queued as"), "{reply}");
    sink.wait_for(5);
    // Nothing refused was delivered: the refused messages never made it in.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(sink.count(), 5);
}

#[test]
fn out_of_descriptors_new_clients_get_421_and_the_gateway_recovers() {
    let dir = TempDir::new("nofile");
    let sink = Sink::start();
    let gw = Gateway::start_with_nofile(
        dir.path(),
        &format!(
            "set classify 10 remote 127.0.0.0/8 category INTERNAL\n\
             set route example.com relay [127.0.0.1]:{}\n\
             set service inbound max-connections 1000\n\
             set service inbound max-connections-per-ip 1000\n",
            sink.addr.port()
        ),
        64,
    );
    let mut held = Vec::new();
    let mut refused = None;
    for _ in 0..100 {
        let mut raw = Raw::connect(gw.inbound_addr());
        let greeting = raw.replies(1);
        if greeting.starts_with("421") {
            refused = Some(greeting);
            break;
        }
        assert!(greeting.starts_with("220"), "{greeting}");
        held.push(raw);
    }
    let refused = refused.expect("64 descriptors ran out");
    assert!(
        refused.starts_with("421 4.3.2 gw.example.com Error: out of resources"),
        "{refused}"
    );
    gw.wait_for_log("out of file descriptors: refusing");
    // The clients go; the gateway serves again.
    drop(held);
    gw.wait_for_log_count("disconnect from", 30);
    let mut reply = String::new();
    for _ in 0..50 {
        reply = send(&gw, "recovered", 1_000);
        if reply.contains("250") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(reply.contains("250 2.0.0 Ok: queued as"), "{reply}");
    sink.wait_for(1);
}

/// Idle sessions held at once.
const IDLE_SESSIONS: usize = 10_000;
/// The most one idle session may add to the gateway's resident memory: 4 KiB (the debug
/// build the tests run takes about 3.1; see the README). The gateway's own size before
/// them is not counted: it grows with the debug binary, not with the sessions.
const IDLE_SESSION_BYTES: u64 = 4 * 1024;

fn vm_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

fn raise_nofile(to: u64) {
    // SAFETY: plain getrlimit/setrlimit on this process.
    unsafe {
        let mut rl = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl);
        if rl.rlim_cur < to {
            rl.rlim_cur = to;
            rl.rlim_max = rl.rlim_max.max(to);
            assert_eq!(
                libc::setrlimit(libc::RLIMIT_NOFILE, &rl),
                0,
                "raising RLIMIT_NOFILE to {to} needs root"
            );
        }
    }
}

#[test]
fn ten_thousand_idle_sessions_stay_small() {
    // The test holds one end of each connection and the gateway (which inherits the
    // limit) the other.
    raise_nofile(IDLE_SESSIONS as u64 + 1024);
    let dir = TempDir::new("idle");
    let gw = Gateway::start(
        dir.path(),
        "set service inbound max-connections 20000\n\
         set service inbound max-connections-per-ip 250\n",
    );
    let before = vm_rss_kib(gw.pid());
    let mut sessions: Vec<TcpStream> = Vec::with_capacity(IDLE_SESSIONS);
    for i in 0..IDLE_SESSIONS {
        let from = Ipv4Addr::new(127, 0, 4, 1 + (i / 250) as u8);
        let mut stream = connect_from(from, gw.inbound_addr()).unwrap();
        // Every one of them is served: each has its greeting.
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut greeting = [0u8; 3];
        stream.read_exact(&mut greeting).unwrap();
        assert_eq!(&greeting, b"220", "session {i}");
        sessions.push(stream);
    }
    let during = vm_rss_kib(gw.pid());
    let each = during.saturating_sub(before) * 1024 / IDLE_SESSIONS as u64;
    println!(
        "{IDLE_SESSIONS} idle sessions: RSS {before} KiB before, {during} KiB with them, \
         {each} octets each"
    );
    assert!(
        each <= IDLE_SESSION_BYTES,
        "{IDLE_SESSIONS} idle sessions take {each} octets each ({before} KiB before, {during} KiB with them)"
    );
    // Each still answers when its client speaks at last (its buffer comes then).
    let last = sessions.last_mut().unwrap();
    last.write_all(b"EHLO idle.example\r\n").unwrap();
    let mut chunk = [0u8; 512];
    let mut got = String::new();
    while !(got.contains("\n250 ") && got.ends_with("\r\n")) {
        let n = last.read(&mut chunk).unwrap();
        assert!(n > 0, "the gateway closed an idle session: {got:?}");
        got.push_str(&String::from_utf8_lossy(&chunk[..n]));
    }
    assert!(got.contains("\n250-gw.example.com"), "{got:?}");
}
