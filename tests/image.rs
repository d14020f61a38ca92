//! The firmware image end to end: `cargo xtask build-image` builds it once for every
//! test here; `verify-image` accepts it and refuses every tampered copy; two builds are
//! byte-identical; QEMU boots it in software emulation with a blank data disk (formatted
//! at first boot), relays a message from the host to a sink on the host through QEMU's
//! user network, keeps configuration and queue across a restart, loses no
//! acknowledged message when the machine is cut off ten times under load, and restarts
//! a gateway whose event loop hangs (the watchdog) without resetting the machine.
//!
//! The test's configuration reaches the guest as `state/initial.conf` on the data disk,
//! written with debugfs (after the first boot) or mke2fs -d (before it): the drop box an
//! appliance commits at boot. The rest is typed at the serial console through QEMU's
//! socket, as on a serial cable: the first login, a commit in configuration mode,
//! `system update`, `system reboot`, `system watchdog-test` and `system watchdog-test hardware`.
//! QEMU tests run one at a time (a lock), with generous timeouts and no clock assertions.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::{Rng, Sink, TempDir, free_port};
use drawbridge_image::board::BoardFile;
use drawbridge_image::format::{self, SectionKind};
use drawbridge_image::qemu::{self, Machine, Serial};

const BOARD: &str = "qemu-x86_64";
const COMPATIBLE: &str = "drawbridge,qemu-x86_64";
/// How long a boot may take under software emulation on a loaded machine.
const BOOT_WAIT: Duration = Duration::from_secs(300);
/// How long a relayed message may take to reach the sink.
const DELIVERY_WAIT: Duration = Duration::from_secs(180);
/// The console password the tests choose at the first login.
const CONSOLE_PASSWORD: &str = "serial-line-2026";
/// The data disks' size: 128 MiB, sparse.
const DISK_SIZE: u64 = 128 << 20;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Cargo's target directory, as xtask finds it.
fn target() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root().join(dir),
        None => root().join("target"),
    }
}

fn cargo() -> Command {
    let mut c = Command::new(option_env!("CARGO").unwrap_or("cargo"));
    c.current_dir(root());
    c
}

/// `cargo xtask ARGS…`: its success and combined output.
fn xtask(args: &[&str]) -> (bool, String) {
    let out = cargo()
        .args(["run", "--quiet", "--package", "xtask", "--"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("cargo runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

struct Built {
    path: PathBuf,
    bytes: Vec<u8>,
}

/// The image, built once per test binary.
fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        let (ok, text) = xtask(&["build-image", "--board", BOARD]);
        assert!(ok, "build-image failed:\n{text}");
        let path = target()
            .join("image")
            .join(BOARD)
            .join(format!("drawbridge-{}.img", env!("CARGO_PKG_VERSION")));
        let bytes = std::fs::read(&path).unwrap();
        Built { path, bytes }
    })
}

fn dev_key() -> PathBuf {
    target().join("image/dev-signing-key.pk8")
}

fn dev_public_key() -> [u8; 32] {
    let text = std::fs::read_to_string(target().join("image/dev-signing-key.pub")).unwrap();
    drawbridge::image::parse_hex_key(&text).unwrap()
}

fn verify_image(path: &Path, board: &str) -> (bool, String) {
    xtask(&["verify-image", path.to_str().unwrap(), "--board", board])
}

#[test]
fn verify_image_accepts_the_image_and_refuses_every_tampered_copy() {
    let b = built();
    let (ok, text) = verify_image(&b.path, BOARD);
    assert!(ok, "{text}");
    assert!(text.contains("board    drawbridge,qemu-x86_64"), "{text}");
    let image = format::parse(&b.bytes).unwrap();
    let section = |k| image.section(k).unwrap().offset as usize;
    let dir = TempDir::new("tamper");
    for (what, at) in [
        ("the header", 100),
        ("the section table", format::HEADER_LEN + 30),
        ("the signature", image.signed_len + 60),
        ("the kernel", section(SectionKind::Kernel) + 4096),
        ("the initramfs", section(SectionKind::Initramfs) + 1000),
        (
            "the factory configuration",
            section(SectionKind::FactoryConfig) + 3,
        ),
    ] {
        let mut bytes = b.bytes.clone();
        bytes[at] ^= 0x04;
        let path = dir.path().join("tampered.img");
        std::fs::write(&path, &bytes).unwrap();
        let (ok, text) = verify_image(&path, BOARD);
        assert!(!ok, "a flipped bit in {what} was accepted:\n{text}");
    }
    // The same image is refused for the host board, whose images it is not.
    let (ok, text) = verify_image(&b.path, "host");
    assert!(
        !ok && text.contains("is for board drawbridge,qemu-x86_64"),
        "{text}"
    );
}

#[test]
fn an_image_for_another_board_is_refused_by_verify_image_and_system_update() {
    let b = built();
    let dir = TempDir::new("other-board");
    // A correctly signed image whose header names another board.
    let mut bytes = b.bytes.clone();
    let board_field = &mut bytes[16..16 + format::BOARD_LEN];
    board_field.fill(0);
    board_field[..23].copy_from_slice(b"drawbridge,other-board!");
    let path = dir.path().join("other.img");
    std::fs::write(&path, &bytes).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_drawbridge"))
        .args(["image", "seal", "--key"])
        .arg(dev_key())
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let (ok, text) = verify_image(&path, BOARD);
    assert!(
        !ok && text.contains("is for board drawbridge,other-board!"),
        "{text}"
    );

    // system update, as the QEMU board's firmware runs it, refuses it before writing.
    let other = std::fs::read(&path).unwrap();
    let t = drawbridge::image::TransientToken::new().unwrap();
    let keys = [dev_public_key()];
    let trust = drawbridge::image::Trust {
        keys: &keys,
        compatible: COMPATIBLE,
    };
    let slots = dir.path().join("firmware");
    let e = drawbridge::init::firmware::update(&t.token, &trust, &other, &slots).unwrap_err();
    assert!(e.to_string().contains("is for board"), "{e}");
    assert!(!slots.exists());
    // The real image goes to slot a.
    let slot = drawbridge::init::firmware::update(&t.token, &trust, &b.bytes, &slots).unwrap();
    assert_eq!(slot, drawbridge::init::firmware::Slot::A);
}

#[test]
fn two_builds_of_the_same_inputs_are_byte_identical() {
    let first = &built().bytes;
    let (ok, text) = xtask(&["build-image", "--board", BOARD]);
    assert!(ok, "{text}");
    let second = std::fs::read(&built().path).unwrap();
    assert!(first == &second, "the second build differs from the first");
    // The binary inside holds none of this machine's paths.
    let image = format::parse(first).unwrap();
    let initramfs = image.bytes(first, image.section(SectionKind::Initramfs).unwrap());
    let archive = drawbridge_image::cpio::read(initramfs).unwrap();
    let drawbridge_image::cpio::Node::File(init) = &archive.entries()["init"].node else {
        panic!("/init is a file")
    };
    let here = root().display().to_string();
    assert!(
        !init.windows(here.len()).any(|w| w == here.as_bytes()),
        "/init contains {here}"
    );
    assert!(archive.entries().contains_key("lib/modules/load-order"));
    assert!(archive.entries().contains_key("usr/sbin/mke2fs"));
}

/// One QEMU at a time: the machine has two cores.
fn qemu_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn board() -> BoardFile {
    BoardFile::parse(&std::fs::read_to_string(root().join("board/qemu-x86_64.toml")).unwrap())
        .unwrap()
}

/// A blank sparse raw disk.
fn blank_disk(path: &Path) {
    std::fs::File::create(path)
        .unwrap()
        .set_len(DISK_SIZE)
        .unwrap();
}

/// A data disk made on the host, holding the files of `tree` (`mke2fs -d`).
fn disk_with(tree: &Path, disk: &Path) {
    blank_disk(disk);
    let out = Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-d"])
        .arg(tree)
        .arg(disk)
        .output()
        .expect("mke2fs (e2fsprogs)");
    assert!(out.status.success(), "{out:?}");
}

/// A data disk made on the host with the first configuration already on it
/// (`state/initial.conf`: `config`), and whatever `prepare` adds to its tree.
fn disk_with_config(dir: &Path, config: &str, prepare: impl FnOnce(&Path)) -> PathBuf {
    let tree = dir.join("tree");
    std::fs::create_dir_all(tree.join("state")).unwrap();
    std::fs::write(tree.join("state/initial.conf"), config).unwrap();
    prepare(&tree);
    let disk = dir.join("data.img");
    disk_with(&tree, &disk);
    disk
}

/// A test virtual machine: the built image on a data disk, SMTP forwarded.
struct Vm {
    child: Option<Child>,
    serial: PathBuf,
    monitor: PathBuf,
    /// The serial console's socket, for typing; what the guest writes is in `serial`.
    console: PathBuf,
    typing: Option<UnixStream>,
    smtp: u16,
}

impl Vm {
    /// Boots the machine and waits until its inbound service greets.
    fn boot(dir: &Path, disk: &Path) -> Vm {
        let mut vm = Vm::power_on(dir, disk);
        vm.wait_smtp_ready();
        vm
    }

    /// Starts the machine, without waiting for anything.
    fn power_on(dir: &Path, disk: &Path) -> Vm {
        let (kernel, initramfs) = qemu::extract(&built().path, &dir.join("boot")).unwrap();
        let smtp = free_port();
        let serial = dir.join("serial.log");
        let monitor = dir.join("monitor.sock");
        let console = dir.join("console.sock");
        let _ = std::fs::remove_file(&monitor);
        let _ = std::fs::remove_file(&console);
        let machine = Machine {
            kernel,
            initramfs,
            command_line: board().kernel.unwrap().command_line,
            disk: disk.to_path_buf(),
            // Only what the guest flushed reaches the disk before QEMU dies.
            disk_cache: "none".into(),
            forwards: vec![(smtp, 25)],
            serial: Serial::Socket {
                socket: console.clone(),
                log: serial.clone(),
            },
            monitor: Some(monitor.clone()),
            restart_exits: true,
        };
        let child = Command::new(qemu::QEMU)
            .args(machine.args())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("qemu.err")).unwrap())
            .spawn()
            .expect("qemu-system-x86_64 (cargo xtask test installs qemu-system-x86)");
        Vm {
            child: Some(child),
            serial,
            monitor,
            console,
            typing: None,
            smtp,
        }
    }

    fn serial_text(&self) -> String {
        std::fs::read_to_string(&self.serial).unwrap_or_default()
    }

    /// Types at the serial console, as an administrator on the serial cable does. What
    /// comes back is read and dropped (the log file has it), so the line never stalls.
    fn type_keys(&mut self, keys: &str) {
        if self.typing.is_none() {
            let stream = UnixStream::connect(&self.console).expect("the console socket");
            let mut drain = stream.try_clone().unwrap();
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut drain, &mut std::io::sink());
            });
            self.typing = Some(stream);
        }
        let stream = self.typing.as_mut().unwrap();
        // A person's pace: the emulated UART's receive buffer is small.
        for chunk in keys.as_bytes().chunks(8) {
            stream.write_all(chunk).unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the console has shown `text` at least `times` times in this boot.
    fn expect_console(&self, text: &str, times: usize) {
        let start = Instant::now();
        while self.serial_text().matches(text).count() < times {
            assert!(
                start.elapsed() < BOOT_WAIT,
                "the console did not show {text:?}:\n{}",
                self.serial_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Types one command line and waits for the answer `expect` (its `times`th showing).
    fn command(&mut self, line: &str, expect: &str, times: usize) {
        self.type_keys(&format!("{line}\r"));
        self.expect_console(expect, times);
    }

    /// The first login on the serial console: the factory password, then the forced
    /// change; leaves the operational prompt.
    fn first_login(&mut self) {
        self.expect_console("login: ", 1);
        self.command("admin", "Password:", 1);
        self.command("drawbridge", "New password:", 1);
        self.command(CONSOLE_PASSWORD, "Retype new password:", 1);
        self.command(CONSOLE_PASSWORD, "Password changed.", 1);
        self.expect_console("admin@", 1);
    }

    /// Waits for QEMU to exit after the guest restarts or powers off (`-no-reboot`).
    fn wait_exit(&mut self) {
        let mut child = self.child.take().unwrap();
        let start = Instant::now();
        while child.try_wait().unwrap().is_none() {
            assert!(
                start.elapsed() < BOOT_WAIT,
                "the guest did not go down:\n{}",
                self.serial_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits for the guest's inbound service to greet through the forwarded port.
    fn wait_smtp_ready(&mut self) {
        let start = Instant::now();
        loop {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!("QEMU exited ({status}):\n{}", self.serial_text());
            }
            if let Ok(s) = TcpStream::connect(("127.0.0.1", self.smtp)) {
                // A guest that is up greets at once; before that, QEMU holds the
                // connection while it tries to reach the guest.
                s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let mut line = String::new();
                if BufReader::new(s).read_line(&mut line).is_ok() && line.starts_with("220 ") {
                    return;
                }
            }
            assert!(
                start.elapsed() < BOOT_WAIT,
                "no SMTP greeting after {BOOT_WAIT:?}:\n{}",
                self.serial_text()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn monitor_command(&self, command: &str) {
        let mut s = UnixStream::connect(&self.monitor).unwrap();
        s.write_all(format!("{command}\n").as_bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(500));
    }

    /// Ctrl-Alt-Del: the kernel sends SIGINT to PID 1, which stops the gateway, writes
    /// everything out, unmounts and restarts; with `-no-reboot`, QEMU then exits.
    fn restart(&mut self) {
        self.monitor_command("sendkey ctrl-alt-delete");
        self.wait_exit();
        let log = self.serial_text();
        assert!(log.contains("restart requested"), "{log}");
        assert!(log.contains("restarting"), "{log}");
        // The gateway stopped by itself on SIGTERM, not killed at PID 1's deadline.
        assert!(!log.contains("did not stop in"), "{log}");
    }

    /// Pulls the plug: SIGKILL to QEMU.
    fn cut_power(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.cut_power();
    }
}

/// Sends one message through the forwarded inbound port; `true` when DATA was answered
/// 250. Any failure (the machine going away included) is `false`.
fn send(port: u16, rcpt: &str, subject: &str) -> bool {
    let attempt = || -> std::io::Result<bool> {
        let s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        let mut r = BufReader::new(s.try_clone()?);
        let mut w = s;
        let reply = |r: &mut BufReader<TcpStream>| -> std::io::Result<String> {
            let mut all = String::new();
            loop {
                let mut line = String::new();
                if r.read_line(&mut line)? == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                all.push_str(&line);
                if line.len() < 4 || line.as_bytes()[3] == b' ' {
                    return Ok(all);
                }
            }
        };
        let ok = |text: &str, code: &str| text.starts_with(code);
        if !ok(&reply(&mut r)?, "220") {
            return Ok(false);
        }
        for (command, code) in [
            ("EHLO test.example\r\n".to_string(), "250"),
            ("MAIL FROM:<sender@test.example>\r\n".to_string(), "250"),
            (format!("RCPT TO:<{rcpt}>\r\n"), "250"),
            ("DATA\r\n".to_string(), "354"),
        ] {
            w.write_all(command.as_bytes())?;
            if !ok(&reply(&mut r)?, code) {
                return Ok(false);
            }
        }
        w.write_all(
            format!("Subject: {subject}\r\nFrom: sender@test.example\r\n\r\nbody\r\n.\r\n")
                .as_bytes(),
        )?;
        let accepted = ok(&reply(&mut r)?, "250");
        let _ = w.write_all(b"QUIT\r\n");
        Ok(accepted)
    };
    attempt().unwrap_or(false)
}

/// The subjects a sink has received.
fn subjects(sink: &Sink) -> std::collections::BTreeSet<String> {
    sink.messages
        .lock()
        .unwrap()
        .iter()
        .filter_map(|m| {
            String::from_utf8_lossy(&m.content)
                .lines()
                .find_map(|l| l.strip_prefix("Subject: ").map(str::to_string))
        })
        .collect()
}

fn wait_for_subjects(sink: &Sink, wanted: &[String], vm: &Vm) {
    let start = Instant::now();
    loop {
        let got = subjects(sink);
        let missing: Vec<&String> = wanted.iter().filter(|s| !got.contains(*s)).collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            start.elapsed() < DELIVERY_WAIT,
            "{} acknowledged message(s) never arrived, e.g. {:?}:\n{}",
            missing.len(),
            missing.first(),
            vm.serial_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The test configuration: the factory one, with mail for `example.net` relayed to the
/// host's `sink` and for `example.org` to the host's `second` port, retried every 5 s.
fn test_config(sink: u16, second: u16) -> String {
    let factory = std::fs::read_to_string(root().join("board/qemu-x86_64/default.conf")).unwrap();
    format!(
        "{factory}\nset route example.net relay [{h}]:{sink}\n\
         set route example.org relay [{h}]:{second}\n\
         set queue retry \"5s\"\n",
        h = qemu::HOST_FROM_GUEST
    )
}

#[test]
fn boots_formats_relays_and_keeps_configuration_and_queue_across_a_restart() {
    let _lock = qemu_lock();
    let _ = built();
    let dir = TempDir::new("qemu-e2e");
    let disk = dir.path().join("data.img");
    blank_disk(&disk);

    // First boot on a blank disk: formatted, factory configuration, SMTP ready.
    let mut vm = Vm::boot(dir.path(), &disk);
    let log = vm.serial_text();
    assert!(log.contains("starting as PID 1"), "{log}");
    assert!(log.contains("formatting it (first boot)"), "{log}");
    assert!(
        log.contains("configuration: the factory configuration"),
        "{log}"
    );
    assert!(log.contains("network: eth0 address 10.0.2.15/24"), "{log}");
    vm.restart();

    // The configuration goes onto the data disk (later: typed at the console).
    let sink = Sink::start();
    let second_port = free_port();
    let conf = dir.path().join("initial.conf");
    std::fs::write(&conf, test_config(sink.addr.port(), second_port)).unwrap();
    let out = Command::new("debugfs")
        .arg("-w")
        .arg("-R")
        .arg(format!("write {} state/initial.conf", conf.display()))
        .arg(&disk)
        .output()
        .expect("debugfs (e2fsprogs)");
    assert!(out.status.success(), "{out:?}");

    // Second boot: the file is committed as a new configuration, and the relay route
    // works from the host through QEMU's gateway.
    let mut vm = Vm::boot(dir.path(), &disk);
    let log = vm.serial_text();
    assert!(
        log.contains("configuration: /data/state/initial.conf committed"),
        "{log}"
    );
    // The console runs on the serial line.
    assert!(log.contains("login: "), "{log}");
    assert!(send(vm.smtp, "alice@example.net", "relayed"));
    wait_for_subjects(&sink, &["relayed".to_string()], &vm);
    let got = sink.messages.lock().unwrap()[0].clone();
    assert_eq!(got.rcpts, ["<alice@example.net>"]);
    // A message whose next hop is down stays queued.
    assert!(send(vm.smtp, "bob@example.org", "queued"));
    // The administrator on the serial line: the first login, a route committed in
    // configuration mode and taken by mail at once, then a reboot from the console.
    let typed = Sink::start();
    vm.first_login();
    vm.command("configure", "[edit]", 1);
    vm.type_keys(&format!(
        "set route example.com relay [{}]:{}\r",
        qemu::HOST_FROM_GUEST,
        typed.addr.port()
    ));
    vm.command(
        "commit comment \"typed at the console\"",
        "commit 3: applied",
        1,
    );
    vm.type_keys("exit\r");
    assert!(send(vm.smtp, "dave@example.com", "typed route"));
    wait_for_subjects(&typed, &["typed route".to_string()], &vm);
    vm.command("system reboot", "Reboot the appliance?", 1);
    vm.command("yes", "Rebooting.", 1);
    vm.wait_exit();
    let log = vm.serial_text();
    assert!(log.contains("restart requested"), "{log}");
    assert!(log.contains("restarting"), "{log}");

    // Third boot: configuration and queue survived; the queued message leaves once its
    // next hop listens.
    let second = Sink::start_on(second_port, Default::default());
    let vm = Vm::boot(dir.path(), &disk);
    let log = vm.serial_text();
    // QEMU starts the serial log afresh at each boot.
    assert!(log.contains("starting as PID 1"), "{log}");
    assert!(!log.contains("formatting"), "{log}");
    // The dropped file was loaded once: now the stored configuration rules.
    assert!(
        log.contains("configuration: the stored configuration"),
        "{log}"
    );
    assert!(
        log.contains("1 message(s) recovered from the queue"),
        "{log}"
    );
    wait_for_subjects(&second, &["queued".to_string()], &vm);
    assert!(send(vm.smtp, "carol@example.net", "after restart"));
    wait_for_subjects(&sink, &["after restart".to_string()], &vm);
    // The commit typed at the console survived the reboot.
    assert!(log.contains("running commit 3"), "{log}");
    assert!(send(vm.smtp, "erin@example.com", "typed route kept"));
    wait_for_subjects(&typed, &["typed route kept".to_string()], &vm);
}

/// How many times the power is cut.
const POWER_CUTS: usize = 10;
/// Parallel SMTP sessions that load the guest while the power is cut.
const LOAD_SESSIONS: usize = 3;

#[test]
fn no_acknowledged_message_is_lost_when_the_power_is_cut_under_load() {
    let _lock = qemu_lock();
    let _ = built();
    let dir = TempDir::new("qemu-power");
    let sink = Sink::start();
    let disk = disk_with_config(
        dir.path(),
        &test_config(sink.addr.port(), free_port()),
        |_| {},
    );

    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    // The test's "random moments", printed so that a failure can be replayed.
    println!("power-cut seed {seed}");
    let mut rng = Rng(seed);
    let mut acknowledged: Vec<String> = Vec::new();
    for cut in 0..=POWER_CUTS {
        let mut vm = Vm::boot(dir.path(), &disk);
        // Everything answered 250 before the last cut was delivered or is still queued,
        // and so arrives now.
        wait_for_subjects(&sink, &acknowledged, &vm);
        if cut == POWER_CUTS {
            break;
        }
        let port = vm.smtp;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sessions: Vec<_> = (0..LOAD_SESSIONS)
            .map(|s| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut acked = Vec::new();
                    let mut n = 0;
                    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                        let subject = format!("cut{cut}-s{s}-m{n}");
                        n += 1;
                        if send(port, "load@example.net", &subject) {
                            acked.push(subject);
                        }
                    }
                    acked
                })
            })
            .collect();
        // A random moment between 0.2 and 3 seconds into the load.
        std::thread::sleep(Duration::from_millis(200 + rng.next() % 2800));
        vm.cut_power();
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        for s in sessions {
            acknowledged.extend(s.join().unwrap());
        }
    }
    assert!(
        acknowledged.len() >= POWER_CUTS,
        "the load hardly ran: {} message(s) acknowledged",
        acknowledged.len()
    );
    println!(
        "{} acknowledged message(s) over {POWER_CUTS} power cuts, all delivered",
        acknowledged.len()
    );
}

/// Runs debugfs commands on a disk image (writable), failing the test on error.
fn debugfs(disk: &Path, commands: &str, dir: &Path) -> String {
    let script = dir.join("debugfs.cmds");
    std::fs::write(&script, commands).unwrap();
    let out = Command::new("debugfs")
        .arg("-w")
        .arg("-f")
        .arg(&script)
        .arg(disk)
        .output()
        .expect("debugfs (e2fsprogs)");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn an_update_is_tried_once_kept_after_a_good_boot_and_a_bad_slot_falls_back() {
    let _lock = qemu_lock();
    let b = built();
    let dir = TempDir::new("qemu-update");
    // The image on the data disk, as an administrator copies it there.
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("state")).unwrap();
    std::fs::write(tree.join("update.img"), &b.bytes).unwrap();
    let disk = dir.path().join("data.img");
    disk_with(&tree, &disk);

    // `system update` at the serial console verifies it and writes slot a, pending;
    // `system reboot` restarts the machine into the boot stage.
    let mut vm = Vm::boot(dir.path(), &disk);
    vm.first_login();
    vm.command(
        "system update /data/update.img",
        "/data/update.img verified and written to slot a; it starts at the next system reboot",
        1,
    );
    vm.command("system reboot", "Reboot the appliance?", 1);
    vm.command("yes", "Rebooting.", 1);
    vm.wait_exit();
    drop(vm);

    // The boot stage starts slot a with kexec; its firmware confirms it after a good run.
    let mut vm = Vm::boot(dir.path(), &disk);
    let start = Instant::now();
    while !vm
        .serial_text()
        .contains("slot a booted well and is now active")
    {
        assert!(
            start.elapsed() < BOOT_WAIT,
            "slot a was not confirmed:\n{}",
            vm.serial_text()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(vm.serial_text().contains("running from slot a"));
    vm.restart();
    let state = debugfs(&disk, "cat firmware/state\n", dir.path());
    assert!(
        state.contains("active=a") && state.contains("pending=none"),
        "{state}"
    );

    // A damaged update in slot b: verified again before it is started, dropped, and the
    // boot falls back to slot a.
    let mut damaged = b.bytes.clone();
    let last = damaged.len() - 1;
    damaged[last] ^= 1;
    std::fs::write(dir.path().join("b.img"), &damaged).unwrap();
    std::fs::write(dir.path().join("state"), "active=a\npending=b\ntrying=no\n").unwrap();
    debugfs(
        &disk,
        &format!(
            "rm firmware/state\nwrite {d}/state firmware/state\nwrite {d}/b.img firmware/b.img\n",
            d = dir.path().display()
        ),
        dir.path(),
    );
    let vm = Vm::boot(dir.path(), &disk);
    let log = vm.serial_text();
    assert!(log.contains("cannot start slot b"), "{log}");
    assert!(log.contains("running from slot a"), "{log}");
    drop(vm);
    let state = debugfs(&disk, "cat firmware/state\n", dir.path());
    assert!(
        state.contains("active=a") && state.contains("pending=none"),
        "{state}"
    );
}

#[test]
fn a_hung_gateway_is_restarted_by_the_watchdog_and_a_long_stop_is_waited_for() {
    let _lock = qemu_lock();
    let _ = built();
    let dir = TempDir::new("qemu-watchdog");
    let second_port = free_port();
    let config = format!(
        "{}set system watchdog timeout 10s\nset system stop-grace 14s\n",
        test_config(free_port(), second_port)
    );
    let disk = disk_with_config(dir.path(), &config, |_| {});

    let mut vm = Vm::boot(dir.path(), &disk);
    let log = vm.serial_text();
    assert!(log.contains("watchdog: /dev/watchdog armed, 10 s"), "{log}");
    // PID 1 reads the notices once a second: it may hear READY=1 after the greeting.
    vm.expect_console("the gateway is ready", 1);
    // Mail accepted before the hang: its next hop is down, so it stays queued.
    assert!(send(vm.smtp, "bob@example.org", "before the hang"));
    vm.first_login();
    vm.command("system watchdog-test", "Stall the gateway", 1);
    vm.command(
        "yes",
        "The event loop stops; the watchdog should restart the gateway within 10 s.",
        1,
    );
    // PID 1 hears no beat for the timeout, kills the gateway and starts it again; the
    // machine is not reset (with -no-reboot QEMU would exit, and this would fail).
    vm.expect_console("the gateway's event loop has been silent for", 1);
    vm.expect_console("the gateway exited (signal: 9 (SIGKILL))", 1);
    vm.expect_console("the gateway is ready", 2);
    vm.expect_console("login: ", 2);
    vm.wait_smtp_ready();
    let log = vm.serial_text();
    assert_eq!(log.matches("starting as PID 1").count(), 1, "{log}");
    assert!(
        log.contains("1 message(s) recovered from the queue"),
        "{log}"
    );
    let second = Sink::start_on(second_port, Default::default());
    wait_for_subjects(&second, &["before the hang".to_string()], &vm);
    // Fed every second, the hardware watchdog never fired through all this.
    assert!(vm.child.as_mut().unwrap().try_wait().unwrap().is_none());

    // A stop with a session stuck in DATA: the gateway asks for its 14 s grace and 2 s
    // more, and PID 1 waits that long instead of killing it after its own 10 s.
    let mut stuck = TcpStream::connect(("127.0.0.1", vm.smtp)).unwrap();
    stuck
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut replies = BufReader::new(stuck.try_clone().unwrap());
    let mut line = String::new();
    for command in [
        "",
        "EHLO stuck.example\r\n",
        "MAIL FROM:<a@test.example>\r\n",
        "RCPT TO:<carol@example.org>\r\n",
        "DATA\r\n",
    ] {
        stuck.write_all(command.as_bytes()).unwrap();
        // The last line of each reply (EHLO's is several).
        loop {
            line.clear();
            replies.read_line(&mut line).unwrap();
            if line.as_bytes().get(3) != Some(&b'-') {
                break;
            }
        }
    }
    assert!(line.starts_with("354 "), "{line}");
    stuck
        .write_all(b"Subject: never finished\r\n\r\nhalf")
        .unwrap();
    let told = std::thread::spawn(move || {
        let mut line = String::new();
        let _ = replies.read_line(&mut line);
        line
    });
    vm.restart();
    let log = vm.serial_text();
    assert!(log.contains("in progress have 14s to finish"), "{log}");
    assert!(!log.contains("did not stop in"), "{log}");
    let told = told.join().unwrap();
    assert!(told.starts_with("421 4.3.2 "), "{told:?}\n{log}");
}

#[test]
fn the_hardware_watchdog_resets_an_appliance_whose_pid_1_stops_feeding_it() {
    let _lock = qemu_lock();
    let _ = built();
    let dir = TempDir::new("qemu-hardware-watchdog");
    let second_port = free_port();
    let config = format!(
        "{}set system watchdog timeout 10s\n",
        test_config(free_port(), second_port)
    );
    let disk = disk_with_config(dir.path(), &config, |_| {});

    let mut vm = Vm::boot(dir.path(), &disk);
    vm.expect_console("watchdog: /dev/watchdog armed, 10 s", 1);
    vm.expect_console("the gateway is ready", 1);
    // Mail accepted before the reset: its next hop is down, so it stays queued.
    assert!(send(vm.smtp, "bob@example.org", "before the reset"));
    vm.first_login();
    vm.command(
        "system watchdog-test hardware",
        "Stop feeding the hardware watchdog",
        1,
    );
    vm.command("yes", "the appliance should reset within 10 s", 1);
    vm.expect_console("is fed no more", 1);
    // Nobody asks for a restart: the watchdog resets the machine (QEMU, started with
    // -no-reboot, exits at a reset).
    vm.wait_exit();
    let log = vm.serial_text();
    assert!(!log.contains("restart requested"), "{log}");
    assert!(!log.contains("restarting"), "{log}");
    drop(vm);

    // The machine comes up again, and the mail accepted before is still there.
    let vm = Vm::boot(dir.path(), &disk);
    vm.expect_console("1 message(s) recovered from the queue", 1);
    let second = Sink::start_on(second_port, Default::default());
    wait_for_subjects(&second, &["before the reset".to_string()], &vm);
}

#[test]
fn a_gateway_that_hangs_before_it_is_ready_is_killed_and_started_again() {
    let _lock = qemu_lock();
    let _ = built();
    let dir = TempDir::new("qemu-start-hang");
    let config = format!(
        "{}set system watchdog timeout 10s\n",
        test_config(free_port(), free_port())
    );
    // A journal segment that never yields its bytes: a FIFO nobody writes, as a hung
    // disk would be. Recovering the queue blocks on it for ever, before the gateway is
    // ready, so it never beats and never says it progresses.
    let disk = disk_with_config(dir.path(), &config, |tree| {
        let journal = tree.join("state/spool/journal");
        std::fs::create_dir_all(&journal).unwrap();
        let made = Command::new("mkfifo")
            .arg(journal.join("0000000000000001.jnl"))
            .status()
            .unwrap();
        assert!(made.success());
    });

    let vm = Vm::power_on(dir.path(), &disk);
    vm.expect_console("watchdog: /dev/watchdog armed, 10 s", 1);
    // Not the 10 s of a hang once ready: a start is given at least 30 s.
    vm.expect_console("is not ready, with no progress reported", 1);
    let log = vm.serial_text();
    let waited: Option<u64> = log
        .split("the gateway started ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next()?.parse().ok());
    assert!(waited.is_some_and(|s| (30..40).contains(&s)), "{log}");
    assert!(!log.contains("the gateway is ready"), "{log}");
    vm.expect_console("the gateway exited (signal: 9 (SIGKILL))", 1);
    vm.expect_console("starting it again in", 1);
    // A start again, hanging again, killed again; the machine itself is not reset.
    vm.expect_console("is not ready, with no progress reported", 2);
    let log = vm.serial_text();
    assert_eq!(log.matches("starting as PID 1").count(), 1, "{log}");
}
